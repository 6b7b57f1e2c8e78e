"""Ready-made lifecycle collectors: a thread-safe buffer and a structured logger.

Unlike Pounce's, the buffer never calls its callback while holding its lock (a slow callback
would stall every thread, and one that records would deadlock), and the logger checks the
level before it builds anything and stamps wall-clock times from ``time.time_ns()``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

from ._core.emit import event_sink
from .events import (
    ClientDisconnected,
    ConnectionCompleted,
    ConnectionOpened,
    LifecycleEvent,
    RequestStarted,
    ResponseCompleted,
)

logger = logging.getLogger("aioreqctx")

DEFAULT_BUFFER_SIZE = 1000
"""``BufferedCollector``'s default bound, in events (two or three per request)."""


class BufferedCollector:
    """Keeps events for batch processing; thread-safe, and bounded unless told otherwise.

    ``flush()`` takes the events so far. Reaching ``max_buffer_size`` (default 1000) hands the
    batch to ``on_flush`` if given; without one, each new event pushes out the oldest, counted
    in ``dropped`` (the first drop is logged once, WARNING). ``max_buffer_size=0`` means
    unbounded: only for a buffer something flushes often. The callback runs outside the lock,
    in the thread that recorded the last event, so batches from different threads may reach
    it concurrently; its errors are logged.
    """

    __slots__ = ("_events", "_lock", "dropped", "max_buffer_size", "on_flush")

    def __init__(
        self,
        *,
        max_buffer_size: int = DEFAULT_BUFFER_SIZE,
        on_flush: Callable[[list[LifecycleEvent]], None] | None = None,
    ) -> None:
        if not isinstance(max_buffer_size, int) or max_buffer_size < 0:
            raise ValueError(
                f"max_buffer_size must be 0 (unbounded) or a positive int, not {max_buffer_size!r}"
            )
        if on_flush is not None and not callable(on_flush):
            raise TypeError(f"on_flush must be callable or None, not {on_flush!r}")
        self.max_buffer_size = max_buffer_size
        self.on_flush = on_flush
        self.dropped = 0
        """Events pushed out of a full buffer that has no ``on_flush``."""
        self._events: list[LifecycleEvent] = []
        self._lock = threading.Lock()

    def record(self, event: LifecycleEvent) -> None:
        if self.on_flush is None:
            self._keep_newest(event)
            return
        with self._lock:
            self._events.append(event)
            if not self.max_buffer_size or len(self._events) < self.max_buffer_size:
                return
            batch, self._events = self._events, []
        try:
            self.on_flush(batch)
        except Exception:
            logger.exception("BufferedCollector on_flush callback failed")

    def _keep_newest(self, event: LifecycleEvent) -> None:
        with self._lock:
            self._events.append(event)
            if not self.max_buffer_size or len(self._events) <= self.max_buffer_size:
                return
            del self._events[0]
            self.dropped += 1
            if self.dropped > 1:
                return
        logger.warning(
            "BufferedCollector is full (max_buffer_size=%d) and has no on_flush; "
            "the oldest events are dropped from now on (counted in .dropped)",
            self.max_buffer_size,
        )

    def flush(self) -> list[LifecycleEvent]:
        """The events recorded since the last flush, oldest first; the buffer is emptied."""
        with self._lock:
            batch, self._events = self._events, []
        return batch

    def __len__(self) -> int:
        return len(self._events)


_LEVELS: dict[type[Any], int] = {
    ConnectionOpened: logging.DEBUG,
    RequestStarted: logging.DEBUG,
    ResponseCompleted: logging.DEBUG,
    ClientDisconnected: logging.WARNING,
    ConnectionCompleted: logging.DEBUG,
}
_NAMES: dict[type[Any], tuple[str, tuple[str, ...]]] = {
    kind: (
        "".join(f"_{c.lower()}" if c.isupper() else c for c in kind.__name__).lstrip("_"),
        tuple(f.name for f in fields(kind) if f.name != "wall_time_ns"),
    )
    for kind in _LEVELS
}


class LoggingCollector:
    """Logs each event as one line to ``logger`` (default ``aioreqctx.lifecycle``).

    Levels: DEBUG for connection and request events, INFO for a response slower than
    ``slow_request_threshold_ms``, WARNING for a client disconnect. ``log_format="json"``
    writes a JSON object per line, ``"text"`` an escaped ``event key=value`` line (with the
    fields also on the record). Requests to ``health_check_path``
    are left out (start and completion). Nothing is built for a filtered-out level.
    """

    __slots__ = ("_json", "_logger", "_sink", "health_check_path", "slow_request_threshold_ms")

    def __init__(
        self,
        *,
        slow_request_threshold_ms: float = 5000.0,
        log_format: Literal["json", "text"] = "json",
        health_check_path: str | None = None,
        logger: logging.Logger | str = "aioreqctx.lifecycle",
    ) -> None:
        if log_format not in ("json", "text"):
            raise ValueError(f"log_format must be 'json' or 'text', not {log_format!r}")
        if not isinstance(slow_request_threshold_ms, int | float) or slow_request_threshold_ms < 0:
            raise ValueError(
                "slow_request_threshold_ms must be a number >= 0, "
                f"not {slow_request_threshold_ms!r}"
            )
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger or a logger name, not {logger!r}")
        self.slow_request_threshold_ms = float(slow_request_threshold_ms)
        self.health_check_path = health_check_path
        self._logger = logger
        self._json = log_format == "json"
        self._sink = event_sink(logger)

    def wants(self, kind: type[LifecycleEvent]) -> bool:
        """Whether the logger's level lets through any event of ``kind`` (slow ones: INFO)."""
        level = logging.INFO if kind is ResponseCompleted else _LEVELS[kind]
        return self._logger.isEnabledFor(level)

    def record(self, event: LifecycleEvent) -> None:
        level = _LEVELS[type(event)]
        if (
            isinstance(event, ResponseCompleted)
            and event.duration_ms >= self.slow_request_threshold_ms
        ):
            level = logging.INFO
        if not self._logger.isEnabledFor(level):
            return
        if (
            self.health_check_path is not None
            and isinstance(event, RequestStarted | ResponseCompleted)
            and event.path == self.health_check_path
        ):
            return
        name, names = _NAMES[type(event)]
        values: dict[str, Any] = {"time": _iso_time(event.wall_time_ns)}
        values.update((key, getattr(event, key)) for key in names)
        if self._json:  # the fields also on the record, as the text format has them
            line = json.dumps({"event": name, **values})
            self._logger.log(level, "%s", line, extra={"event": name, "event_fields": values})
        else:
            self._sink(level, name, values)


def _iso_time(wall_time_ns: int) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2025-01-31T12:00:00.123456Z``."""
    seconds, nanoseconds = divmod(wall_time_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanoseconds // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
