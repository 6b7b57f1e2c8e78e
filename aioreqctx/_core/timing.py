"""How long the current request has run, and named sub-operations timed inside it.

The durations come from ``time.perf_counter()`` (monotonic), never from wall-clock time.
Timed operations go into one ``OperationTimings`` per request that every task of the request
shares, even under ``copying_task_factory`` (deep copies keep it as it is), so a database call
timed in a child task still shows in the request's ``Server-Timing`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import re
import threading
import weakref
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from .. import keys
from .emit import OPERATIONS_LOGGER, event_sink
from .snapshot import shared_when_copied
from .store import current_mapping, get, running_task
from .sync_or_async import SyncOrAsync
from .usage import Usage, Used

P = ParamSpec("P")
R = TypeVar("R")
_NOT_FIELD = re.compile(r"[^A-Za-z0-9_]")
_operation_logger = logging.getLogger(OPERATIONS_LOGGER)
_log_operation = event_sink(_operation_logger)
_counter_lock = threading.Lock()  # counters are rare and brief: one lock for every request

ENTRY_LIMIT = 1000
"""Timed operations one request keeps; later ones are only counted (``dropped``), so a
long-running job that times a loop cannot grow without bound."""
NAME_LIMIT = 64
"""Operation names are cut to this many characters wherever they are written out."""
SUMMARY_OPERATIONS = 8
"""Timed operation names a request's summary lists (``op_<name>_ms``): the slowest, the rest
summed as ``op_other_ms``, so a line stays short whatever the code times."""


def elapsed_ms() -> float | None:
    """Milliseconds since the current request (or scope with a start time) began, or None."""
    start = get(keys.START_MONOTONIC)
    return None if start is None else (perf_counter() - start) * 1000.0


@shared_when_copied
class OperationTimings:
    """The named durations, running operations and counters of one request, shared by all of
    its tasks and threads.

    One is made for every request and most requests time nothing, so it is built empty (no
    ``__init__``): each part is created on first use, under a lock. After that, durations and
    running operations need no lock: ``list.append``, ``list.remove`` and ``list(...)`` are
    atomic on CPython, with or without the GIL (free-threaded builds lock each list
    internally). Counters read-modify-write, so they lock.
    """

    __slots__ = ("_counters", "_dropped", "_entries", "_running", "_usage")
    _entries: list[tuple[str, float]]
    _running: list[str]
    _counters: dict[str, float]
    _dropped: int
    _usage: Usage

    def __deepcopy__(self, memo: dict[int, Any]) -> OperationTimings:
        return self  # one record per request, whichever task copies the context

    def _part(self, name: str, kind: type[Any]) -> Any:
        """The part in slot ``name``, made now (once, whichever thread asks first) if need be."""
        with _counter_lock:
            try:
                return getattr(self, name)
            except AttributeError:
                part = kind()
                setattr(self, name, part)
                return part

    @property
    def dropped(self) -> int:
        """Operations timed after the first ``ENTRY_LIMIT``, counted but not kept."""
        return getattr(self, "_dropped", 0)

    def add(self, name: str, duration_ms: float) -> None:
        try:
            entries = self._entries
        except AttributeError:
            entries = self._part("_entries", list)
        if len(entries) < ENTRY_LIMIT:
            entries.append((name, duration_ms))
        else:
            with _counter_lock:
                self._dropped = self.dropped + 1

    def entries(self) -> list[tuple[str, float]]:
        return list(getattr(self, "_entries", ()))

    def started(self, name: str) -> None:
        """``name`` is running now (``timed_operation`` calls this and ``finished``)."""
        try:
            running = self._running
        except AttributeError:
            running = self._part("_running", list)
        running.append(name)

    def finished(self, name: str) -> None:
        with contextlib.suppress(AttributeError, ValueError):
            self._running.remove(name)

    def current_operation(self) -> str | None:
        """The most recently started operation still running, for the in-flight registry."""
        running = list(getattr(self, "_running", ()))
        return running[-1] if running else None

    def increment(self, name: str, by: float = 1) -> None:
        with _counter_lock:
            try:
                counters = self._counters
            except AttributeError:
                counters = self._counters = {}
            counters[name] = counters.get(name, 0) + by

    def counters(self) -> dict[str, float]:
        with _counter_lock:
            return dict(getattr(self, "_counters", {}))

    def usage(self) -> Usage:
        """What the request used of its dependencies (SQL, HTTP, ...), made on first use."""
        try:
            return self._usage
        except AttributeError:
            usage: Usage = self._part("_usage", Usage)
            return usage

    def usage_summary(self) -> dict[str, int | float]:
        """``usage().summary()``, without making one for a request that used nothing."""
        usage: Usage | None = getattr(self, "_usage", None)
        return {} if usage is None else usage.summary()

    def usage_totals(self) -> dict[str, Used]:
        """``usage().totals()``, without making one for a request that used nothing."""
        usage: Usage | None = getattr(self, "_usage", None)
        return {} if usage is None else usage.totals()

    def summary(self) -> dict[str, int | float]:
        """The wide event's fields: what the request used (``usage_summary()``) and the total
        milliseconds of each timed operation name (``op_<name>_ms``, at most
        ``SUMMARY_OPERATIONS`` of them); ``{}`` for a request that did neither."""
        fields = self.usage_summary()
        entries = self.entries()
        if entries:
            kept, rest = by_name(entries, _NOT_FIELD, SUMMARY_OPERATIONS)
            for name, ms in kept:
                fields[f"op_{name}_ms"] = round(ms, 3)
            if rest:
                fields["op_other_ms"] = round(sum(rest), 3)
        return fields

    def server_timing_entries(self) -> list[tuple[str, float]]:
        """What ``Server-Timing`` shows: the timed dependencies (``db_queries``, ``http_calls``)
        and the timed operations."""
        used = [(name, u.total_ms) for name, u in self.usage_totals().items() if u.total_ms]
        return used + self.entries() if used else self.entries()


def by_name(
    operations: list[tuple[str, float]], not_allowed: re.Pattern[str], limit: int
) -> tuple[list[tuple[str, float]], list[float]]:
    """Repeats of a name summed (names cut to ``NAME_LIMIT``, characters
    ``not_allowed`` replaced by ``_``); beyond ``limit`` names, the slowest ``limit - 1`` in
    order of first appearance, and the totals of the rest."""
    merged: dict[str, float] = {}
    for name, ms in operations:
        token = not_allowed.sub("_", name[:NAME_LIMIT]) or "_"
        merged[token] = merged.get(token, 0.0) + ms
    if len(merged) <= limit:
        return list(merged.items()), []
    slowest = set(sorted(merged, key=merged.__getitem__, reverse=True)[: limit - 1])
    kept = [(token, ms) for token, ms in merged.items() if token in slowest]
    return kept, [ms for token, ms in merged.items() if token not in slowest]


_Use = tuple[float, "OperationTimings | None"]
"""One open use of a ``timed_operation``: when it started, and the timings it adds to."""


def _user() -> object:
    """Who is timing: the running task, or the thread outside any task."""
    return running_task() or threading.current_thread()


def _gone(user: object) -> bool:
    """Whether ``user`` can no longer close its own use: a finished task or a dead thread."""
    return user.done() if isinstance(user, asyncio.Task) else not user.is_alive()  # type: ignore[attr-defined]


class timed_operation(SyncOrAsync["timed_operation"]):  # noqa: N801 - used like contextlib's lower-case context managers
    """Time a block or a function under ``name``; ``with``, ``async with`` or a decorator.

    The duration goes to the current request's operations (and so to its ``Server-Timing``
    header when that is on), and while the block runs it is the request's current operation
    (shown by the in-flight registry); outside a request it is only measured. ``last_ms`` holds
    it. Each one is also a DEBUG ``operation_finished`` event on the ``aioreqctx.operations``
    logger (nothing is built when DEBUG is off there). One instance may be shared (a
    module-level ``DB = timed_operation("db")``): concurrent uses are timed apart.
    """

    __slots__ = ("_open", "last_ms", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_ms: float | None = None
        # Per use, not per instance: a module-level ``DB = timed_operation("db")`` is entered by
        # many requests at once. Each task (or thread) keeps its own stack of open uses.
        # Held weakly: a use never closed (an async generator never finalised) must not keep
        # its task, and so its request, alive.
        self._open: weakref.WeakKeyDictionary[object, list[_Use]] = weakref.WeakKeyDictionary()

    def __enter__(self) -> timed_operation:
        mapping = current_mapping.get(None)
        timings = None if mapping is None else mapping.get(keys.OPERATIONS)
        if isinstance(timings, OperationTimings):
            timings.started(self.name)
        else:
            timings = None
        self._open.setdefault(_user(), []).append((perf_counter(), timings))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        user = _user()
        if user not in self._open:  # closed by another task (see _opened_elsewhere)
            user = self._opened_elsewhere()
        uses = self._open[user]
        started, timings = uses.pop()
        if not uses:
            del self._open[user]
        self.last_ms = (perf_counter() - started) * 1000.0
        if timings is not None:
            timings.finished(self.name)
            timings.add(self.name, self.last_ms)
        if _operation_logger.isEnabledFor(logging.DEBUG):
            fields: dict[str, Any] = {"request_id": get(keys.REQUEST_ID), "name": self.name}
            fields["duration_ms"] = round(self.last_ms, 3)
            if exc_type is not None:
                fields["error"] = exc_type.__name__
            _log_operation(logging.DEBUG, "operation_finished", fields)

    def _opened_elsewhere(self) -> object:
        """Who opened the use that the running task or thread closes without having opened
        it: an abandoned async generator finalised by the loop, a fixture torn down in another
        task than its set-up. That is a task that has finished (or a thread that has ended)
        with a use still open; failing that, the one that opened the latest use."""
        users = list(self._open.items())
        if not users:
            raise RuntimeError(f"timed_operation({self.name!r}) closed more often than opened")
        finished = [user for user, _ in users if _gone(user)]
        if finished:
            return finished[-1]
        return max(users, key=lambda entry: entry[1][-1][0])[0]

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``func`` (sync or async): each call is timed as a fresh operation."""
        if inspect.iscoroutinefunction(func):
            async_func: Callable[P, Awaitable[Any]] = func

            @functools.wraps(func)
            async def timed_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with timed_operation(self.name):
                    return await async_func(*args, **kwargs)

            return timed_async  # type: ignore[return-value,unused-ignore]

        @functools.wraps(func)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            with timed_operation(self.name):
                return func(*args, **kwargs)

        return timed
