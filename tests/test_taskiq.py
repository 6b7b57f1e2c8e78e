"""taskiq: the request's ID into every task it kicks, on the private Redis (taskiq-redis and a
real receiver) and on taskiq's in-memory broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import port_for
import pytest
import structlog
from aiohttp import ClientSession, web
from mirakuru import TCPExecutor
from taskiq import InMemoryBroker, TaskiqMessage, TaskiqMiddleware
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

import aioreqctx as context
from aioreqctx import keys
from aioreqctx.integrations.taskiq import JobContextMiddleware, attempt_of
from aioreqctx.propagation.jobs import CARRIED_PARENT_JOB_ID, CARRIED_REQUEST_ID

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import Captured, ListHandler, attached, capture
from .redis_fixtures import INSTALL_HINT
from .taskiq_app import (
    LINE_FORMAT,
    WORKER_CONTEXT,
    TaskiqApp,
    kicked,
    memory_broker,
    redis_broker,
    working,
)
from .waiting import until

ROOT = Path(__file__).resolve().parent.parent
WORKER_OPTIONS = ("--workers", "1", "--no-configure-logging", "--wait-tasks-timeout", "5")


@pytest.fixture(params=["redis", "memory"])
def make_app(request: pytest.FixtureRequest, redis_url: str) -> Callable[..., TaskiqApp]:
    """Builds a ``TaskiqApp`` on a fresh Redis queue, or on an in-memory broker."""

    def make(**options: Any) -> TaskiqApp:  # JobPropagation's options, and after=(middlewares)
        if request.param == "memory":
            return TaskiqApp(memory_broker(**options))
        queue = f"taskiq-{request.node.name}-{os.urandom(4).hex()}"
        return TaskiqApp(redis_broker(redis_url, queue, **options))

    return make


@pytest.fixture
def lines() -> Iterator[ListHandler]:
    """Every stdlib and structlog line of the tasks, taskiq and aioreqctx, with the job fields."""
    handler = ListHandler(LINE_FORMAT)
    handler.addFilter(context.RequestContextFilter())
    structlog.configure(
        processors=[context.add_request_context, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    with (
        attached("tests.taskiq", handler),
        attached("taskiq.receiver", handler),
        attached("aioreqctx", handler),
    ):
        yield handler
    structlog.reset_defaults()


def kicking_app(app: TaskiqApp) -> web.Application:
    """Handlers that kick tasks from the handler, a child task and an executor thread."""

    async def kick(request: web.Request) -> web.Response:
        tag = request.query["tag"]
        await app.record.kiq(tag)
        await app.record_sync.kiq(tag + "/sync")
        return web.Response(text="ok")

    async def kick_from_a_child_task(request: web.Request) -> web.Response:
        await asyncio.create_task(app.record.kiq(request.query["tag"]))
        return web.Response(text="ok")

    async def kick_from_a_thread(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()

        def in_thread() -> None:  # sync code handing the kick to the loop, as it must
            asyncio.run_coroutine_threadsafe(app.record.kiq(request.query["tag"]), loop).result()

        await context.run_in_executor(None, in_thread)
        return web.Response(text="ok")

    async def kick_a_kicker(request: web.Request) -> web.Response:
        await app.kick_child.kiq(request.query["tag"])
        return web.Response(text="ok")

    web_app = web.Application()
    context.setup(web_app)
    web_app.router.add_get("/kick", kick)
    web_app.router.add_get("/child-task", kick_from_a_child_task)
    web_app.router.add_get("/thread", kick_from_a_thread)
    web_app.router.add_get("/kick-a-kicker", kick_a_kicker)
    return web_app


async def get_ids(app: TaskiqApp, *paths: str) -> list[str]:
    """GET every path at once on a real server; the request ID each response carries."""
    async with serving(kicking_app(app)) as port, ClientSession() as client:

        async def one(path: str) -> str:
            async with client.get(f"http://127.0.0.1:{port}{path}") as response:
                assert response.status == 200, await response.text()
                return response.headers["X-Request-ID"]

        return list(await asyncio.gather(*(one(path) for path in paths)))


def serve_and_work(
    loop_factory: LoopFactory, app: TaskiqApp, wanted: list[str], *paths: str
) -> list[str]:
    """Serve ``paths`` with a worker running; return the request IDs once ``wanted`` ran."""

    async def main() -> list[str]:
        async with working(app):
            ids = await get_ids(app, *paths)
            await until(lambda: all(tag in app.seen for tag in wanted), f"tasks {wanted}")
        return ids

    return run(loop_factory, main)


def test_the_workers_lines_carry_the_handlers_request_id(
    make_app: Callable[..., TaskiqApp], lines: ListHandler, loop_factory: LoopFactory
) -> None:
    app = make_app()
    (request_id,) = serve_and_work(loop_factory, app, ["a", "a/sync"], "/kick?tag=a")
    for tag in ("a", "a/sync"):  # an async task, and a sync one in the executor
        ran = app.ran(tag)
        assert ran.request_id == request_id
        assert ran.attempt == 1
        assert ran.parent_job_id is None
        assert ran.job_id is not None
        assert f"{request_id} job={ran.job_id} attempt=1 tests.taskiq: task {tag}" in lines.lines
        structlog_line = next(line for line in lines.lines if f"tag='{tag}'" in line)
        assert f"request_id='{request_id}'" in structlog_line
        assert f"job_id='{ran.job_id}'" in structlog_line
        executing = f"Executing task record{'_sync' if 'sync' in tag else ''} with ID: {ran.job_id}"
        assert any(line.startswith(request_id) and executing in line for line in lines.lines)
    assert not any(WORKER_CONTEXT[keys.REQUEST_ID] in line for line in lines.lines)


def test_tasks_kicked_from_child_tasks_threads_and_other_tasks(
    make_app: Callable[..., TaskiqApp], loop_factory: LoopFactory
) -> None:
    app = make_app()
    paths = ("/child-task?tag=child", "/thread?tag=thread", "/kick-a-kicker?tag=parent")
    wanted = ["child", "thread", "parent", "parent/child"]
    from_child, from_thread, from_job = serve_and_work(loop_factory, app, wanted, *paths)
    assert app.ran("child").request_id == from_child
    assert app.ran("thread").request_id == from_thread
    parent, grandchild = app.ran("parent"), app.ran("parent/child")
    assert parent.request_id == grandchild.request_id == from_job
    assert parent.parent_job_id is None
    assert grandchild.parent_job_id == parent.job_id
    assert grandchild.job_id != parent.job_id


def test_the_deadline_and_the_configured_context_keys_travel(
    make_app: Callable[..., TaskiqApp], loop_factory: LoopFactory
) -> None:
    app = make_app(context_keys=("tenant",), carry_deadline=True)

    async def main() -> None:
        async with working(app):
            deadline = time.monotonic() + 30
            request = {keys.REQUEST_ID: "with-deadline", keys.DEADLINE: deadline, "tenant": "acme"}
            async with context.scope(request):
                await app.record.kiq("deadline")
            await until(lambda: "deadline" in app.seen, "the task")

    run(loop_factory, main)
    ran = app.ran("deadline")
    assert ran.tenant == "acme"
    assert ran.remaining is not None
    assert 20 < ran.remaining <= 30


def test_200_concurrent_requests_each_kicking_a_task_see_no_cross_talk(
    make_app: Callable[..., TaskiqApp], loop_factory: LoopFactory
) -> None:
    app = make_app()
    count = 200
    tags = [str(n) for n in range(count)]
    ids = serve_and_work(loop_factory, app, tags, *(f"/kick?tag={tag}" for tag in tags))
    assert len(set(ids)) == count
    assert {tag: app.ran(tag).request_id for tag in tags} == dict(zip(tags, ids, strict=True))
    assert len({app.ran(tag).job_id for tag in tags}) == count


def ran_twice(app: TaskiqApp, tag: str) -> bool:
    return len(app.seen.get(tag, ())) == 2


def test_a_retried_task_keeps_its_ids_with_attempt_2(
    make_app: Callable[..., TaskiqApp], lines: ListHandler, loop_factory: LoopFactory
) -> None:
    app = make_app(events=context.JobEvents(logger="aioreqctx.jobs"))
    app.failures_left["flaky"] = app.failures_left["parent/child"] = 1

    async def main() -> str:
        async with working(app):
            async with context.scope({keys.REQUEST_ID: "retried-request"}):
                await app.flaky.kiq("flaky")
                await app.requeue_once.kiq("requeued")
                await app.kick_child.kiq("parent", flaky=True)
            for tag in ("flaky", "requeued", "parent/child"):
                await until(partial(ran_twice, app, tag), f"{tag} again")
        return "done"

    run(loop_factory, main)
    parent_job_id = app.ran("parent").job_id
    # taskiq's retry middleware, Context.requeue(), and a retried task kicked by a task
    for tag, parent in (("flaky", None), ("requeued", None), ("parent/child", parent_job_id)):
        first, second = app.seen[tag]
        assert first.request_id == second.request_id == "retried-request"
        assert first.job_id == second.job_id
        assert (first.attempt, second.attempt) == (1, 2)
        assert first.parent_job_id == second.parent_job_id == parent
    events = [line for line in lines.lines if "aioreqctx.jobs" in line]
    job_id = app.seen["flaky"][0].job_id
    assert any(f"job={job_id} attempt=1" in line and "job_failed" in line for line in events)
    assert any(f"job={job_id} attempt=2" in line and "job_finished" in line for line in events)


def test_a_retry_of_a_task_kicked_outside_a_request_keeps_its_new_id(
    make_app: Callable[..., TaskiqApp], loop_factory: LoopFactory
) -> None:
    app = make_app()
    app.failures_left["lonely"] = 1

    async def main() -> None:
        async with working(app):
            await app.flaky.kiq("lonely")
            await until(lambda: len(app.seen.get("lonely", ())) == 2, "the retry")

    run(loop_factory, main)
    first, second = app.seen["lonely"]
    assert first.request_id == second.request_id
    assert context.is_valid_request_id(first.request_id or "")
    assert second.parent_job_id is None  # its own retry, not a child of itself
    assert second.attempt == 2


INVALID_IDS: dict[str, Any] = {
    "crlf": "ok\r\nFORGED log line",
    "10 KB": "x" * 10_240,
    "non-ASCII": "идентификатор",
    "a number": 12345,
}


def test_invalid_carried_values_give_a_new_id_and_one_escaped_warning(
    make_app: Callable[..., TaskiqApp], lines: ListHandler, loop_factory: LoopFactory
) -> None:
    app = make_app()

    async def main() -> None:
        async with working(app):
            for tag, value in INVALID_IDS.items():
                await kicked(app.record, **{CARRIED_REQUEST_ID: value}).kiq(tag)
            await kicked(app.record, **{CARRIED_PARENT_JOB_ID: "p-1"}).kiq("missing")
            await until(lambda: len(app.seen) == len(INVALID_IDS) + 1, "the bad tasks")
            async with context.scope({keys.REQUEST_ID: "still-working"}):
                await app.record.kiq("after")  # the worker goes on
            await until(lambda: "after" in app.seen, "the good task")

    run(loop_factory, main)
    warnings = [r for r in lines.records if r.levelno == logging.WARNING and r.name == "aioreqctx"]
    assert len(warnings) == len(INVALID_IDS) + 1
    for tag in [*INVALID_IDS, "missing"]:
        ran = app.ran(tag)
        assert ran.request_id is not None
        assert context.is_valid_request_id(ran.request_id)
        (warning,) = [line for line in lines.lines if f"(id {ran.job_id})" in line]
        assert "invalid carried" in warning
        assert warning.startswith(ran.request_id)  # logged inside the job, under its new ID
        assert warning.isprintable()
        assert len(warning) < 600
    assert app.ran("after").request_id == "still-working"
    assert not any("FORGED" in line and "\\r\\n" not in line for line in lines.lines)


@pytest.mark.parametrize("outside_request", ["skip", "generate"])
def test_kicking_outside_a_request_follows_the_configuration(
    make_app: Callable[..., TaskiqApp],
    lines: ListHandler,
    loop_factory: LoopFactory,
    outside_request: str,
) -> None:
    made: list[str] = []

    def generator() -> str:
        made.append(f"generated-{len(made)}")
        return made[-1]

    app = make_app(outside_request=outside_request, generator=generator)
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        async with working(app):
            message = await app.record.kiq("outside")
            sent.append({"task_id": message.task_id})
            # what a scheduler sends later for a task scheduled from a request: kept as it is
            await kicked(app.record, **{CARRIED_REQUEST_ID: "scheduled-1"}).kiq("scheduled")
            await until(lambda: {"outside", "scheduled"} <= set(app.seen), "the tasks")

    run(loop_factory, main)
    ran = app.ran("outside")
    assert ran.job_id == sent[0]["task_id"]
    assert app.ran("scheduled").request_id == "scheduled-1"
    if outside_request == "generate":
        assert made == ["generated-0"]  # made when kicked, carried to the worker
        assert ran.request_id == "generated-0"
    else:
        assert made == ["generated-0"]  # made by the worker for a task that carried none
        assert ran.request_id == "generated-0"
        assert not [r for r in lines.records if r.levelno >= logging.WARNING]


def test_a_task_run_in_place_leaves_the_kickers_context_as_it_was() -> None:
    broker = InMemoryBroker(await_inplace=True).with_middlewares(JobContextMiddleware())
    app = TaskiqApp(broker)

    async def main() -> tuple[Any, Any]:
        async with context.scope({keys.REQUEST_ID: "the-kicker", "mine": 1}):
            await app.kick_child.kiq("inline")  # runs now, and kicks its child, in this task
            return context.get(keys.REQUEST_ID), context.get(keys.JOB_ID)

    assert asyncio.run(main()) == ("the-kicker", None)
    parent, child = app.ran("inline"), app.ran("inline/child")
    assert parent.request_id == child.request_id == "the-kicker"
    assert child.parent_job_id == parent.job_id


@pytest.mark.parametrize(
    ("labels", "attempt"),
    [
        ({}, 1),
        ({"_retries": 1}, 2),
        ({"_retries": "2", "X-Taskiq-requeue": "1"}, 4),
        ({"_retries": "many", "X-Taskiq-requeue": None}, 1),
        ({"_retries": -3}, 1),
        ({"_retries": 10**12}, 1),
    ],
)
def test_the_attempt_counts_taskiqs_retries_and_requeues(
    labels: dict[str, Any], attempt: int
) -> None:
    assert attempt_of(labels) == attempt


def test_a_bad_propagation_is_refused() -> None:
    with pytest.raises(TypeError, match="propagation"):
        JobContextMiddleware({"outside_request": "skip"})  # type: ignore[arg-type]


def test_a_taskiq_worker_process_logs_under_the_handlers_id(redis_url: str, tmp_path: Path) -> None:
    """`taskiq worker` in a process of its own, its output captured."""
    queue = f"taskiq-process-{os.urandom(4).hex()}"
    env = {**os.environ, "REDIS_URL": redis_url, "TASKIQ_QUEUE": queue}
    output = tmp_path / "worker.log"
    with output.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "taskiq", "worker", "tests.taskiq_app:broker", *WORKER_OPTIONS],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        app = TaskiqApp(redis_broker(redis_url, queue))

        async def main() -> list[str]:
            await app.broker.startup()
            try:
                ids = await get_ids(app, "/kick?tag=p", "/kick-a-kicker?tag=q")
            finally:
                await app.broker.shutdown()
            await until(lambda: "task q/child" in output.read_text(), "the worker", 60)
            return ids

        first, second = asyncio.run(main())
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        worker.wait(timeout=30)
    text = output.read_text()
    for request_id, tag in ((first, "p"), (first, "p/sync"), (second, "q"), (second, "q/child")):
        assert any(
            line.startswith(request_id) and line.endswith(f"task {tag}")
            for line in text.splitlines()
        ), text
        assert f"request_id='{request_id}'" in text
    assert "Traceback" not in text


class FailingPreExecute(TaskiqMiddleware):
    """A middleware after aioreqctx's whose ``pre_execute`` fails: taskiq then skips the task,
    and every ``post_execute``."""

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        raise RuntimeError("a later middleware failed")


def _job_lines(captured: Captured, event: str) -> list[logging.LogRecord]:
    return [record for record in captured.records if getattr(record, "event", None) == event]


def test_a_job_whose_post_execute_never_runs_is_closed_when_its_task_ends(
    make_app: Callable[..., TaskiqApp], loop_factory: LoopFactory
) -> None:
    registry = context.InFlightRegistry()
    app = make_app(events=context.JobEvents(), registry=registry, after=(FailingPreExecute(),))

    async def main() -> None:
        async with working(app):
            async with context.scope({keys.REQUEST_ID: "req-never"}):
                await app.record.kiq("never")
            await until(lambda: _job_lines(handler, "job_failed"), "the job_failed line")

    with capture("aioreqctx.jobs") as handler:
        run(loop_factory, main)
    assert registry.count() == 0
    (failed,) = _job_lines(handler, "job_failed")
    assert (failed.request_id, failed.outcome, failed.error) == (  # type: ignore[attr-defined]
        "req-never",
        "error",
        "RuntimeError",
    )
    assert "never" not in app.seen  # taskiq skipped the task itself


def test_a_job_whose_ack_fails_because_redis_went_away_is_closed(
    loop_factory: LoopFactory, tmp_path: Path
) -> None:
    executable = shutil.which("redis-server")
    assert executable is not None, INSTALL_HINT
    port = port_for.select_random()
    server = TCPExecutor(
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        host="127.0.0.1",
        port=port,
        timeout=30,
    )
    server.start()  # a server of its own: the task kills it
    registry = context.InFlightRegistry()
    broker = RedisStreamBroker(f"redis://127.0.0.1:{port}/0", queue_name="acked").with_middlewares(
        JobContextMiddleware(context.JobPropagation(events=context.JobEvents(), registry=registry))
    )

    async def redis_goes_away() -> None:
        server.kill()

    task = broker.register_task(redis_goes_away, task_name="redis_goes_away")

    async def main() -> None:
        await broker.startup()
        receiver = Receiver(broker, max_async_tasks=10, run_startup=False)
        with context.scope(WORKER_CONTEXT):
            listener = asyncio.create_task(receiver.listen(asyncio.Event()))
        async with context.scope({keys.REQUEST_ID: "req-acked"}):
            await kicked(task, ack_type="when_executed").kiq()  # acked before post_execute
        await until(lambda: _job_lines(handler, "job_failed"), "the job_failed line")
        listener.cancel()
        with contextlib.suppress(BaseException):  # the listener lost Redis too
            await listener
        with contextlib.suppress(Exception):  # closes the broker's connections to the dead server
            await broker.shutdown()

    try:
        with capture("aioreqctx.jobs") as handler:
            run(loop_factory, main)
    finally:
        server.kill()
    assert registry.count() == 0
    (failed,) = _job_lines(handler, "job_failed")
    assert (failed.request_id, failed.outcome) == ("req-acked", "error")  # type: ignore[attr-defined]
    assert "Connection" in failed.error  # type: ignore[attr-defined]
