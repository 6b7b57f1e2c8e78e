"""elapsed_ms and timed_operation outside aiohttp: scopes, decorators, the Server-Timing text."""

from __future__ import annotations

import asyncio
from time import perf_counter

import aioreqctx as context
from aioreqctx.timing import server_timing_header


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
