"""One unit of work (a request, a job, a CLI command) and its context seen as typed attributes.

``unit_of_work()`` gives work that is no HTTP request the same correlation: an ID on every log
line, a duration, a start and an end event, a place in the in-flight registry. It opens a fresh
context (``aioreqctx.scope``) holding the keys the middleware sets (``start_values``), and
restores the previous context on exit, so units of work nest.

``RequestContext`` shows the current unit's context as typed attributes and methods. The
context itself stays the plain mapping that ``aioreqctx.get`` reads; a ``RequestContext`` only
looks at it (no copy), so what it shows and what it adds are seen by every task that shares
the mapping. ccproxy users know the shape: ``request_id``, timing, metadata, metrics,
``log_event`` and ``to_dict``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import perf_counter, time
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, runtime_checkable

from .. import keys
from .emit import (
    REQUESTS_LOGGER,
    EventSink,
    JsonValue,
    error_fields,
    event_sink,
    json_safe,
    logger,
    reported_if_failing,
    safe_text,
)
from .ids import escaped, is_valid_request_id, new_request_id
from .layered import note_write
from .store import Context, scope, task_mapping
from .sync_or_async import SyncOrAsync
from .timing import OperationTimings

START_KEYS = (keys.REQUEST_ID, keys.START_MONOTONIC, keys.START_TIME, keys.OPERATIONS)
"""The bookkeeping keys every unit of work starts with, in ``start_values``' order: the
middleware builds the same mapping inline (one call fewer per request) from this tuple."""


def start_values(request_id: str) -> dict[str, Any]:
    """A unit of work's first mapping: its ID, its start (``perf_counter()`` for durations,
    ``time()`` for the wall clock) and the ``OperationTimings`` all its tasks share."""
    return dict(
        zip(START_KEYS, (request_id, perf_counter(), time(), OperationTimings()), strict=True)
    )


_default_sink = event_sink(REQUESTS_LOGGER)


class RequestContext:
    """A typed view of one request's (or ``unit_of_work()`` job's) context mapping.

    Get the current one with ``RequestContext.current()``. Reading never raises: a value that
    is missing from the mapping reads as None (or 0.0 for durations).
    """

    __slots__ = ("_mapping", "_sink")

    def __init__(self, mapping: Context, *, logger: logging.Logger | str | Any = None) -> None:
        self._mapping = mapping
        self._sink: EventSink = _default_sink if logger is None else event_sink(logger)

    @classmethod
    def current(cls, *, logger: logging.Logger | str | Any = None) -> RequestContext | None:
        """The running request's context, or None outside one (or in a scope with no ID)."""
        mapping = task_mapping()
        if mapping is None or keys.REQUEST_ID not in mapping:
            return None
        return cls(mapping, logger=logger)

    @property
    def mapping(self) -> Context:
        """The context mapping itself, as ``aioreqctx.get`` sees it."""
        return self._mapping

    @property
    def request_id(self) -> str | None:
        value = self._mapping.get(keys.REQUEST_ID)
        return value if isinstance(value, str) else None

    @property
    def start_time(self) -> float | None:
        """Wall-clock start, seconds since the epoch (``time.time()``)."""
        value = self._mapping.get(keys.START_TIME)
        return float(value) if isinstance(value, int | float) else None

    @property
    def duration_seconds(self) -> float:
        """Seconds since the start, on the monotonic clock; 0.0 if the start is unknown."""
        start = self._mapping.get(keys.START_MONOTONIC)
        return perf_counter() - start if isinstance(start, int | float) else 0.0

    @property
    def duration_ms(self) -> float:
        return self.duration_seconds * 1000.0

    @property
    def metadata(self) -> Mapping[str, Any]:
        """What ``add_metadata`` added (read-only here; an empty mapping before the first)."""
        metadata = self._mapping.get(keys.METADATA)
        return MappingProxyType(metadata if isinstance(metadata, dict) else {})

    def add_metadata(self, **fields: Any) -> None:
        """Add fields to the request's metadata, which every later log line of it carries.

        The dict is created on first use, in the mapping this view looks at: tasks that share
        the mapping see the fields; a child made by ``copying_task_factory`` keeps its own.
        """
        metadata = self._mapping.get(keys.METADATA)
        if not isinstance(metadata, dict):
            metadata = self._mapping[keys.METADATA] = {}
            note_write(self._mapping)  # ChainMap children's cached views must show it
        metadata.update(fields)

    @property
    def timings(self) -> OperationTimings | None:
        """The request's timed operations and counters, shared by all of its tasks."""
        timings = self._mapping.get(keys.OPERATIONS)
        return timings if isinstance(timings, OperationTimings) else None

    def increment(self, name: str, by: float = 1) -> None:
        """Add ``by`` to the request's counter ``name`` (SQL queries, cache misses, ...)."""
        timings = self.timings
        if timings is None:
            timings = self._mapping[keys.OPERATIONS] = OperationTimings()
            note_write(self._mapping)
        timings.increment(name, by)

    @property
    def metrics(self) -> dict[str, Any]:
        """``{"counters": {name: value}, "operations": [{"name", "duration_ms"}, ...]}``."""
        timings = self.timings
        if timings is None:
            return {"counters": {}, "operations": []}
        operations = [{"name": name, "duration_ms": ms} for name, ms in timings.entries()]
        return {"counters": timings.counters(), "operations": operations}

    @property
    def usage(self) -> dict[str, int | float]:
        """What it used of its dependencies: ``{"db_queries": 3, "db_queries_ms": 4.2, ...}``
        (``aioreqctx.integrations.asyncpg`` and others feed it); empty if nothing."""
        timings = self.timings
        return {} if timings is None else timings.usage_summary()

    def log_event(self, event: str, /, level: int = logging.INFO, **fields: Any) -> None:
        """One structured line: ``event request_id=... duration_ms=...`` and ``fields``."""
        self.log(level, event, fields)

    def log(self, level: int, event: str, fields: Mapping[str, Any]) -> None:
        """``log_event`` with the fields as a mapping (any key, even ``level``)."""
        line = {"request_id": self.request_id, "duration_ms": round(self.duration_ms, 3)}
        self._sink(level, event, {**line, **fields})

    def to_dict(self) -> dict[str, JsonValue]:
        """Everything above as plain JSON data; never raises, whatever the metadata holds."""
        return {
            "request_id": json_safe(self._mapping.get(keys.REQUEST_ID)),
            "start_time": self.start_time,
            "duration_ms": self.duration_ms,
            "duration_seconds": self.duration_seconds,
            "metadata": json_safe(self.metadata),
            "metrics": json_safe(self.metrics),
        }

    def __repr__(self) -> str:
        return f"<RequestContext request_id={self.request_id!r}>"


