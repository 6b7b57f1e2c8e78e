"""Lifecycle events: what a server did per connection and per request, as typed records.

Modelled on Pounce's lifecycle API (platform notes §5), with its flaws fixed: request events
carry the request ID, every event has a wall-clock time read from ``time.time_ns()`` (a
monotonic clock cannot be converted to wall time), and ``timestamp_ns`` is monotonic, for
ordering and durations. Events are frozen and slotted: cheap to build, safe to hand to
collectors on other threads.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic_ns, time_ns
from typing import TYPE_CHECKING, Protocol, TypeAlias, runtime_checkable

from ._core.lazy import lazy_names

if TYPE_CHECKING:  # the collectors, which build on these records, are read on first use
    from ._collectors import BufferedCollector, LoggingCollector


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    connection_id: int
    worker_id: int
    timestamp_ns: int = field(default_factory=monotonic_ns)
    """``time.monotonic_ns()`` when it happened: orders events, never a wall-clock time."""
    wall_time_ns: int = field(default_factory=time_ns)
    """``time.time_ns()`` when it happened: nanoseconds since the epoch."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionOpened(_Event):
    """A TCP (or Unix-socket) connection was accepted."""

    client_addr: str
    client_port: int
    server_addr: str
    server_port: int
    protocol: str
    """``"http"`` or ``"https"``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestStarted(_Event):
    """A request reached the application (its context is open)."""

    request_id: str
    method: str
    path: str
    http_version: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCompleted(_Event):
    """A response was written to the end; ``bytes_sent`` counts its headers and body."""

    request_id: str
    method: str
    path: str
    status: int
    bytes_sent: int
    duration_ms: float
    streaming: bool
    """The handler prepared it itself (``StreamResponse``, WebSocket) before returning it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientDisconnected(_Event):
    """The client went away before its response was complete."""

    request_id: str | None
    """The request in progress, None when the connection was idle."""
    during_streaming: bool
    """Part of the response (at least its headers) had been sent already."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionCompleted(_Event):
    """The connection is closed, by either side."""

    requests_served: int
    """Responses written to the end (``ResponseCompleted`` events) on this connection."""
    total_bytes_sent: int
    duration_ms: float
    reason: str
    """``complete``, ``client_disconnect``, ``timeout`` (idle keep-alive) or ``error``."""


LifecycleEvent: TypeAlias = (
    ConnectionOpened | RequestStarted | ResponseCompleted | ClientDisconnected | ConnectionCompleted
)
"""Any of the five events a ``LifecycleCollector`` records, for a ``record`` matching on them."""


@runtime_checkable
class LifecycleCollector(Protocol):
    """Receives every lifecycle event; a plain function ``fn(event)`` works too.

    ``record`` must be thread-safe (free-threaded Python runs servers on several threads) and
    quick: it runs on the server's event loop, once per event. A collector may also have
    ``wants(event_type) -> bool``: asked before each event is built, False skips building
    it (how ``LoggingCollector`` costs next to nothing when its level is filtered out).
    """

    def record(self, event: LifecycleEvent) -> None: ...


class NoopCollector:
    """The default: discards everything. ``setup()`` given it installs no hooks at all."""

    __slots__ = ()

    def record(self, event: LifecycleEvent) -> None:
        pass


class _FunctionCollector:
    __slots__ = ("record",)

    def __init__(self, function: Callable[[LifecycleEvent], None]) -> None:
        self.record = function


def as_collector(
    collector: LifecycleCollector | Callable[[LifecycleEvent], None] | None,
) -> LifecycleCollector:
    """``collector`` as a ``LifecycleCollector``: None is the ``NoopCollector``."""
    if collector is None:
        return NoopCollector()
    if callable(getattr(collector, "record", None)):
        return collector  # type: ignore[return-value]
    if callable(collector):
        return _FunctionCollector(collector)
    raise TypeError(
        f"{collector!r} is not a lifecycle collector: pass an object with a record(event) "
        "method or a function taking one event"
    )


_connection_ids = itertools.count(1)

if getattr(sys, "_is_gil_enabled", lambda: True)():

    def next_connection_id() -> int:
        """A process-unique connection ID (``next`` on a count is atomic under the GIL)."""
        return next(_connection_ids)

else:  # pragma: no cover - free-threaded builds only
    _connection_ids_lock = threading.Lock()

    def next_connection_id() -> int:
        """A process-unique connection ID (free-threaded build: the count needs a lock)."""
        with _connection_ids_lock:
            return next(_connection_ids)


def default_worker_id() -> int:
    """This process's ID: tells gunicorn's workers (or any forked servers) apart."""
    return os.getpid()


__all__ = (
    "BufferedCollector",
    "ClientDisconnected",
    "ConnectionCompleted",
    "ConnectionOpened",
    "LifecycleCollector",
    "LifecycleEvent",
    "LoggingCollector",
    "NoopCollector",
    "RequestStarted",
    "ResponseCompleted",
)

__getattr__, __dir__ = lazy_names(
    __name__, {"._collectors": ("BufferedCollector", "LoggingCollector")}
)
