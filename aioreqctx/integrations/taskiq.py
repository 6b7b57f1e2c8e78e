"""taskiq (``pip install 'aioreqctx[taskiq]'``): a task runs under the ID of the request that
kicked it.

``JobContextMiddleware`` moves the carrier (``aioreqctx.JobPropagation``) in the message's labels.
Its ``pre_send`` runs where ``kiq()`` is awaited, so it reads the kicker's context. On the
worker, taskiq's receiver handles each message in a task of its own, in which ``pre_execute``,
the task function, ``on_error`` and ``post_execute`` follow one another: an async function is
awaited there and a sync one runs in the executor with a copy of that task's context. The job
scope opened in ``pre_execute`` is therefore current for the whole task, its child tasks and
its executor thread, and ``post_execute`` closes it. When ``post_execute`` never runs (a later
middleware's ``pre_execute`` raised, acknowledging the message failed), the end of that task
closes the job instead: its registry entry goes and its ``job_failed`` line is written.
(A ``ProcessPoolExecutor`` gets no context: taskiq copies none into another process.)

A retry (``SimpleRetryMiddleware``, ``SmartRetryMiddleware``) or ``Context.requeue()`` sends the
labels the message arrived with and its task ID again, so the job keeps its IDs; the attempt is
1 + taskiq's ``_retries`` + ``X-Taskiq-requeue`` counts.

Two of these are taskiq's internals, not its documented API: the names of those two labels,
and the receiver running ``pre_execute``, the task and ``post_execute`` in one task. The tests
fail if they change: ``test_a_retried_task_keeps_its_ids_with_attempt_2`` and
``test_the_workers_lines_carry_the_handlers_request_id`` in tests/test_taskiq.py.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

from .. import keys
from .._core.store import current_mapping
from ..propagation.jobs import CARRIED_PARENT_JOB_ID, CARRIER_PREFIX, JobPropagation, JobScope
from . import missing_extra

try:
    from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
    from taskiq.exceptions import NoResultError
except ImportError as error:
    raise missing_extra("taskiq") from error

ATTEMPT_LABELS = ("_retries", "X-Taskiq-requeue")
"""taskiq's own labels that count earlier attempts: its retry middlewares' and requeue's."""

_MAX_COUNT = 1_000_000  # a carried count above this is no real count


class _OpenJob:
    """The job scope pre_execute opened, the one it replaced (an InMemoryBroker with
    await_inplace=True runs a task kicked from a task inside it), and the receiver's task,
    whose end closes the job if post_execute does not."""

    __slots__ = ("job", "replaced", "task")

    def __init__(self, job: JobScope, replaced: _OpenJob | None) -> None:
        self.job, self.replaced = job, replaced
        try:
            self.task: asyncio.Task[Any] | None = asyncio.current_task()
        except RuntimeError:  # no running loop: post_execute is then the only way to close
            self.task = None
        if self.task is not None:
            self.task.add_done_callback(self.task_ended)

    def task_ended(self, task: asyncio.Task[Any]) -> None:
        self.job.ended_elsewhere(asyncio.CancelledError() if task.cancelled() else task.exception())

    def close(self, error: BaseException | None) -> None:
        if self.task is not None:
            self.task.remove_done_callback(self.task_ended)
        if error is None:
            self.job.__exit__(None, None, None)
        else:
            self.job.__exit__(type(error), error, error.__traceback__)


_open_job: ContextVar[_OpenJob | None] = ContextVar("aioreqctx.taskiq_job")


class JobContextMiddleware(TaskiqMiddleware):
    """``broker.with_middlewares(JobContextMiddleware(propagation), ...)``; put it first, so
    the other middlewares' execute hooks run inside the job's context too.

    ``propagation``: what tasks carry and how they run (``JobPropagation()``'s defaults when
    None); the same configuration on the kicking and on the worker side.
    """

    def __init__(self, propagation: JobPropagation | None = None) -> None:
        super().__init__()
        if propagation is None:
            propagation = JobPropagation()
        elif not isinstance(propagation, JobPropagation):
            raise TypeError(f"propagation must be a JobPropagation, not {propagation!r}")
        self.propagation = propagation

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        labels = message.labels
        for label in labels:
            if label.startswith(CARRIER_PREFIX):
                return message  # a retry or requeue: the carrier the message arrived with
        carrier = self.propagation.carrier()
        if carrier:
            mapping = current_mapping.get(None)
            if mapping is not None and mapping.get(keys.JOB_ID) == message.task_id:
                carrier.pop(CARRIED_PARENT_JOB_ID, None)  # the running job kicked itself again
            labels.update(carrier)
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        job = self.propagation.job_scope(
            message.labels,
            job_id=message.task_id,
            job_name=message.task_name,
            attempt=attempt_of(message.labels),
            retrying=(NoResultError,),
        )
        job.__enter__()
        _open_job.set(_OpenJob(job, _open_job.get(None)))
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        opened = _open_job.get(None)
        if opened is None:  # the receiver did not call pre_execute (a middleware before it failed)
            return
        _open_job.set(opened.replaced)
        error = result.error if result.is_err else None
        opened.close(error if isinstance(error, BaseException) else None)


def attempt_of(labels: dict[str, Any]) -> int:
    """Which attempt a message is, from taskiq's retry and requeue counts (bad counts are 0)."""
    attempt = 1
    for label in ATTEMPT_LABELS:
        try:
            count = int(labels.get(label, 0))
        except (TypeError, ValueError):
            continue
        if 0 < count < _MAX_COUNT:
            attempt += count
    return attempt
