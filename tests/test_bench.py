"""The benchmarks still run (a few seconds each, no timing assertions: timing lives in bench/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .support.postgres_server import PostgresServer

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
    # Five times per event loop (objects, one task at a time, fan-out with the collector on and
    # off, chains), the get case once.
    assert stdout.count("aioreqctx copying_task_factory") == 10
    assert stdout.count("trivial tasks created at once, then gathered") == 4
    assert stdout.count("fan-out, collector on (as servers run)") == 2
    assert stdout.count("aioreqctx.get, 10-level chainmap") == 2
    assert "fails under uvloop" in stdout


# Objects the collector tracks per spawned task: aiotask-context 0.6.1's figures (no factory: 6).
TRACKED_PER_TASK_AT_MOST = {
    "task_factory": 7,
    "copying_task_factory": 7,
    "chainmap_task_factory": 9,
}


def test_each_factory_makes_tasks_that_hold_no_more_tracked_objects_than_aiotask_contexts() -> None:
    """Deterministic: counted with gc.get_objects(), no clock involved. More tracked objects
    per task means more, and longer, collections during a fan-out."""
    rows = table_rows(run_bench("tasks.py", "--objects", "--loop", "asyncio"))
    counts = {name: float(cells[1]) for name, cells in rows.items() if "factory" in name}
    assert float(rows["floor (no factory)"][1]) == 6
    for factory, limit in TRACKED_PER_TASK_AT_MOST.items():
        ours, theirs = counts[f"aioreqctx {factory}"], counts[f"aiotask-context {factory}"]
        assert ours <= limit, (factory, ours)
        assert ours <= theirs, (factory, ours, theirs)


def test_quick_logging_benchmark_runs_every_case() -> None:
    stdout = run_bench("logging_overhead.py")
    assert stdout.count("| stdlib, ") == 4
    assert stdout.count("| structlog, ") == 6
    assert "processor alone: added cost, ours / merge_contextvars" in stdout


needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None or len(os.sched_getaffinity(0)) < 2,
    reason="the HTTP benchmark needs wrk (make pytest installs it) and two cores",
)


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The plain-text table's rows by variant name, split into cells."""
    return {
        cells[0]: cells
        for line in stdout.splitlines()
        if (cells := [cell.strip() for cell in line.split("  ") if cell.strip()])
    }


@needs_wrk
def test_quick_http_benchmark_measures_every_working_variant_and_peer() -> None:
    stdout = run_bench("http_middleware.py", "--together", timeout=240)
    rows = table_rows(stdout)
    peers = (
        "aiohttp-request-id-logging",
        "aiohttp-request-id-logging, no sentry-sdk",
        "opentelemetry aiohttp-server",
        "sentry AioHttpIntegration",
    )
    ours = ("aioreqctx", "aioreqctx setup", "setup+server_timing+events@WARNING+registry")
    for name in (*peers, *ours, "bare again (noise check)"):
        # CPU vs bare, then its IQR and min-max, then the same against the noop middleware.
        assert rows[name][5].endswith("x"), rows[name]
        assert rows[name][8].endswith("x"), rows[name]
    for name in ours:
        assert rows[name][-1] in ("PASS", "FAIL"), rows[name]
    expected_skip = sys.version_info >= (3, 12)  # aiohttp bypasses aiotask-context's factory
    assert ("skipped" in rows["aiotask-context"]) == expected_skip
    assert "The second bare server read" in stdout


@needs_wrk
def test_quick_http_benchmark_serves_the_realistic_handler() -> None:
    """Each server answers the JSON handler (the probe checks the body and the ID header) after
    its log lines, child task and backend call; bare, noop and the chosen variant run."""
    options = ("--together", "--handler", "realistic", "--only", "aioreqctx setup")
    stdout = run_bench("http_middleware.py", *options, timeout=240)
    rows = table_rows(stdout)
    assert set(rows) >= {"bare", "noop middleware", "aioreqctx setup"}
    assert "skipped" not in stdout
    assert rows["aioreqctx setup"][8].endswith("x")
    assert "realistic handler" in stdout


OLD_LAYOUT = Path(f"{sys.prefix}-old-layout")  # bench/layouts.py's default --old


@needs_wrk
@pytest.mark.skipif(
    not (OLD_LAYOUT / ".installed").exists(),
    reason=f"bench/layouts.py needs the old layout: make old-layout builds it ({OLD_LAYOUT.name})",
)
def test_quick_layouts_benchmark_compares_both_layouts_on_every_case() -> None:
    stdout = run_bench("layouts.py", timeout=240)
    rows = table_rows(stdout)
    ours = ("aioreqctx", "aioreqctx setup", "aioreqctx task_factory", "aioreqctx.get")
    for name in (*ours, "aioreqctx copying_task_factory", "aioreqctx.set"):
        assert rows[name][3].endswith("x"), rows[name]  # new/old, median over rounds
        assert rows[name][-1] in ("PASS", "FAIL"), rows[name]
    for name in ("bare", "floor (no factory)", "ContextVar.get (raw)"):
        assert rows[name][-1] == "noise check", rows[name]
    chainmap_rows = [line for line in stdout.splitlines() if line.startswith("aioreqctx chainmap")]
    assert len(chainmap_rows) == 2  # one at a time, fan-out
    assert f"aioreqctx from {OLD_LAYOUT.resolve()}/venv/" in stdout
    assert "No regression (every aioreqctx row's median new/old <= 1.05x): " in stdout


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="server and driver need two cores")
def test_quick_memory_benchmark_samples_the_servers_rss() -> None:
    stdout = run_bench("memory.py", timeout=240)
    readings = [cells for name, cells in table_rows(stdout).items() if name.isdigit()]
    assert [int(cells[0]) for cells in readings] == [0, 500, 1000, 1500, 2000]
    assert all(float(cells[1]) > 10 for cells in readings)  # MB: a Python server's RSS
    assert "After the 500 warm-up requests" in stdout


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


def test_quick_middleware_floor_takes_every_step_out() -> None:
    stdout = run_bench("middleware_floor.py")
    rows = table_rows(stdout)
    steps = [name for name in rows if name.startswith("the same without")]
    assert len(steps) == 8
    assert all(len(rows[name]) == 4 for name in steps)  # with the step's own cost
    assert {"request_id_middleware", "setup(app)"} <= set(rows)
    timed_alone = [line.split()[-1] for line in stdout.splitlines() if "new_request_id()" in line]
    assert timed_alone[-1].lstrip("-").isdigit()  # the per-operation table's ns


def test_quick_detach_benchmark_runs_every_case() -> None:
    stdout = run_bench("detach.py")
    assert stdout.count("detached()") == 4  # two loops, each a row and a ratio
    assert "ratio capture() + activate() / scope()" in stdout


def test_quick_log_buffer_benchmark_runs_every_case() -> None:
    stdout = run_bench("log_buffer.py")
    assert stdout.count("| stdlib, ") == 5
    assert stdout.count("| structlog, ") == 4


def test_quick_asyncpg_benchmark_measures_every_variant(postgres_server: PostgresServer) -> None:
    """The fixture only says whether PostgreSQL is here (skips, or fails under CI, if not)."""
    stdout = run_bench("asyncpg_queries.py")
    rows = table_rows(stdout)
    for variant in ("plain asyncpg", "with QueryAccounting", "with the request ID in a comment"):
        assert float(rows[variant][-1]) > 0, stdout
