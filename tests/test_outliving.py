"""``setup(app, warn_outliving_tasks=...)``: one warning per coroutine function for a task that
outlives its request; none for detached or start-up tasks; bounded memory."""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from typing import Any

import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx._core.outliving import OutlivingTaskDetector

from .conftest import FACTORIES, LoopFactory, run
from .support.http_helpers import get_request, raw_exchange, serving
from .support.log_capture import capture


async def leaked_poller() -> None:
    """Started plainly by a request: keeps the request's context."""
    context.set("owns", "a mapping")  # 3.11 reads only a task that owns a mapping
    await asyncio.Event().wait()


async def detached_poller() -> None:
    context.set("owns", "a mapping")
    await asyncio.Event().wait()


async def handed_off_item(captured: context.Captured) -> None:
    async with captured.activate():  # the request's ID on purpose, for as long as it takes
        await asyncio.Event().wait()


async def start_up_poller() -> None:
    context.set("owns", "a mapping")
    await asyncio.Event().wait()


@pytest.mark.parametrize("factory", [None, *sorted(FACTORIES)])
def test_one_warning_for_a_task_outliving_its_request_none_for_detached_start_up_or_handed_off(
    loop_factory: LoopFactory, factory: str | None
) -> None:
    tasks: list[asyncio.Task[Any]] = []

    async def handler(request: web.Request) -> web.Response:
        tasks.append(asyncio.create_task(leaked_poller()))
        tasks.append(context.detached(detached_poller()))
        tasks.append(context.detached(handed_off_item(context.capture())))
        return web.Response(text="ok")

    async def main() -> None:
        tasks.append(asyncio.create_task(start_up_poller()))
        app = web.Application()
        context.setup(app, warn_outliving_tasks=0.2)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            for request_id in ("req-A", "req-B"):
                await raw_exchange(port, get_request("/", f"X-Request-ID: {request_id}".encode()))
            await asyncio.sleep(0.7)
        for task in tasks:
            task.cancel()

    with capture("aioreqctx", logging.WARNING) as logged:
        run(loop_factory, main, None if factory is None else FACTORIES[factory])
    assert len(logged.records) == 1, logged.text()
    message = logged.records[0].getMessage()
    assert "leaked_poller" in message
    assert "after the request req-" in message
    assert f"{__file__}:{leaked_poller.__code__.co_firstlineno}" in message
    assert "aioreqctx.detached" in message


def test_a_task_of_a_request_still_in_flight_is_not_reported(loop_factory: LoopFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        task = asyncio.create_task(leaked_poller())
        await asyncio.sleep(0.5)  # the request outlasts the threshold, its task with it
        task.cancel()
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        context.setup(app, warn_outliving_tasks=0.1)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            await raw_exchange(port, get_request("/"))

    with capture("aioreqctx", logging.WARNING) as logged:
        run(loop_factory, main, context.copying_task_factory)
    assert logged.records == []


@pytest.mark.parametrize("bad", [0, -1, True, "30", float("nan")])
def test_a_bad_threshold_is_refused_by_name(bad: Any) -> None:
    with pytest.raises(context.OptionError, match="warn_outliving_tasks must be a number"):
        context.setup(web.Application(), warn_outliving_tasks=bad)


def test_memory_stays_flat_over_100_000_requests() -> None:
    """The sweep itself, driven directly: 1,000 tasks carry the context of a new finished
    request at each of 100 sweeps (as a busy server's short-lived tasks would)."""
    detector = OutlivingTaskDetector(3600, ())

    async def main() -> tuple[list[int], int]:
        tasks = [asyncio.create_task(asyncio.Event().wait()) for _ in range(1000)]
        kept, sizes = [], []
        for round_number in range(100):
            for n, task in enumerate(tasks):
                task.context = {context.REQUEST_ID: f"r{round_number}-{n}"}  # type: ignore[attr-defined]
            detector.sweep(tasks, float(round_number))
            kept.append(len(detector._finished))
            if round_number in (10, 99):
                gc.collect()
                sizes.append(tracemalloc.get_traced_memory()[0])
        for task in tasks:
            task.cancel()
        return kept, sizes[1] - sizes[0]

    tracemalloc.start()
    try:
        kept, growth = run(asyncio.new_event_loop, main)
    finally:
        tracemalloc.stop()
    assert set(kept) == {1000}
    assert growth < 64 * 1024
