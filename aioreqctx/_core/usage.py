"""What a unit of work used of its dependencies: SQL queries, HTTP calls, jobs queued, warnings.

Each dependency's integration feeds one ``Usage`` per request (or job) under a name of its
own (``db_queries``, ``http_calls``, ...): how many, their total and slowest duration, how many
failed. ``summary()`` flattens it into log fields (``db_queries=3 db_queries_ms=4.2
db_queries_slowest_ms=2.0``) for the request's wide line. A request that uses nothing pays
nothing: the ``Usage`` is made on first use, on the request's shared ``OperationTimings``, so
every task and thread of the request adds to the same one.
"""

from __future__ import annotations

import threading
from typing import Protocol

from .. import keys
from .store import current_mapping

NAME_LIMIT = 32
"""Names one unit of work keeps; later ones are dropped, so a bug cannot grow it unbounded."""

_lock = threading.Lock()  # a read-modify-write per use: brief, and rare next to the I/O it counts


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

    def summary(self) -> dict[str, int | float]:
        """Flat fields: ``name`` (count), ``name_ms``, ``name_slowest_ms`` and, when some
        failed, ``name_errors``; only the names that were used."""
        with _lock:
            used = {name: list(values) for name, values in self._used.items()}
        fields: dict[str, int | float] = {}
        for name, (count, total, slowest, errors) in used.items():
            fields[name] = int(count)
            if total or slowest:
                fields[f"{name}_ms"] = round(total, 3)
                fields[f"{name}_slowest_ms"] = round(slowest, 3)
            if errors:
                fields[f"{name}_errors"] = int(errors)
        return fields


class _HasUsage(Protocol):
    def usage(self) -> Usage: ...


def current_usage() -> Usage | None:
    """The running unit of work's ``Usage`` (made now if it had none), or None outside one."""
    mapping = current_mapping.get(None)
    holder: _HasUsage | None = None if mapping is None else mapping.get(keys.OPERATIONS)
    return None if holder is None else holder.usage()
