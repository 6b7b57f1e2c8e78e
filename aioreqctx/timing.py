"""How long the current request has run, and named sub-operations timed inside it.

The durations come from ``time.perf_counter()`` (monotonic), never from wall-clock time.
Timed operations go into one ``OperationTimings`` per request that every task of the request
shares, even under ``copying_task_factory`` (deep copies keep it as it is), so a database call
timed in a child task still shows in the request's ``Server-Timing`` header.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, ParamSpec, TypeVar

from . import keys
from .dual import SyncOrAsync
from .store import current_mapping, get

P = ParamSpec("P")
R = TypeVar("R")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+\-.^_`|~]")


def elapsed_ms() -> float | None:
    """Milliseconds since the current request (or scope with a start time) began, or None."""
    start = get(keys.START_MONOTONIC)
    return None if start is None else (perf_counter() - start) * 1000.0


class OperationTimings:
    """The named durations of one request, shared by all of its tasks and threads.

    No lock: ``list.append`` and ``list(...)`` are atomic on CPython, with or without the GIL
    (free-threaded builds lock each list internally), and one is made per request.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[str, float]] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> OperationTimings:
        return self  # one record per request, whichever task copies the context

    def add(self, name: str, duration_ms: float) -> None:
        self._entries.append((name, duration_ms))

    def entries(self) -> list[tuple[str, float]]:
        return list(self._entries)


def server_timing_header(total_ms: float, operations: list[tuple[str, float]]) -> str:
    """A W3C ``Server-Timing`` value: ``total;dur=…`` then each operation, names as tokens."""
    parts = [f"total;dur={total_ms:.1f}"]
    parts += [f"{_NOT_TOKEN.sub('_', name) or '_'};dur={ms:.1f}" for name, ms in operations]
    return ", ".join(parts)


class timed_operation(SyncOrAsync["timed_operation"]):  # noqa: N801 - used like contextlib's lower-case context managers
    """Time a block or a function under ``name``; ``with``, ``async with`` or a decorator.

    The duration goes to the current request's operations (and so to its ``Server-Timing``
    header when that is on); outside a request it is only measured. ``last_ms`` holds it.
    """

    __slots__ = ("_started", "last_ms", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.last_ms: float | None = None
        self._started = 0.0

    def __enter__(self) -> timed_operation:
        self._started = perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.last_ms = (perf_counter() - self._started) * 1000.0
        mapping = current_mapping.get(None)
        timings = None if mapping is None else mapping.get(keys.OPERATIONS)
        if isinstance(timings, OperationTimings):
            timings.add(self.name, self.last_ms)

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
