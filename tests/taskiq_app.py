"""A taskiq application for the tests: tasks that record the context they ran in, a broker
(taskiq-redis on the private Redis, or the in-memory one) and a worker bounded in time.

Run as ``taskiq worker tests.taskiq_app:broker`` (with ``REDIS_URL`` and ``TASKIQ_QUEUE``) it is
a worker process whose stdlib and structlog lines carry the job's fields.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from taskiq import (
    AsyncBroker,
    AsyncTaskiqDecoratedTask,
    Context,
    InMemoryBroker,
    TaskiqDepends,
    TaskiqMiddleware,
)
from taskiq.middlewares import SimpleRetryMiddleware
from taskiq.receiver import Receiver
from taskiq_redis import ListQueueBroker

import aioreqctx as context
from aioreqctx import keys
from aioreqctx.integrations.taskiq import JobContextMiddleware

task_logger = logging.getLogger("tests.taskiq")
LINE_FORMAT = "%(request_id)s job=%(job_id)s attempt=%(job_attempt)s %(name)s: %(message)s"
TASKIQ_CONTEXT: Any = TaskiqDepends()  # taskiq's injection marker for its Context
WORKER_CONTEXT = {keys.REQUEST_ID: "the-workers-own-id"}


@dataclass(frozen=True)
class Seen:
    """What one task run saw of its context."""

    request_id: str | None
    job_id: str | None
    attempt: int | None
    parent_job_id: str | None
    tenant: str | None
    remaining: float | None


def seen_now() -> Seen:
    return Seen(
        context.get(keys.REQUEST_ID),
        context.get(keys.JOB_ID),
        context.get(keys.JOB_ATTEMPT),
        context.get(keys.PARENT_JOB_ID),
        context.get("tenant"),
        context.remaining_time(),
    )


@dataclass
class TaskiqApp:
    """One broker with the aioreqctx middleware (first) and taskiq's retry middleware."""

    broker: AsyncBroker
    seen: dict[str, list[Seen]] = field(default_factory=dict)
    failures_left: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        register, note, seen = self.broker.register_task, self._note, self.seen

        async def record(tag: str) -> None:
            await asyncio.sleep(0)
            note(tag)

        def record_sync(tag: str) -> None:
            note(tag)

        async def kick_child(tag: str, flaky: bool = False) -> None:
            note(tag)
            await (self.flaky if flaky else self.record).kiq(tag + "/child")

        async def flaky(tag: str) -> None:
            note(tag)
            left = self.failures_left.get(tag, 0)
            if left:
                self.failures_left[tag] = left - 1
                raise RuntimeError(f"failing {tag} on purpose")

        async def requeue_once(tag: str, ctx: Context = TASKIQ_CONTEXT) -> None:
            note(tag)
            if len(seen[tag]) == 1:
                await ctx.requeue()

        # taskiq renames a task's function, so each is a plain function, not a bound method.
        self.record = register(record, "record")
        self.record_sync = register(record_sync, "record_sync")
        self.kick_child = register(kick_child, "kick_child")
        self.flaky = register(flaky, "flaky", retry_on_error=True)
        self.requeue_once = register(requeue_once, "requeue_once")

    def ran(self, tag: str) -> Seen:
        (only,) = self.seen[tag]
        return only

    def _note(self, tag: str) -> None:
        task_logger.info("task %s", tag)
        structlog.get_logger("tests.taskiq.structlog").info("structlog task", tag=tag)
        self.seen.setdefault(tag, []).append(seen_now())


def redis_broker(
    url: str, queue: str, *, after: tuple[TaskiqMiddleware, ...] = (), **options: Any
) -> ListQueueBroker:
    """``options`` configure the JobPropagation; ``after`` are middlewares put after taskiq's."""
    return ListQueueBroker(url, queue_name=queue).with_middlewares(
        JobContextMiddleware(context.JobPropagation(**options)),
        SimpleRetryMiddleware(default_retry_count=3),
        *after,
    )


def memory_broker(*, after: tuple[TaskiqMiddleware, ...] = (), **options: Any) -> InMemoryBroker:
    return InMemoryBroker().with_middlewares(
        JobContextMiddleware(context.JobPropagation(**options)),
        SimpleRetryMiddleware(default_retry_count=3),
        *after,
    )


@asynccontextmanager
async def working(app: TaskiqApp) -> AsyncIterator[None]:
    """The broker started and, for Redis, a real receiver listening until the block ends.

    The listener runs in a context of its own (``WORKER_CONTEXT``): no task may see it.
    """
    broker = app.broker
    await broker.startup()
    listener = None
    finish = asyncio.Event()
    if not isinstance(broker, InMemoryBroker):
        receiver = Receiver(
            broker,
            executor=ThreadPoolExecutor(4),
            max_async_tasks=100,
            run_startup=False,
            wait_tasks_timeout=10,
        )
        with context.scope(WORKER_CONTEXT):
            listener = asyncio.create_task(receiver.listen(finish))
    try:
        yield
    finally:
        if isinstance(broker, InMemoryBroker):
            await broker.wait_all()
        finish.set()
        if listener is not None:
            await asyncio.wait_for(listener, 20)
        await broker.shutdown()


def kicked(task: AsyncTaskiqDecoratedTask[Any, Any], **labels: Any) -> Any:
    """``task.kicker()`` with ``labels`` added as a sender (or an attacker) could."""
    return task.kicker().with_labels(**labels)


def _worker_logging() -> None:
    """How the worker process logs: stdlib lines and structlog lines through one handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(context.RequestContextFilter())
    handler.setFormatter(
        logging.Formatter(LINE_FORMAT, defaults={"job_id": "-", "job_attempt": "-"})
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    structlog.configure(
        processors=[context.add_request_context, structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )


if "REDIS_URL" in os.environ:  # imported by `taskiq worker`
    _worker_logging()
    broker = redis_broker(os.environ["REDIS_URL"], os.environ["TASKIQ_QUEUE"])
    worker_app = TaskiqApp(broker)
