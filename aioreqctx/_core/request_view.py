"""``RequestContext``: the current request's context as typed attributes and methods.

The context itself stays the plain mapping that ``aioreqctx.get`` reads; a ``RequestContext``
only looks at it (no copy), so what it shows and what it adds are seen by every task that shares
the mapping. ccproxy users know the shape: ``request_id``, timing, metadata, metrics,
``log_event`` and ``to_dict``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import perf_counter
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from .. import keys
from .emit import EventSink, event_sink
from .jsonsafe import JsonValue, json_safe, safe_text
from .layered import note_write
from .store import Context, current_mapping
from .timing import OperationTimings

REQUESTS_LOGGER = "aioreqctx.requests"
"""The stdlib logger that request events and ``log_event`` write to unless told otherwise."""

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
        mapping = current_mapping.get(None)
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


def error_fields(error: BaseException, *, traceback: bool = True) -> dict[str, Any]:
    """What an event about ``error`` carries: its type, its message (the sink escapes it) and,
    unless told not to (a cancellation is no bug), its traceback as ``exc_info``."""
    fields: dict[str, Any] = {"error": type(error).__name__, "error_message": safe_text(error)}
    if traceback:
        fields["exc_info"] = error
    return fields


@runtime_checkable
class Registry(Protocol):
    """Where units of work are listed while they run: ``aioreqctx.InFlightRegistry`` is one.

    The job side types its ``registry=`` arguments with it, so that a worker does not import
    the aiohttp server to list its jobs.
    """

    def add(self, mapping: Context, *, method: str | None, path: str) -> None: ...

    def remove(self, mapping: Context) -> None: ...
