"""Pool threads that inherit the context they were started in, as on free-threaded 3.14.

Such a build starts ``threading.Thread`` with a copy of the starter's context (and CPython
plans to make that the default, python/cpython#154549): a pool thread first started during
request A would show A to every later plain ``run_in_executor`` job. 3.14t cannot run here, so
``inheriting_threads`` makes threads start that way.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx import keys

from .conftest import LoopFactory
from .support.http_helpers import get_request, raw_exchange, serving


@pytest.fixture
def inheriting_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads run in a copy of the context that was current when they were started."""
    start, run = threading.Thread.start, threading.Thread.run

    def start_inheriting(thread: threading.Thread) -> None:
        thread.inherited = contextvars.copy_context()  # type: ignore[attr-defined]
        start(thread)

    def run_inherited(thread: threading.Thread) -> None:
        thread.inherited.run(run, thread)  # type: ignore[attr-defined]

    monkeypatch.setattr(threading.Thread, "start", start_inheriting)
    monkeypatch.setattr(threading.Thread, "run", run_inherited)


def serve(default_executor: str) -> web.Application:
    plain_pool = ThreadPoolExecutor(max_workers=1)

    async def handler(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        if default_executor == "a plain ThreadPoolExecutor":  # in place of setup's
            loop.set_default_executor(plain_pool)
        plain = await loop.run_in_executor(None, context.get, keys.REQUEST_ID)
        carried = await context.run_in_executor(None, context.get, keys.REQUEST_ID)
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        return web.json_response({"plain": plain, "carried": carried, "thread": name})

    app = web.Application()
    context.setup(app, task_factory=context.copying_task_factory)
    app.router.add_get("/", handler)
    return app


@pytest.mark.usefixtures("inheriting_threads")
@pytest.mark.parametrize("default_executor", ["setup's", "a plain ThreadPoolExecutor"])
def test_a_plain_executor_job_in_b_never_sees_a_on_a_thread_a_started(
    loop_factory: LoopFactory, default_executor: str
) -> None:
    async def main() -> list[Any]:
        async with serving(serve(default_executor)) as port:
            seen = []
            for request_id in ("req-A", "req-B"):
                header = f"X-Request-ID: {request_id}".encode()
                (reply,) = await raw_exchange(port, get_request("/", header))
                seen.append(json.loads(reply.body))
            return seen

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        a, b = runner.run(main())
    assert (a["carried"], b["carried"]) == ("req-A", "req-B")
    if default_executor == "setup's":
        assert (a["plain"], b["plain"]) == (None, None)
        assert a["thread"].startswith("aioreqctx")
    else:  # the leak the simulation reproduces: B's plain job sees A on A's thread
        assert b["plain"] == "req-A"


@pytest.mark.usefixtures("inheriting_threads")
def test_loop_factory_loops_start_pool_threads_in_an_empty_context() -> None:
    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        with context.scope(request_id="req-A"):
            first = await loop.run_in_executor(None, context.get, keys.REQUEST_ID)
        later = await loop.run_in_executor(None, context.get, keys.REQUEST_ID)
        name = await loop.run_in_executor(None, lambda: threading.current_thread().name)
        return [first, later, name.startswith("aioreqctx")]

    with asyncio.Runner(loop_factory=context.loop_factory()) as runner:
        assert runner.run(main()) == [None, None, True]
