"""The request's ID in Celery: carried in each task message's headers, restored in the worker.

Celery runs tasks in threads or processes, not asyncio tasks, and offers no per-task context,
so this module works through its signals: ``before_task_publish`` writes
``JobPropagation.carrier()`` into the headers of every message published in this process
(``delay``, ``apply_async``, ``send_task``, each task of a chain or group, a ``retry``), and
``task_prerun`` / ``task_postrun`` open and close the job's context around each task in the
thread that runs it. Celery's signals are process-wide, so one set-up covers every app.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from .. import keys
from .._core.store import current_mapping
from ..propagation.jobs import (
    CARRIED_PARENT_JOB_ID,
    CARRIED_REQUEST_ID,
    CARRIER_PREFIX,
    JobPropagation,
    JobScope,
)
from . import missing_extra

try:
    from celery import signals
    from celery.exceptions import Retry
except ImportError as error:
    raise missing_extra("celery") from error

__all__ = ["setup_celery"]

_DISPATCH_UID = "aioreqctx.integrations.celery"
_installed_lock = threading.Lock()
_installed: list[_Receivers] = []


class _OpenJobs(threading.local):
    """The jobs open in this thread, innermost last: ``(task ID, scope)``.

    Per thread, because a retried task can start its next attempt in another pool thread
    before the first attempt's ``task_postrun`` ran; a stack, because an eager ``apply()``
    inside a task runs a task within a task.
    """

    def __init__(self) -> None:
        self.stack: list[tuple[str, JobScope]] = []


class _Receivers:
    """The signal receivers of one ``setup_celery`` call."""

    def __init__(self, propagation: JobPropagation) -> None:
        self.propagation = propagation
        self._open = _OpenJobs()

    def on_publish(self, headers: MutableMapping[str, Any] | None = None, **_: Any) -> None:
        """``before_task_publish``: the carrier into the message headers.

        A message that already carries an ID (``apply_async(headers=...)``) keeps it. A task
        re-publishing itself (``self.retry()``) carries the ID it runs under and its own parent,
        replacing the header values the retry copied from its message.
        """
        if headers is None:
            return
        mapping = current_mapping.get(None)
        job_id = None if mapping is None else mapping.get(keys.JOB_ID)
        if job_id is not None and headers.get("id") == job_id:
            assert mapping is not None
            for key in [key for key in headers if _is_carried(key)]:
                del headers[key]
            carried = self.propagation.carrier()
            parent = mapping.get(keys.PARENT_JOB_ID)
            if parent is None:
                carried.pop(CARRIED_PARENT_JOB_ID, None)
            else:
                carried[CARRIED_PARENT_JOB_ID] = parent
            headers.update(carried)
        elif CARRIED_REQUEST_ID not in headers:
            headers.update(self.propagation.carrier())

    def on_prerun(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        """``task_prerun``: open the job's context in the thread that runs the task."""
        if task_id is None or task is None:
            return
        request = task.request
        carrier = request.headers
        if request.is_eager and not (isinstance(carrier, Mapping) and carrier):
            carrier = self.propagation.carrier()  # run inline: no message, the caller's context
        job = self.propagation.job_scope(
            carrier,
            job_id=task_id,
            job_name=task.name,
            attempt=_attempt(request.retries),
            retrying=(Retry,),
        )
        job.__enter__()
        self._open.stack.append((task_id, job))

    def on_postrun(
        self, task_id: str | None = None, state: str | None = None, retval: Any = None, **_: Any
    ) -> None:
        """``task_postrun``: close the job's context; the thread is back to what it was."""
        stack = self._open.stack
        if not any(open_id == task_id for open_id, _ in stack):
            return  # its prerun ran before set-up, or failed
        while stack:
            open_id, job = stack.pop()
            if open_id != task_id:  # a task inside it that had no postrun
                job.__exit__(None, None, None)
                continue
            if state != "SUCCESS" and isinstance(retval, BaseException):
                job.__exit__(type(retval), retval, retval.__traceback__)
            else:
                job.__exit__(None, None, None)
            return


def _attempt(retries: object) -> int:
    """Celery counts retries from 0; an attempt counts from 1."""
    if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
        return retries + 1
    return 1


def _is_carried(key: object) -> bool:
    return isinstance(key, str) and key.startswith(CARRIER_PREFIX)


def setup_celery(propagation: JobPropagation | None = None) -> Callable[[], None]:
    """Carry the request's context into Celery tasks; call once per process, on both sides.

    Put it next to the Celery app, in the module the web service and ``celery worker -A``
    both import. ``propagation``: what jobs carry and how workers run them (default
    ``JobPropagation()``). Returns the call that disconnects the signal receivers again.
    """
    if propagation is None:
        propagation = JobPropagation()
    elif not isinstance(propagation, JobPropagation):
        raise TypeError(f"propagation must be a JobPropagation, not {propagation!r}")
    receivers = _Receivers(propagation)
    connections = (
        (signals.before_task_publish, receivers.on_publish),
        (signals.task_prerun, receivers.on_prerun),
        (signals.task_postrun, receivers.on_postrun),
    )
    with _installed_lock:
        if _installed:
            raise RuntimeError(
                "setup_celery() was already called in this process (Celery's signals are "
                "process-wide); call the function it returned to undo it first"
            )
        for signal, receiver in connections:
            signal.connect(receiver, weak=False, dispatch_uid=_DISPATCH_UID)
        _installed.append(receivers)

    def uninstall() -> None:
        with _installed_lock:
            if receivers not in _installed:
                return
            for signal, _ in connections:
                signal.disconnect(dispatch_uid=_DISPATCH_UID)
            _installed.remove(receivers)

    return uninstall
