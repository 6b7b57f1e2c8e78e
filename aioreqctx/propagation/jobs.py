"""A request's context carried into the jobs it queues, whatever the queue.

A queue only moves data, so the enqueuing side writes a *carrier*: a flat ``dict[str, str]``
(it fits Celery headers, taskiq labels and an arq keyword argument alike) with the request ID,
the enqueuing job's ID, the deadline and the configured context keys. The worker side runs
each job in a fresh context seeded from it. A carrier has crossed a process boundary and a
store anyone may write to, so it is checked like an incoming header: a bad value is replaced
(a new ID) or dropped and reported in one escaped WARNING, never turned into a failed job.
The per-queue adapters in ``aioreqctx.integrations`` only move the carrier and call
``JobPropagation``; the behaviour lives here, once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from .. import keys
from .._core.deadline import format_deadline, parse_deadline
from .._core.emit import enabled_check, event_sink, reported_if_failing
from .._core.id_callbacks import checked_generator, checked_validator
from .._core.ids import escaped, is_valid_request_id, new_request_id, sendable_id
from .._core.jsonsafe import safe_text
from .._core.request_view import Registry, error_fields
from .._core.store import Context, current_mapping, scope
from .._core.sync_or_async import SyncOrAsync
from .._core.timing import OperationTimings
from ..log.buffer import Lines, LogBuffer, buffering
from ..log.debug import DEBUG_LOG, DebugOnDemand

CARRIED_REQUEST_ID = "aioreqctx.request_id"
"""Carrier key: the enqueuer's request ID (the job's ``X-Request-ID``)."""

CARRIED_PARENT_JOB_ID = "aioreqctx.parent_job_id"
"""Carrier key: the ID of the job that enqueued this one."""

CARRIED_DEADLINE = "aioreqctx.deadline"
"""Carrier key: the request's deadline, an RFC 3339 UTC time (as ``X-Request-Deadline``)."""

CARRIED_DEBUG_LOG = "aioreqctx.debug_log"
"""Carrier key: the enqueuing request's accepted debug-on-demand value."""

CARRIED_CONTEXT_PREFIX = "aioreqctx.context."
"""Carrier key prefix: ``aioreqctx.context.<key>`` holds the context key ``<key>``."""

CARRIER_PREFIX = "aioreqctx."
"""Every carrier key starts with it, so a carrier can share a dict with a queue's own headers."""

MAX_CARRIED_VALUE = 1024
"""The longest context value a worker accepts from a carrier (characters)."""

SHOWN_LIMIT = 200
"""A queue's job ID or name longer than this is cut short in the context and log lines."""

JOBS_LOGGER = "aioreqctx.jobs"
"""The stdlib logger job events go to unless told otherwise."""

Outcome = Literal["success", "error", "retry", "cancelled"]

logger = logging.getLogger("aioreqctx")


def _outcome(
    exc: BaseException | None, retrying: tuple[type[BaseException], ...]
) -> tuple[Outcome, dict[str, Any]]:
    """How a job ended, and the error fields its event carries."""
    if exc is None:
        return "success", {}
    if retrying and isinstance(exc, retrying):
        return "retry", error_fields(exc, traceback=False)
    if isinstance(exc, Exception):
        return "error", error_fields(exc)
    return "cancelled", error_fields(exc, traceback=False)  # CancelledError, KeyboardInterrupt


