"""The benchmark still runs (a few seconds, no timing assertions: timing lives in bench/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench" / "tasks.py"
HTTP_BENCH = BENCH.with_name("http_middleware.py")


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


@pytest.mark.skipif(
    shutil.which("wrk") is None or len(os.sched_getaffinity(0)) < 2,
    reason="the HTTP benchmark needs wrk (make bench-http installs it) and two cores",
)
def test_quick_http_benchmark_measures_every_working_variant() -> None:
    result = subprocess.run(
        [sys.executable, str(HTTP_BENCH), "--quick", "--together"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split("  ")[0]: line for line in result.stdout.splitlines()}
    assert "x" in rows["aioreqctx"]
    assert "x" in rows["aioreqctx setup+server_timing"]
    expected_skip = sys.version_info >= (3, 12)  # aiohttp bypasses aiotask-context's factory
    assert ("skipped" in rows["aiotask-context"]) == expected_skip
