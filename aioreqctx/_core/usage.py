"""What a unit of work used of its dependencies: SQL queries, HTTP calls, jobs queued, warnings.

Each dependency's integration feeds one ``Usage`` per request (or job) under a name of its
own (``db_queries``, ``http_calls``, ``jobs``, ``log_warnings``, ``log_errors``): how many,
their total and slowest duration, how many failed. ``summary()`` flattens it into log fields
(``db_queries=3 db_queries_ms=4.2 db_queries_slowest_ms=2.0``) for the request's wide line.
A request that uses nothing pays nothing: the ``Usage`` is made on first use, on the
request's shared ``OperationTimings``, so every task and thread of the request adds to the
same one.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from .. import keys
from .store import current_mapping

NAME_LIMIT = 32
"""Names one unit of work keeps; later ones are dropped, so a bug cannot grow it unbounded."""

HTTP_CALLS = "http_calls"
"""Outgoing calls through ``ClientPropagation``; an error is a call that raised or got a 5xx."""
JOBS = "jobs"
"""Jobs queued (each ``JobPropagation.carrier()`` taken inside the unit of work)."""
LOG_WARNINGS = "log_warnings"
"""Log lines at WARNING, counted by the request-field filter, record factory or processor."""
LOG_ERRORS = "log_errors"
"""Log lines at ERROR or above, counted there too."""

_lock = threading.Lock()  # a read-modify-write per use: brief, and rare next to the I/O it counts


class Used(NamedTuple):
    """One name's totals: how many uses, their total and slowest milliseconds, how many failed."""

    uses: int
    total_ms: float
    slowest_ms: float
    errors: int


class Usage:
    """Per name: ``[count, total_ms, slowest_ms, errors]``; thread-safe."""

    __slots__ = ("_used",)

    def __init__(self) -> None:
        self._used: dict[str, list[float]] = {}

    def record(self, name: str, duration_ms: float | None = None, *, error: bool = False) -> None:
        """One more use of ``name``, which took ``duration_ms`` (None: not timed, e.g. a job
        queued) and failed if ``error``."""
        with _lock:
            used = self._used.get(name)
            if used is None:
                if len(self._used) >= NAME_LIMIT:
                    return
                used = self._used[name] = [0, 0.0, 0.0, 0]
            used[0] += 1
            if duration_ms is not None:
                used[1] += duration_ms
                used[2] = max(used[2], duration_ms)
            if error:
                used[3] += 1

    def count(self, name: str) -> int:
        with _lock:
            used = self._used.get(name)
            return 0 if used is None else int(used[0])

    def totals(self) -> dict[str, Used]:
        """Each name used, with its totals (a copy: the unit of work may still be adding)."""
        with _lock:
            used = [(name, tuple(values)) for name, values in self._used.items()]
        return {
            name: Used(int(count), round(total, 3), round(slowest, 3), int(errors))
            for name, (count, total, slowest, errors) in used
        }

    def summary(self) -> dict[str, int | float]:
        """``flat_usage(totals())``: the log fields."""
        return flat_usage(self.totals())


def flat_usage(totals: Mapping[str, Used]) -> dict[str, int | float]:
    """Flat fields: ``name`` (how many uses), ``name_ms``, ``name_slowest_ms`` and, when some
    failed, ``name_errors``."""
    fields: dict[str, int | float] = {}
    for name, used in totals.items():
        fields[name] = used.uses
        if used.total_ms or used.slowest_ms:
            fields[f"{name}_ms"] = used.total_ms
            fields[f"{name}_slowest_ms"] = used.slowest_ms
        if used.errors:
            fields[f"{name}_errors"] = used.errors
    return fields


class _HasUsage(Protocol):
    def usage(self) -> Usage: ...


def usage_of(mapping: Mapping[str, Any] | None) -> Usage | None:
    """The ``Usage`` of the unit of work whose context is ``mapping`` (made now if it had
    none), or None: no mapping, or one without operation timings."""
    holder: _HasUsage | None = None if mapping is None else mapping.get(keys.OPERATIONS)
    return None if holder is None else holder.usage()


def current_usage() -> Usage | None:
    """The running unit of work's ``Usage`` (made now if it had none), or None outside one."""
    return usage_of(current_mapping.get(None))