class JobEvents:
    """``job_started`` / ``job_finished`` / ``job_failed`` lines for every job; opt-in through
    ``JobPropagation(events=JobEvents())``.

    ``logger``: a stdlib logger or its name (default ``aioreqctx.jobs``) or a structlog logger.
    Levels: ``started_level`` and ``finished_level`` (INFO); a failure is ``error_level``
    (ERROR, with the traceback), a retry or a cancellation ``retry_level`` (WARNING, without).
    """

    __slots__ = (
        "_enabled",
        "_sink",
        "error_level",
        "finished_level",
        "retry_level",
        "started_level",
    )

    def __init__(
        self,
        *,
        logger: logging.Logger | str | Any = JOBS_LOGGER,
        started_level: int = logging.INFO,
        finished_level: int = logging.INFO,
        error_level: int = logging.ERROR,
        retry_level: int = logging.WARNING,
    ) -> None:
        for option, level in (
            ("started_level", started_level),
            ("finished_level", finished_level),
            ("error_level", error_level),
            ("retry_level", retry_level),
        ):
            if not isinstance(level, int) or isinstance(level, bool):
                raise TypeError(f"{option} must be a logging level number, not {level!r}")
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self._sink = event_sink(logger)
        self._enabled = enabled_check(logger)
        self.started_level = started_level
        self.finished_level = finished_level
        self.error_level = error_level
        self.retry_level = retry_level

    def started(self, mapping: Mapping[str, Any]) -> None:
        if self._enabled(self.started_level):
            self._sink(self.started_level, "job_started", _job_fields(mapping))

    def ended(self, mapping: Mapping[str, Any], outcome: Outcome, error: Mapping[str, Any]) -> None:
        level = {
            "success": self.finished_level,
            "error": self.error_level,
        }.get(outcome, self.retry_level)
        if not self._enabled(level):
            return
        event = "job_finished" if outcome == "success" else "job_failed"
        start = mapping[keys.START_MONOTONIC]
        fields = _job_fields(mapping)
        fields["duration_ms"] = round((perf_counter() - start) * 1000.0, 3)
        fields["outcome"] = outcome
        self._sink(level, event, {**fields, **error})


def _job_fields(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "request_id": mapping.get(keys.REQUEST_ID),
        "job_name": mapping.get(keys.JOB_NAME),
        "job_id": mapping.get(keys.JOB_ID),
        "attempt": mapping.get(keys.JOB_ATTEMPT),
        "parent_job_id": mapping.get(keys.PARENT_JOB_ID),
    }


