"""elapsed_ms and timed_operation outside aiohttp: scopes, decorators, the Server-Timing text."""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter

import pytest

import aioreqctx as context
from aioreqctx.timing import server_timing_header

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

    with context.scope({context.START_MONOTONIC: perf_counter(), context.OPERATIONS: timings}):
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
    with context.scope({context.OPERATIONS: timings}):
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
