"""Executor threads see the caller's context and leave nothing behind in the worker."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aioreqctx as context

from .conftest import LoopFactory, run


def _read_then_write(tag: str) -> tuple[Any, Any]:
    seen = context.get("X-Request-ID"), context.get("thread-note")
    context.set("thread-note", tag)
    return seen


def test_run_in_executor_carries_the_request_and_leaves_no_residue(
    loop_factory: LoopFactory,
) -> None:
    async def request(rid: str, pool: ThreadPoolExecutor) -> tuple[Any, Any]:
        async with context.scope({"X-Request-ID": rid}):
            return await context.run_in_executor(pool, _read_then_write, rid)

    async def main() -> list[tuple[Any, Any]]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return [await request("r1", pool), await request("r2", pool)]

    # The second job ran on the same worker thread, and does not see the first one's note.
    assert run(loop_factory, main) == [("r1", None), ("r2", None)]


def test_plain_run_in_executor_loses_the_context_which_is_why_the_helper_exists(
    loop_factory: LoopFactory,
) -> None:
    async def main() -> Any:
        async with context.scope({"X-Request-ID": "r1"}):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, context.get, "X-Request-ID")

    assert run(loop_factory, main) is None


def test_bind_context_allows_concurrent_calls_that_write_into_the_callers_mapping() -> None:
    with context.scope({"X-Request-ID": "batch"}) as batch:
        work = context.bind_context(_read_then_write)
    barrier = threading.Barrier(4)

    def job(tag: str) -> tuple[Any, Any]:
        barrier.wait(timeout=5)
        return work(tag)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(job, ["a", "b", "c", "d"]))
    assert [rid for rid, _ in results] == ["batch"] * 4
    assert batch["thread-note"] in {"a", "b", "c", "d"}
    assert context.get("X-Request-ID") is None