@dataclass(frozen=True, kw_only=True, eq=False)
class JobPropagation:
    """What jobs carry and how workers run them; one per application, shared by both sides.

    ``context_keys``: context keys (as used with ``aioreqctx.set``) whose values jobs carry;
    values travel as strings and a worker restores only the keys its own configuration names.
    ``outside_request``: a job enqueued where no request ID is current carries nothing
    (``"skip"``, the default: it gets a new ID when it runs) or a new ID from ``generator``
    (``"generate"``). ``validator``: which carried IDs a worker accepts (the middleware's
    default). ``events``: ``JobEvents`` to log each job's start and end (None: none).
    ``registry``: an ``InFlightRegistry`` that lists running jobs (method ``JOB``, path the
    job's name).
    ``carry_deadline``: whether a job carries the enqueuing request's deadline and runs under
    it (off by default: a queued job usually outlives its request, and a job run after the
    deadline could make no outgoing call). When on, both sides cap it at ``max_budget``
    seconds from now, as ``DeadlineObserver`` caps an incoming header.
    ``log_buffer``: an ``aioreqctx.log.LogBuffer``; each job's DEBUG lines are
    written only if it fails (raises, logs an ERROR or runs longer than its ``slow_ms``).
    ``debug_on_demand``: an ``aioreqctx.log.DebugOnDemand``; a job queued by a request logged
    at DEBUG on demand is logged at DEBUG too, if its rule accepts the carried value.
    """

    context_keys: tuple[str, ...] = ()
    outside_request: Literal["skip", "generate"] = "skip"
    generator: Callable[[], str] = new_request_id
    validator: Callable[[str], bool] = is_valid_request_id
    events: JobEvents | None = None
    registry: Registry | None = None
    carry_deadline: bool = False
    max_budget: float = 300.0
    log_buffer: LogBuffer | None = None
    debug_on_demand: DebugOnDemand | None = None
    _generate: Callable[[], str] = field(init=False, repr=False)
    _validate: Callable[[str], bool] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        context_keys: object = self.context_keys
        if isinstance(context_keys, str) or not isinstance(context_keys, tuple | list):
            raise TypeError(
                f"context_keys must be a tuple of context keys, not {self.context_keys!r}"
            )
        for key in self.context_keys:
            if not isinstance(key, str) or not key:
                raise ValueError(f"context_keys: {key!r} is not a non-empty string")
        object.__setattr__(self, "context_keys", tuple(self.context_keys))
        if self.outside_request not in ("skip", "generate"):
            raise ValueError(
                f"outside_request must be 'skip' or 'generate', not {self.outside_request!r}"
            )
        for option in ("generator", "validator"):
            if not callable(getattr(self, option)):
                raise TypeError(f"{option} must be callable, not {getattr(self, option)!r}")
        # The same re-checks as the middleware's: a carried ID ends up in headers and log lines.
        object.__setattr__(self, "_generate", checked_generator(self.generator))
        object.__setattr__(self, "_validate", checked_validator(self.validator))
        if self.events is not None and not isinstance(self.events, JobEvents):
            raise TypeError(f"events must be a JobEvents or None, not {self.events!r}")
        if self.registry is not None and not isinstance(self.registry, Registry):
            raise TypeError(
                "registry must be an InFlightRegistry (or have its add() and remove()) or None, "
                f"not {self.registry!r}"
            )
        if type(self.carry_deadline) is not bool:
            raise TypeError(f"carry_deadline must be True or False, not {self.carry_deadline!r}")
        budget: object = self.max_budget
        if not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0:
            raise ValueError(
                f"max_budget must be a positive number of seconds, not {self.max_budget!r}"
            )
        if self.log_buffer is not None and not isinstance(self.log_buffer, LogBuffer):
            raise TypeError(
                f"log_buffer must be an aioreqctx.log.LogBuffer or None, not {self.log_buffer!r}"
            )
        if self.debug_on_demand is not None and not isinstance(self.debug_on_demand, DebugOnDemand):
            raise TypeError(
                "debug_on_demand must be an aioreqctx.log.DebugOnDemand or None, "
                f"not {self.debug_on_demand!r}"
            )

    def carrier(self) -> dict[str, str]:
        """What a job enqueued here and now carries (``{}`` outside a request with ``"skip"``)."""
        mapping = current_mapping.get(None)
        request_id = None if mapping is None else sendable_id(mapping.get(keys.REQUEST_ID))
        if request_id is None:
            if self.outside_request == "skip":
                return {}
            return {CARRIED_REQUEST_ID: self._generate()}
        assert mapping is not None
        carried = {CARRIED_REQUEST_ID: request_id}
        job_id = mapping.get(keys.JOB_ID)
        if job_id is not None:
            carried[CARRIED_PARENT_JOB_ID] = str(job_id)
        deadline = mapping.get(keys.DEADLINE) if self.carry_deadline else None
        if isinstance(deadline, int | float):
            left = min(deadline - time.monotonic(), self.max_budget)
            carried[CARRIED_DEADLINE] = format_deadline(left)
        debug = mapping.get(DEBUG_LOG)
        if debug is not None:
            carried[CARRIED_DEBUG_LOG] = debug
        for key in self.context_keys:
            value = mapping.get(key)
            if value is not None:
                carried[CARRIED_CONTEXT_PREFIX + key] = value if type(value) is str else str(value)
        return carried

    def job_scope(
        self,
        carrier: object,
        *,
        job_id: object,
        job_name: object,
        attempt: int = 1,
        retrying: tuple[type[BaseException], ...] = (),
    ) -> JobScope:
        """The context to run one job in: ``with`` / ``async with``, from a loop or a thread.

        ``carrier``: what the job carried (a mapping; other keys in it are ignored, so a
        queue's whole header dict will do; anything else counts as invalid). ``retrying``: the
        exception types by which the queue asks for a retry (logged as ``outcome=retry``).
        """
        return JobScope(
            self, carrier, job_id=job_id, job_name=job_name, attempt=attempt, retrying=retrying
        )


