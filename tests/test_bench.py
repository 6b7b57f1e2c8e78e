"""The benchmarks still run (a few seconds each, no timing assertions: timing lives in bench/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).parent.parent / "bench"


def run_bench(script: str, *options: str, timeout: float = 120) -> str:
    """Run ``bench/<script> --quick OPTIONS``; its stdout, after checking it exited 0."""
    result = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), "--quick", *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_quick_benchmark_runs_every_case_on_both_loops() -> None:
    stdout = run_bench("tasks.py")
    # Three times per event loop (one task at a time, fan-out, chains), the get case once.
    assert stdout.count("aioreqctx copying_task_factory") == 6
    assert stdout.count("trivial tasks created at once, then gathered") == 2
    assert stdout.count("aioreqctx.get, 10-level chainmap") == 2
    assert "fails under uvloop" in stdout


def test_quick_logging_benchmark_runs_every_case() -> None:
    stdout = run_bench("logging_overhead.py")
    assert stdout.count("| stdlib, ") == 4
    assert stdout.count("| structlog, ") == 6
    assert "processor alone: added cost, ours / merge_contextvars" in stdout


@pytest.mark.skipif(
    shutil.which("wrk") is None or len(os.sched_getaffinity(0)) < 2,
    reason="the HTTP benchmark needs wrk (make bench-http installs it) and two cores",
)
def test_quick_http_benchmark_measures_every_working_variant() -> None:
    stdout = run_bench("http_middleware.py", "--together", timeout=240)
    rows = {line.split("  ")[0]: line for line in stdout.splitlines()}
    assert "x" in rows["aioreqctx"]
    assert "x" in rows["aioreqctx setup+server_timing"]
    expected_skip = sys.version_info >= (3, 12)  # aiohttp bypasses aiotask-context's factory
    assert ("skipped" in rows["aiotask-context"]) == expected_skip


def test_quick_jobs_benchmark_measures_every_queue_both_ways() -> None:
    stdout = run_bench("jobs.py")
    for queue in ("arq", "taskiq", "celery"):
        for side in ("enqueue", "worker"):
            assert f"\n{queue} {side} " in stdout
        assert f"\ntaskiq do-nothing middleware {side} " in stdout
    assert "target: ratio <= 1.03" in stdout
    for queue in ("arq", "taskiq"):
        for side in ("enqueue", "worker"):
            assert f"\n{queue} {side} " in stdout.split("What aioreqctx's own code adds")[1]


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("one", "chainmap_task_factory"),
        ("fan-out", "copying_task_factory"),
        ("call", "aioreqctx.set"),
    ],
)
def test_every_floors_case_runs_outside_valgrind(kind: str, name: str) -> None:
    """bench/floors.py runs each case under callgrind; the case itself must run as plain Python."""
    result = subprocess.run(
        [sys.executable, str(BENCH_DIR / "floors.py"), "--case", kind, name, "50"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