@runtime_checkable
class Registry(Protocol):
    """Where units of work are listed while they run: ``aioreqctx.InFlightRegistry`` is one.

    The job side types its ``registry=`` arguments with it, so that a worker does not import
    the aiohttp server to list its jobs.
    """

    def add(self, mapping: Context, *, method: str | None, path: str) -> None: ...

    def remove(self, mapping: Context) -> None: ...


class unit_of_work(SyncOrAsync[RequestContext]):  # noqa: N801 - used like contextlib's lower-case context managers
    """Run a block as one unit of work with its own context; ``with`` or ``async with``.

    ``request_id``: the ID to use (from a queue message, say); checked like an incoming header
    (``is_valid_request_id``): an invalid one is replaced by a new UUID4 and kept, escaped,
    under ``REJECTED_REQUEST_ID``. None (default) makes a new one.
    ``name``: what the work is, shown in events and in the registry's ``path``.
    ``logger``: where ``request_start`` / ``request_success`` / ``request_error`` go (the names
    ccproxy uses; ``aioreqctx.requests`` by default; a stdlib or structlog logger).
    ``registry``: an ``InFlightRegistry`` to list the work in while it runs.
    ``metadata``: initial ``add_metadata`` fields, carried by every log line of the work.

    Yields the ``RequestContext``. An exception is logged (ERROR, with its traceback; a
    cancellation or other ``BaseException`` at WARNING without one) and propagates.
    """

    __slots__ = ("_context", "_logger", "_metadata", "_name", "_registry", "_request_id", "_scope")

    def __init__(
        self,
        request_id: str | None = None,
        *,
        name: str = "job",
        logger: logging.Logger | str | Any = None,
        registry: Registry | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._request_id = request_id
        self._name = name
        self._logger = logger
        self._registry = registry
        self._metadata = dict(metadata or {})
        self._scope: scope | None = None
        self._context: RequestContext | None = None

    def __enter__(self) -> RequestContext:
        if self._scope is not None:
            raise RuntimeError("this unit_of_work is already open; create a new one per use")
        request_id = self._request_id
        if isinstance(request_id, str) and is_valid_request_id(request_id):
            values = start_values(request_id)
        else:
            values = start_values(new_request_id())
            if request_id is not None:
                values[keys.REJECTED_REQUEST_ID] = escaped(safe_text(self._request_id))
                logger.warning(
                    'unit_of_work(%s): invalid request_id "%s" replaced',
                    escaped(self._name),
                    values[keys.REJECTED_REQUEST_ID],
                )
        if self._metadata:
            values[keys.METADATA] = dict(self._metadata)
        self._scope = scope(values)
        mapping = self._scope.__enter__()
        self._context = context = RequestContext(mapping, logger=self._logger)
        try:
            if self._registry is not None:
                self._registry.add(mapping, method=None, path=self._name)
            with reported_if_failing("the start of %s", self._name):
                context.log(logging.INFO, "request_start", {"name": self._name, **self._metadata})
        except BaseException:  # nothing stays open: not the context, not the registry entry
            self._close(context)
            raise
        return context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._scope is not None, "__exit__ without __enter__"
        assert self._context is not None, "__exit__ without __enter__"
        context, self._context = self._context, None
        fields: dict[str, Any] = {"name": self._name}
        try:
            with reported_if_failing("the end of %s", self._name):
                if exc is None:
                    context.log(logging.INFO, "request_success", fields)
                else:  # a cancellation (or any BaseException) is no bug: no traceback
                    is_bug = isinstance(exc, Exception)
                    fields.update(error_fields(exc, traceback=is_bug))
                    level = logging.ERROR if is_bug else logging.WARNING
                    context.log(level, "request_error", fields)
        finally:
            self._close(context)

    def _close(self, context: RequestContext) -> None:
        """Leave the registry and restore the previous context."""
        assert self._scope is not None, "closing a unit_of_work that is not open"
        open_scope, self._scope, self._context = self._scope, None, None
        if self._registry is not None:
            self._registry.remove(context.mapping)
        open_scope.__exit__(None, None, None)
