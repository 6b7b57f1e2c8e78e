"""Where is request X stuck? The await chain in the in-flight JSON, on every version's path."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from types import FrameType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx._core import await_chain as chains

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import capture

STUCK_SECONDS = 1.0
"""Long enough to be looked at, short enough to wait out (a cancelled request may linger)."""


async def inner_wait(gate: asyncio.Event) -> None:
    gate.set()
    await asyncio.sleep(STUCK_SECONDS)


async def outer_call(gate: asyncio.Event) -> None:
    await inner_wait(gate)


def stuck_chain(loop_factory: LoopFactory, registry: context.InFlightRegistry) -> dict[str, Any]:
    """The ``?chains=1`` JSON of a server with one request stuck in ``outer_call``."""

    async def main() -> dict[str, Any]:
        gate = asyncio.Event()

        async def stuck(request: web.Request) -> web.Response:
            await outer_call(gate)
            return web.Response()

        app = web.Application()
        context.setup(app, observers=(registry,))
        app.router.add_get("/stuck/{n}", stuck)
        app.router.add_get("/_inflight", registry.handler)
        async with serving(app) as port, aiohttp.ClientSession() as session:
            pending = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/stuck/1"))
            await gate.wait()
            plain = await session.get(f"http://127.0.0.1:{port}/_inflight")
            assert "await_chain" not in (await plain.json())["requests"][0]  # only when asked
            async with session.get(f"http://127.0.0.1:{port}/_inflight?chains=1") as response:
                page: dict[str, Any] = json.loads(await response.text())
            (await pending).close()  # its sleep over, the request ends
            assert registry.count() == 0
            return page

    with capture("aiohttp"), capture("aioreqctx.requests"):
        page: dict[str, Any] = run(loop_factory, main)
        return page


def stuck_entry(page: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [entry for entry in page["requests"] if entry["path"] == "/stuck/1"]
    found: dict[str, Any] = entry
    return found


def functions(frames: list[str]) -> list[str]:
    return [frame.rsplit(" in ", 1)[1] for frame in frames]


def test_a_request_stuck_in_two_nested_calls_shows_both_frames(loop_factory: LoopFactory) -> None:
    entry = stuck_entry(stuck_chain(loop_factory, context.InFlightRegistry()))
    assert entry["route"] == "/stuck/{n}"
    names = functions(entry["await_chain"]["frames"])
    # The handler, then both nested calls, then asyncio.sleep, in that order at the bottom.
    assert names[-4:] == ["stuck", "outer_call", "inner_wait", "sleep"]
    assert any(f"{__file__}:" in frame for frame in entry["await_chain"]["frames"])


def test_task_names_carry_the_request_id_when_asked(loop_factory: LoopFactory) -> None:
    entry = stuck_entry(stuck_chain(loop_factory, context.InFlightRegistry(name_tasks=True)))
    assert entry["await_chain"]["task"] == f"req:{entry['request_id']}"


def test_the_stale_warning_carries_the_chain() -> None:
    registry = context.InFlightRegistry(max_age_seconds=0.05)

    async def main() -> None:
        gate = asyncio.Event()

        async def job() -> None:
            async with context.unit_of_work(name="stuck-job", registry=registry):
                await outer_call(gate)

        task = asyncio.create_task(job())
        await gate.wait()
        await asyncio.sleep(0.1)
        assert registry.count() == 0  # dropped, and logged
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with capture("aioreqctx.inflight") as captured, capture("aioreqctx.requests"):
        asyncio.run(main())
    (stale,) = captured.fields("inflight_stale")
    assert captured.records[0].levelno == logging.WARNING
    chain: Any = stale["await_chain"]
    assert functions(chain["frames"])[-3:] == ["outer_call", "inner_wait", "sleep"]


# 3.14 cannot run here: a stand-in with the documented shape of asyncio.capture_call_graph.
@dataclass(frozen=True)
class FrameCallGraphEntry:
    frame: FrameType


@dataclass(frozen=True)
class FutureCallGraph:
    future: asyncio.Future[Any]
    call_stack: tuple[FrameCallGraphEntry, ...]
    awaited_by: tuple[FutureCallGraph, ...]


def capture_call_graph(future: asyncio.Future[Any]) -> FutureCallGraph | None:
    """As 3.14 documents it for a task that is not the running one: its coroutines' frames,
    innermost first, and the graphs of the tasks that await it."""
    coro: Any = future.get_coro() if isinstance(future, asyncio.Task) else None
    stack = []
    while hasattr(coro, "cr_await"):
        stack.append(FrameCallGraphEntry(coro.cr_frame))
        coro = coro.cr_await
    awaited_by = tuple(
        FutureCallGraph(parent, (), ()) for parent in getattr(future, "awaited_by_for_test", ())
    )
    return FutureCallGraph(future, tuple(reversed(stack)), awaited_by)


@pytest.fixture
def python_314_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chains, "_capture", capture_call_graph)


@pytest.mark.usefixtures("python_314_graph")
def test_on_3_14_the_chain_comes_from_capture_call_graph() -> None:
    async def main() -> dict[str, Any]:
        gate = asyncio.Event()
        child = asyncio.create_task(outer_call(gate), name="child")
        parent = asyncio.create_task(asyncio.sleep(30), name="parent")
        child.awaited_by_for_test = (parent,)  # type: ignore[attr-defined]
        await gate.wait()
        chain = chains.await_chain(child)
        for task in (child, parent):
            task.cancel()
        await asyncio.gather(child, parent, return_exceptions=True)
        return chain

    chain = asyncio.run(main())
    assert functions(chain["frames"]) == ["outer_call", "inner_wait", "sleep"]  # outermost first
    assert chain["awaited_by"] == ["parent"]
