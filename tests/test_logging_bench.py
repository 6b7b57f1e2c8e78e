"""The logging benchmark still runs every case (a smoke run; timing lives in bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "logging_overhead.py"


def test_quick_logging_benchmark_runs_every_case() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| stdlib, ") == 4
    assert result.stdout.count("| structlog, ") == 6
    assert "processor alone: added cost, ours / merge_contextvars" in result.stdout
