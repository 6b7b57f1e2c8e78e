"""The benchmark still runs (a few seconds, no timing assertions: timing lives in bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "tasks.py"


def test_quick_benchmark_runs_every_case_on_both_loops() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Twice per event loop (one task at a time, chains), and the get case once per loop.
    assert result.stdout.count("aioreqctx copying_task_factory") == 4
    assert result.stdout.count("aioreqctx.get, 10-level chainmap") == 2
    assert "fails under uvloop" in result.stdout