class JobScope(SyncOrAsync[Context]):
    """One job's fresh context (made by ``JobPropagation.job_scope``); yields its mapping.

    On exit the previous context comes back, the job leaves the registry and, with events,
    ``job_finished`` or ``job_failed`` is logged; an exception always propagates.
    """

    __slots__ = (
        "_attempt",
        "_buffering",
        "_carrier",
        "_job_id",
        "_job_name",
        "_mapping",
        "_own",
        "_propagation",
        "_retrying",
        "_scope",
    )

    def __init__(
        self,
        propagation: JobPropagation,
        carrier: object,
        *,
        job_id: object,
        job_name: object,
        attempt: int,
        retrying: tuple[type[BaseException], ...],
    ) -> None:
        self._propagation = propagation
        self._carrier = carrier
        self._job_id = job_id
        self._job_name = job_name
        self._attempt = attempt
        self._retrying = retrying
        self._scope: scope | None = None
        self._buffering: buffering | None = None
        self._mapping: Context = {}
        self._own: Mapping[str, Any] = {}

    def __enter__(self) -> Context:
        if self._scope is not None:
            raise RuntimeError("this job scope is already open; create a new one per job")
        seed, problems = self._seed()
        # The job's own bookkeeping, which its code cannot clear or overwrite (JobEvents reads it).
        self._own = own = MappingProxyType(dict(seed))
        self._scope = scope(seed)
        self._mapping = mapping = self._scope.__enter__()
        lines = self._lines_for(mapping)
        if lines is not None:
            self._buffering = buffering(lines)
            self._buffering.__enter__()
        propagation = self._propagation
        try:
            if propagation.registry is not None:
                propagation.registry.add(mapping, method="JOB", path=own[keys.JOB_NAME])
            with reported_if_failing("the start of job %s", own[keys.JOB_NAME]):
                if problems:  # logged inside the job's context: the line has the job's (new) ID
                    logger.warning(
                        "job %s (id %s): invalid carried %s ignored",
                        own[keys.JOB_NAME],
                        own[keys.JOB_ID],
                        "; ".join(f'{what} "{shown}"' for what, shown in problems),
                    )
                if propagation.events is not None:
                    propagation.events.started(own)
        except BaseException:  # nothing stays open: not the context, not the registry entry
            self._close()
            raise
        return mapping

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._scope is not None, "__exit__ without __enter__"
        try:
            self._log_end(exc)
        finally:
            self._close(exc)

    def ended_elsewhere(self, exc: BaseException | None) -> None:
        """End a job whose task finished without ``__exit__`` (a queue's hook that should have
        closed it never ran): log its end and leave the registry. Its context went with its
        task, so there is nothing to restore. Nothing happens if it is already closed."""
        if self._scope is None:
            return
        try:
            self._log_end(exc)
        finally:
            self._close(exc, restore=False)

    def _log_end(self, exc: BaseException | None) -> None:
        if self._propagation.events is not None:
            outcome, error = _outcome(exc, self._retrying)
            with reported_if_failing("the end of job %s", self._own[keys.JOB_NAME]):
                self._propagation.events.ended(self._own, outcome, error)

    def _close(self, exc: BaseException | None = None, *, restore: bool = True) -> None:
        """Leave the registry, write out or drop the job's kept lines (written if ``exc``), and
        (``restore``) put the previous context back."""
        assert self._scope is not None, "closing a job scope that is not open"
        open_scope, self._scope = self._scope, None
        try:
            if self._propagation.registry is not None:
                self._propagation.registry.remove(self._mapping)
            if self._buffering is not None:
                open_buffering, self._buffering = self._buffering, None
                open_buffering.end(failed=exc is not None, restore=restore)
        finally:
            if restore:
                open_scope.__exit__(None, None, None)

    def _lines_for(self, mapping: Context) -> Lines | None:
        """DEBUG at once for a job whose carried debug-on-demand value is believed, else the
        buffer (if configured)."""
        propagation = self._propagation
        debug = propagation.debug_on_demand
        if debug is not None and isinstance(self._carrier, Mapping):
            value = self._carrier.get(CARRIED_DEBUG_LOG)
            if value is not None and debug.accepts_carried(value):
                mapping[DEBUG_LOG] = value
                return debug.lines()
        return None if propagation.log_buffer is None else propagation.log_buffer.open()

    def _seed(self) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The job's first mapping, and what was wrong with the carrier (what, escaped value)."""
        problems: list[tuple[str, str]] = []
        carrier: Mapping[Any, Any] = {}
        if type(self._carrier) is dict or isinstance(self._carrier, Mapping):
            carrier = self._carrier
        elif self._carrier is not None:
            problems.append(("carrier", escaped(safe_text(self._carrier))))
        mapping: dict[str, Any] = {
            keys.REQUEST_ID: self._request_id(carrier, problems),
            keys.START_MONOTONIC: perf_counter(),
            keys.START_TIME: time.time(),
            keys.OPERATIONS: OperationTimings(),
            keys.JOB_ID: _shown(self._job_id),
            keys.JOB_NAME: _shown(self._job_name),
            keys.JOB_ATTEMPT: self._attempt,
        }
        if problems:
            mapping[keys.REJECTED_REQUEST_ID] = problems[-1][1]
        log_fields = {
            "job_id": mapping[keys.JOB_ID],
            "job_name": mapping[keys.JOB_NAME],
            "job_attempt": self._attempt,
        }
        parent = carrier.get(CARRIED_PARENT_JOB_ID)
        if isinstance(parent, str) and is_valid_request_id(parent):
            mapping[keys.PARENT_JOB_ID] = log_fields["parent_job_id"] = parent
        elif parent is not None:
            problems.append(("parent job ID", escaped(safe_text(parent))))
        raw_deadline = carrier.get(CARRIED_DEADLINE) if self._propagation.carry_deadline else None
        left = parse_deadline(raw_deadline) if isinstance(raw_deadline, str) else None
        if left is not None:
            mapping[keys.DEADLINE] = time.monotonic() + min(left, self._propagation.max_budget)
        elif raw_deadline is not None:
            problems.append(("deadline", escaped(safe_text(raw_deadline))))
        for key in self._propagation.context_keys:
            value = carrier.get(CARRIED_CONTEXT_PREFIX + key)
            if isinstance(value, str) and len(value) <= MAX_CARRIED_VALUE and value.isprintable():
                mapping[key] = value
            elif value is not None:
                problems.append((f"context key {key}", escaped(safe_text(value))))
        mapping[keys.METADATA] = log_fields  # every log line of the job carries them
        return mapping, problems

    def _request_id(self, carrier: Mapping[Any, Any], problems: list[tuple[str, str]]) -> str:
        """The carried ID if valid; a new one otherwise, noting the problem unless the job
        carried nothing of aioreqctx's at all (enqueued outside a request, or by a cron)."""
        raw = carrier.get(CARRIED_REQUEST_ID)
        if isinstance(raw, str) and self._propagation._validate(raw):
            return raw
        if problems or raw is not None or any(_is_carried(key) for key in carrier):
            problems.append(("request ID", escaped(safe_text(raw))))
        return self._propagation._generate()


def _is_carried(key: object) -> bool:
    return isinstance(key, str) and key.startswith(CARRIER_PREFIX)


def _shown(value: object) -> str:
    """A queue's job ID or name as safe text for the context and log lines: escaped."""
    return escaped(value if isinstance(value, str) else safe_text(value), limit=SHOWN_LIMIT)
