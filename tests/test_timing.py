"""elapsed_ms and timed_operation outside aiohttp: scopes, decorators, the Server-Timing text."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import AsyncIterator
from time import perf_counter
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx import keys
from aioreqctx._core.timing import (
    ENTRY_LIMIT,
    SERVER_TIMING_ENTRIES,
    OperationTimings,
    server_timing_header,
)

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import capture


def test_timed_operation_records_into_the_current_context_in_every_form() -> None:
    timings = context.OperationTimings()

    @context.timed_operation("sync call")
    def work() -> int:
        return 1

    @context.timed_operation("async call")
    async def async_work() -> int:
        await asyncio.sleep(0.01)
        return 2

    async def main() -> list[int]:
        async with context.timed_operation("block") as block:
            await asyncio.sleep(0)
        assert block.last_ms is not None
        return [work(), await async_work()]

    with context.scope(
        {context.keys.START_MONOTONIC: perf_counter(), context.keys.OPERATIONS: timings}
    ):
        assert asyncio.run(main()) == [1, 2]
        elapsed = context.elapsed_ms()
    assert [name for name, _ in timings.entries()] == ["block", "sync call", "async call"]
    assert dict(timings.entries())["async call"] >= 9.0
    assert elapsed is not None
    assert elapsed >= dict(timings.entries())["async call"]


def test_outside_a_request_timing_only_measures() -> None:
    assert context.elapsed_ms() is None
    with context.timed_operation("alone") as alone:
        pass
    assert alone.last_ms is not None


def test_server_timing_names_become_tokens() -> None:
    header = server_timing_header(12.345, [("db query", 1.0), ('"x";y', 2.0), ("", 0.5)])
    assert header == "total;dur=12.3, db_query;dur=1.0, _x__y;dur=2.0, _;dur=0.5"


def test_the_current_operation_is_the_latest_still_running() -> None:
    timings = context.OperationTimings()
    with context.scope({context.keys.OPERATIONS: timings}):
        assert timings.current_operation() is None
        with context.timed_operation("request"):
            with context.timed_operation("db"):
                assert timings.current_operation() == "db"
            assert timings.current_operation() == "request"
            with pytest.raises(KeyError), context.timed_operation("cache"):
                raise KeyError("miss")
            assert timings.current_operation() == "request"
        assert timings.current_operation() is None
    assert [name for name, _ in timings.entries()] == ["db", "cache", "request"]


def test_counters_add_up() -> None:
    timings = context.OperationTimings()
    timings.increment("queries")
    timings.increment("queries", 2)
    timings.increment("bytes", 0.5)
    assert timings.counters() == {"queries": 3, "bytes": 0.5}


def test_each_operation_is_a_debug_event_only_when_debug_is_on() -> None:
    with (
        capture("aioreqctx.operations", level=logging.INFO) as quiet,
        context.timed_operation("unseen"),
    ):
        pass
    with (
        capture("aioreqctx.operations") as captured,
        context.scope({context.REQUEST_ID: "r"}),
        pytest.raises(ValueError, match="x"),
        context.timed_operation("parse"),
    ):
        raise ValueError("x")
    assert quiet.records == []
    (fields,) = captured.fields("operation_finished")
    assert fields["request_id"] == "r"
    assert fields["name"] == "parse"
    assert fields["error"] == "ValueError"
    assert isinstance(fields["duration_ms"], float)


def test_server_timing_stays_small_with_a_thousand_operations(loop_factory: LoopFactory) -> None:
    """1,000 timed operations under 40 names (one of them very long): aiohttp's own client,
    which refuses a header over 8190 bytes, still reads the response."""
    names = [f"query-{n}" for n in range(39)] + ["x" * 5000]

    async def handler(request: web.Request) -> web.Response:
        for number in range(1000):
            with context.timed_operation(names[number % len(names)]):
                pass
        return web.Response(text="ok")

    async def main() -> str:
        app = web.Application()
        context.setup(app, server_timing=True)
        app.router.add_get("/", handler)
        async with (
            serving(app) as port,
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert response.status == 200
            return response.headers["Server-Timing"]

    header = run(loop_factory, main)
    assert len(header) < 2048
    metrics = [part.split(";")[0] for part in header.split(", ")]
    assert metrics[0] == "total"
    assert metrics[-1] == "other"
    assert len(metrics) == 1 + SERVER_TIMING_ENTRIES
    assert len(set(metrics)) == len(metrics)  # repeats merged into one metric per name
    assert header.endswith(f'desc="{40 - (SERVER_TIMING_ENTRIES - 1)} more"')


def test_repeats_are_summed_under_one_name() -> None:
    header = server_timing_header(10.0, [("db", 1.0), ("render", 0.5), ("db", 2.25)])
    assert header == "total;dur=10.0, db;dur=3.2, render;dur=0.5"


def test_a_long_running_job_keeps_a_bounded_list_of_operations() -> None:
    async def main() -> tuple[int, int]:
        async with context.unit_of_work(name="forever") as job:
            for _ in range(ENTRY_LIMIT + 500):
                with context.timed_operation("tick"):
                    pass
            timings = job.timings
            assert timings is not None
            return len(timings.entries()), timings.dropped

    assert asyncio.run(main()) == (ENTRY_LIMIT, 500)


def test_one_shared_instance_times_concurrent_requests_apart(loop_factory: LoopFactory) -> None:
    """A module-level ``DB = timed_operation("db")`` entered by two requests at once: each
    request's Server-Timing shows its own duration, none the other's."""
    db = context.timed_operation("db")
    slow_inside = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        async with db:
            slow_inside.set()
            await asyncio.sleep(0.3)
        return web.Response(text="slow")

    async def fast(request: web.Request) -> web.Response:
        await slow_inside.wait()
        with db:
            pass
        return web.Response(text="fast")

    app = web.Application()
    context.setup(app, server_timing=True)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fast", fast)

    def db_ms(header: str) -> float:
        (entry,) = [part for part in header.split(", ") if part.startswith("db;")]
        return float(entry.partition("dur=")[2])

    async def main() -> tuple[str, str]:
        async with serving(app) as port, aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{port}"

            async def timing_of(path: str) -> str:
                async with session.get(base + path) as response:
                    return response.headers["Server-Timing"]

            slow_header, fast_header = await asyncio.gather(timing_of("/slow"), timing_of("/fast"))
            return slow_header, fast_header

    slow_header, fast_header = run(loop_factory, main)
    assert db_ms(slow_header) >= 250.0
    assert db_ms(fast_header) < 100.0
    assert db.last_ms is not None


def test_a_shared_operation_closed_by_the_loop_in_an_abandoned_generator_holds_nothing(
    loop_factory: LoopFactory,
) -> None:
    """200 requests each abandon an async generator mid-stream inside a shared operation; the
    loop finalises each in a task of its own, which closes the right use."""
    db = context.timed_operation("db")
    errors: list[dict[str, Any]] = []

    async def rows() -> AsyncIterator[int]:
        async with db:
            yield 1
            yield 2

    async def request() -> OperationTimings:
        async with context.scope({keys.OPERATIONS: OperationTimings()}) as mapping:
            stream = rows()
            await anext(stream)  # ...and the stream is abandoned
            del stream  # freed here: the loop's finaliser schedules its aclose()
            timings: OperationTimings = mapping[keys.OPERATIONS]
            return timings

    async def main() -> tuple[list[weakref.ref[asyncio.Task[Any]]], list[OperationTimings]]:
        asyncio.get_running_loop().set_exception_handler(lambda _, error: errors.append(error))
        tasks = [asyncio.create_task(request()) for _ in range(200)]
        timings = [await task for task in tasks]
        for _ in range(5):  # the loop's aclose() tasks run
            await asyncio.sleep(0)
        return [weakref.ref(task) for task in tasks], timings

    refs, timings = run(loop_factory, main)
    gc.collect()
    assert errors == []
    assert all(ref() is None for ref in refs)  # no task (no request) kept alive
    assert all(len(entries.entries()) == 1 for entries in timings)  # each use ended, in its own
    assert db.last_ms is not None


def test_a_shared_operation_closed_in_another_task_ends_the_use_of_the_task_that_opened_it(
    loop_factory: LoopFactory,
) -> None:
    """A pytest-asyncio fixture: set up in one task, torn down in another."""
    db = context.timed_operation("db")

    async def set_up(mapping: dict[str, Any]) -> None:
        with context.scope(mapping):
            db.__enter__()

    async def main() -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        fixture, other = (
            {keys.OPERATIONS: OperationTimings()},
            {keys.OPERATIONS: OperationTimings()},
        )
        await asyncio.create_task(set_up(fixture))
        with context.scope(other):
            with db:  # a use of this task's own, opened and closed here
                pass
            db.__exit__(None, None, None)  # the fixture's teardown, in another task
        return fixture[keys.OPERATIONS].entries(), other[keys.OPERATIONS].entries()

    fixture_entries, other_entries = run(loop_factory, main)
    assert [name for name, _ in fixture_entries] == ["db"]
    assert [name for name, _ in other_entries] == ["db"]
    with pytest.raises(RuntimeError, match="closed more often than opened"):
        db.__exit__(None, None, None)
