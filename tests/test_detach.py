"""Work that outlives its request: ``detached()``, ``detach()``, ``capture()``/``activate()``.

A real aiohttp server on 127.0.0.1, on asyncio and uvloop, with every factory (eager ones too
where the Python has them) and with none.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from aiohttp import web

import aioreqctx as context
from aioreqctx import keys
from aioreqctx._core.factories import EAGER_TASKS_SUPPORTED

from .conftest import FACTORIES, LoopFactory, run
from .support.http_helpers import get_request, raw_exchange, serving
from .support.log_capture import ListHandler, attached

CHOICES: dict[str, context.TaskFactory | None] = {"none": None, **FACTORIES}
if EAGER_TASKS_SUPPORTED:
    CHOICES.update(
        {f"{mode}-eager": context.task_factory_for(mode, eager=True) for mode in ("share", "copy")}
    )
START = ["detach", "detached"]


def recording_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, /, **kwargs: Any
) -> asyncio.Task[Any]:
    """Another library's factory: it must still build detached tasks (aioreqctx's own plain
    factories are skipped, as their tasks would be the same)."""
    given = {key: value for key, value in kwargs.items() if value is not None}
    task = asyncio.Task(coro, loop=loop, **given)
    task.built_by = "recording_factory"  # type: ignore[attr-defined]
    return task


CHOICES["another library's"] = recording_factory

log = logging.getLogger("tests.detach")


def request_with_id(request_id: str, path: str = "/") -> bytes:
    return get_request(path, f"X-Request-ID: {request_id}".encode())


@contextmanager
def logged_lines() -> Iterator[ListHandler]:
    """``tests.detach``'s records, with the request's fields as attributes."""
    handler = ListHandler()
    handler.addFilter(context.RequestContextFilter())
    with attached("tests.detach", handler):
        yield handler


def fields_of(handler: ListHandler, message: str) -> list[tuple[Any, Any]]:
    return [
        (record.request_id, getattr(record, "origin_request_id", None))  # type: ignore[attr-defined]
        for record in handler.records
        if record.getMessage().startswith(message)
    ]


@dataclass
class LazyWorker:
    """A queue consumer started lazily by the first request, as client libraries do."""

    start: str
    queue: asyncio.Queue[tuple[context.Captured, asyncio.Future[Any]]] = field(
        default_factory=asyncio.Queue
    )
    task: asyncio.Task[None] | None = None
    leaks_seen_by_worker: list[Any] = field(default_factory=list)

    def ensure_started(self) -> None:
        if self.task is not None:
            return
        if self.start == "detached":
            self.task = context.detached(self.run(), name="worker")
        else:
            with context.detach():
                self.task = asyncio.create_task(self.run(), name="worker")

    async def run(self) -> None:
        log.info("worker started (app=%s)", context.get("app"))
        context.set("worker_wrote", "yes")
        while True:
            captured, done = await self.queue.get()
            async with captured.activate():
                log.info("item")
                await asyncio.sleep(0)
                in_child = await asyncio.create_task(asyncio.sleep(0, context.get(keys.REQUEST_ID)))
                context.set("item_wrote", "yes")
                done.set_result((context.get(keys.REQUEST_ID), in_child))
            self.leaks_seen_by_worker.append(context.get("item_wrote"))
            log.info("worker idle")

    async def handle(self, request: web.Request) -> web.Response:
        self.ensure_started()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((context.capture(), done))
        seen, in_child = await done
        mapping = request[context.web.CONTEXT_MAPPING]
        return web.json_response(
            {
                "seen": seen,
                "in_child": in_child,
                "leaked": [context.get("worker_wrote"), context.get("item_wrote")],
                "in_mapping": sorted(set(mapping) & {"worker_wrote", "item_wrote"}),
            }
        )


def serve_lazy_worker(worker: LazyWorker) -> web.Application:
    app = web.Application()
    context.setup(app)
    app.router.add_get("/", worker.handle)
    return app


@pytest.mark.parametrize("factory", sorted(CHOICES))
@pytest.mark.parametrize("start", START)
def test_a_lazy_worker_handles_each_item_under_its_enqueuers_id(
    loop_factory: LoopFactory, factory: str, start: str
) -> None:
    async def main() -> tuple[list[Any], LazyWorker]:
        context.set("app", "demo")  # a start-up value
        worker = LazyWorker(start)
        async with serving(serve_lazy_worker(worker)) as port:
            replies = []
            for request_id in ("req-A", "req-B", "req-C"):
                replies += await raw_exchange(port, request_with_id(request_id))
            assert worker.task is not None
            worker.task.cancel()
        return [json.loads(reply.body) for reply in replies], worker

    with logged_lines() as lines:
        replies, worker = run(loop_factory, main, CHOICES[factory])
    assert [(reply["seen"], reply["in_child"]) for reply in replies] == [
        ("req-A", "req-A"),
        ("req-B", "req-B"),
        ("req-C", "req-C"),
    ]
    assert [(reply["leaked"], reply["in_mapping"]) for reply in replies] == [([None, None], [])] * 3
    assert fields_of(lines, "item") == [("req-A", None), ("req-B", None), ("req-C", None)]
    assert lines.lines[0] == "worker started (app=demo)"
    assert fields_of(lines, "worker") == [("-", "req-A")] * 4
    assert worker.leaks_seen_by_worker == [None] * 3


@pytest.mark.parametrize("factory", ["none", "task_factory"])
def test_200_concurrent_requests_queueing_items_see_no_cross_talk(
    loop_factory: LoopFactory, factory: str
) -> None:
    async def main() -> list[Any]:
        worker = LazyWorker("detached")
        async with serving(serve_lazy_worker(worker)) as port:
            ids = [f"req-{n}" for n in range(200)]
            replies = await asyncio.gather(
                *(raw_exchange(port, request_with_id(request_id)) for request_id in ids)
            )
            assert worker.task is not None
            worker.task.cancel()
        return [(i, json.loads(r[0].body)) for i, r in zip(ids, replies, strict=True)]

    with logged_lines() as lines:
        replies = run(loop_factory, main, CHOICES[factory])
    assert [(i, r["seen"], r["in_child"], r["leaked"]) for i, r in replies] == [
        (i, i, i, [None, None]) for i, _ in replies
    ]
    assert sorted(fields_of(lines, "item")) == sorted((i, None) for i, _ in replies)
    origins = {origin for _, origin in fields_of(lines, "worker")}
    assert len(origins) == 1
    assert origins < {i for i, _ in replies}


@pytest.mark.parametrize("factory", sorted(CHOICES))
def test_a_detached_task_and_its_request_never_see_each_others_writes(
    loop_factory: LoopFactory, factory: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        context.set("mine", "before")
        go_on = asyncio.Event()

        async def background() -> dict[str, Any]:
            seen = {name: context.get(name) for name in ("mine", "app", keys.ORIGIN_REQUEST_ID)}
            seen["request_id"] = context.get(keys.REQUEST_ID)
            context.set("theirs", 1)
            context.set("app", "changed")
            await go_on.wait()
            seen["mine_later"] = context.get("mine")
            return seen

        task = context.detached(background())
        context.set("mine", "after")
        await asyncio.sleep(0.01)
        go_on.set()
        seen = await task
        mapping = request[context.web.CONTEXT_MAPPING]
        seen["request_sees"] = [context.get("theirs"), context.get("app"), "theirs" in mapping]
        return web.json_response(seen)

    async def main() -> tuple[Any, Any]:
        context.set("app", "demo")
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            (reply,) = await raw_exchange(port, request_with_id("req-A"))
        return json.loads(reply.body), context.get("app")

    seen, after = run(loop_factory, main, CHOICES[factory])
    assert seen == {
        "mine": None,
        "app": "demo",
        keys.ORIGIN_REQUEST_ID: "req-A",
        "request_id": None,
        "mine_later": None,
        "request_sees": [None, "demo", False],
    }
    assert after == "demo"


@pytest.mark.parametrize("factory", ["none", "copying_task_factory", "another library's"])
def test_detached_tasks_keep_their_name_and_go_through_a_foreign_factory(
    loop_factory: LoopFactory, factory: str
) -> None:
    async def main() -> list[Any]:
        with context.scope(request_id="req-A"):
            task = context.detached(asyncio.sleep(0, "done"), name="flusher")
        mapping = task.context  # type: ignore[attr-defined]
        return [task.get_name(), getattr(task, "built_by", None), await task, mapping]

    name, built_by, result, mapping = run(loop_factory, main, CHOICES[factory])
    assert [name, result, mapping] == ["flusher", "done", {keys.ORIGIN_REQUEST_ID: "req-A"}]
    assert built_by == ("recording_factory" if factory == "another library's" else None)


def test_detach_blocks_run_detached_and_give_the_request_back(loop_factory: LoopFactory) -> None:
    async def main() -> list[Any]:
        with context.scope(request_id="req-A", user="alice") as mapping:  # noqa: SIM117
            with context.log_context(tenant="t1"):
                async with context.detach() as block:
                    inside = [context.get(keys.REQUEST_ID), context.get("user"), dict(block)]
                    context.set("block_wrote", 1)
                    fields = dict(context.log_context.fields)
                in_callback = asyncio.get_running_loop().create_future()
                with context.detach():
                    asyncio.get_running_loop().call_soon(
                        lambda: in_callback.set_result(context.get(keys.ORIGIN_REQUEST_ID))
                    )
                return [
                    *inside,
                    fields,
                    await in_callback,
                    context.get("block_wrote"),
                    dict(mapping),
                ]

    assert run(loop_factory, main) == [
        None,
        None,
        {keys.ORIGIN_REQUEST_ID: "req-A"},
        {},
        "req-A",
        None,
        {keys.REQUEST_ID: "req-A", "user": "alice"},
    ]


def test_detached_work_outside_any_request_copies_the_current_values(
    loop_factory: LoopFactory,
) -> None:
    async def child() -> list[Any]:
        nested = context.detached(asyncio.sleep(0, context.get(keys.ORIGIN_REQUEST_ID)))
        return [context.get("app"), context.get(keys.ORIGIN_REQUEST_ID), await nested]

    async def main() -> list[Any]:
        context.set("app", "demo")
        at_start_up = await context.detached(child())
        with context.scope(request_id="req-A"):
            in_request = await context.detached(child())
        return [at_start_up, in_request]

    assert run(loop_factory, main) == [["demo", None, None], [None, "req-A", "req-A"]]


def test_activate_works_in_a_thread_and_its_writes_stay_in_the_block() -> None:
    async def main() -> Any:
        with context.scope(request_id="req-B", items=[1]):
            captured = context.capture()
            context.get("items").append(2)  # after the capture: not in it

        def in_thread() -> list[Any]:
            seen = []
            for _ in range(2):
                with captured.activate():
                    seen.append((context.get(keys.REQUEST_ID), list(context.get("items"))))
                    context.get("items").append("thread")
                    context.set("wrote", 1)
            seen.append(context.get("wrote"))
            return seen

        return await asyncio.to_thread(in_thread), captured.request_id

    assert asyncio.run(main()) == (
        [("req-B", [1]), ("req-B", [1]), None],
        "req-B",
    )


def test_captured_refuses_to_be_pickled_and_says_what_to_use() -> None:
    with context.scope(request_id="req-A"):
        captured = context.capture()
    with pytest.raises(TypeError, match="JobPropagation"):
        pickle.dumps(captured)
    assert repr(captured) == "<aioreqctx.Captured request_id='req-A'>"


def test_detached_needs_a_running_loop_and_closes_the_coroutine() -> None:
    async def work() -> None:
        await asyncio.sleep(0)

    coro = work()
    with pytest.raises(RuntimeError, match=r"detached\(\) needs a running event loop"):
        context.detached(coro)
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # no "never awaited" warning


def test_structlog_lines_of_detached_work_carry_the_origin(loop_factory: LoopFactory) -> None:
    stream = io.StringIO()
    structlog.configure(
        processors=[context.add_request_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
    )
    try:

        async def main() -> None:
            with context.scope(request_id="req-A"):
                await context.detached(structlog.get_logger().ainfo("flushed"))
                structlog.get_logger().info("in request")

        run(loop_factory, main)
    finally:
        structlog.reset_defaults()
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [
        {"request_id": "-", "origin_request_id": "req-A", "event": "flushed"},
        {"request_id": "req-A", "event": "in request"},
    ]
