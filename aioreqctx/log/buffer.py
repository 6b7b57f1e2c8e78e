"""Per-request log buffering: a request's DEBUG lines, written only when the request fails.

A request (or job) that buffers has a ``RequestLines`` in ``active_lines``, a ContextVar, so
its child tasks and the executor threads started with ``aioreqctx.run_in_executor`` add to the
same buffer. A line below the level the loggers emit is kept only while such a buffer is
current; the check happens where each framework decides whether to build a line at all:

* stdlib: ``Logger.isEnabledFor``, which every ``log.debug(...)`` consults before a
  ``LogRecord`` is made. ``install_stdlib_hook`` wraps it (and ``Logger.handle``, which diverts
  the record into the buffer); outside a buffering request the wrapper adds one ContextVar
  lookup to a disabled call, and with no ``LogBuffer`` configured nothing is wrapped at all.
* structlog: ``buffering_bound_logger(level)``, used as ``wrapper_class`` in place of
  ``make_filtering_bound_logger(level)``; its below-level methods look at the ContextVar before
  an event dict exists. The stdlib bridge (``structlog.stdlib.BoundLogger`` with
  ``filter_by_level``) goes through the stdlib hook.

Each kept line is stored ready to write (stdlib: the record with its message formatted; structlog:
the renderer's output), with the ``contextvars.Context`` it was logged in, so a flushed line has
its original timestamp and the fields it would have had. A flush writes them in order, each
marked ``buffered=True``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from .tracebacks import format_exception

logger = logging.getLogger("aioreqctx")

_RECORD_BYTES = 500
"""What a kept stdlib record costs besides its message (its ``__dict__``, its context)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class LogBuffer:
    """Buffer each request's low-level lines; write them only if the request fails.

    ``level``: the lowest level kept (lines below it are never built). ``max_lines``: the most
    lines one request keeps; beyond it the oldest are dropped. ``max_bytes_total``: about how
    many bytes all buffering requests of this ``LogBuffer`` may hold at once. A request keeps
    its first lines: once either limit is reached its further lines are counted, never built.
    ``slow_ms``: a request that runs longer than this many
    milliseconds counts as failed (None: duration alone never flushes). Dropped lines are
    counted (``dropped_lines``) and reported by one WARNING per flushed request.
    """

    level: int = logging.DEBUG
    max_lines: int = 1000
    max_bytes_total: int = 16 * 1024 * 1024
    slow_ms: float | None = None
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    _held: list[int] = field(init=False, repr=False, default_factory=lambda: [0, 0])

    def __post_init__(self) -> None:
        for option in ("level", "max_lines", "max_bytes_total"):
            value = getattr(self, option)
            if type(value) is not int or value <= 0:
                raise ValueError(f"LogBuffer: {option} must be a positive int, not {value!r}")
        if self.slow_ms is not None and (
            type(self.slow_ms) not in (int, float) or not self.slow_ms > 0
        ):
            raise ValueError(
                f"LogBuffer: slow_ms must be a positive number or None, not {self.slow_ms!r}"
            )

    @property
    def bytes_held(self) -> int:
        """About how many bytes the buffering requests hold now."""
        return self._held[0]

    @property
    def dropped_lines(self) -> int:
        """Lines dropped for lack of room since this ``LogBuffer`` was made."""
        return self._held[1]

    def open(self) -> RequestLines:
        """A new, empty buffer for one request or job."""
        return RequestLines(self)


Emit = Callable[..., object]
_Line = tuple[contextvars.Context, Emit, tuple[Any, ...], int]


class RequestLines:
    """One request's kept lines; shared by its tasks and threads (appends take a lock)."""

    __slots__ = ("_lines", "closed", "config", "dropped", "failed", "level", "started")
    direct = False  # lines are kept, not written as they come

    def __init__(self, config: LogBuffer) -> None:
        self.config = config
        self.level = config.level
        self.started = perf_counter()
        self._lines: deque[_Line] = deque()
        self.dropped = 0
        self.failed = False
        self.closed = False

    def wants(self, level: int) -> bool:
        """Whether a line at ``level`` that the loggers would not emit is to be built.

        A full buffer says no, and counts the line as dropped: a runaway loop costs a level
        check per line, never a record, so the request keeps its first lines.
        """
        if level < self.level or self.closed:
            return False
        if self.failed or self._has_room(0):
            return True
        with self.config._lock:
            self._drop()
        return False

    def _has_room(self, size: int) -> bool:
        config = self.config
        return (
            len(self._lines) < config.max_lines and config._held[0] + size <= config.max_bytes_total
        )

    def keep(self, emit: Emit, args: tuple[Any, ...], size: int) -> None:
        """Keep ``emit(*args)`` for a flush; once the request has failed it runs now."""
        if self.failed:
            emit(*args)
            return
        line = (contextvars.copy_context(), emit, args, size)
        with self.config._lock:
            if self._has_room(size):
                self._lines.append(line)
                self.config._held[0] += size
            else:
                self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        self.config._held[1] += 1

    def fail(self) -> None:
        """The request failed: write what it kept, and from now on write its lines at once."""
        if not self.failed:
            self.failed = True
            self._write()

    def close(self, *, failed: bool) -> None:
        """The request ended: write its lines if it failed or ran too long, else drop them."""
        slow_ms = self.config.slow_ms
        if not failed and slow_ms is not None:
            failed = (perf_counter() - self.started) * 1000.0 > slow_ms
        if failed:
            self.fail()
        self.closed = True
        with self.config._lock:
            self.config._held[0] -= sum(line[3] for line in self._lines)
            self._lines.clear()

    def _write(self) -> None:
        with self.config._lock:
            lines = list(self._lines)
            self._lines.clear()
            self.config._held[0] -= sum(line[3] for line in lines)
            dropped, self.dropped = self.dropped, 0
        if dropped:
            logger.warning(
                "%d buffered lines dropped (LogBuffer max_lines=%d, max_bytes_total=%d)",
                dropped,
                self.config.max_lines,
                self.config.max_bytes_total,
            )
        for context, emit, args, _ in lines:
            context.run(emit, *args)


class DebugLines:
    """A request logged at ``level`` and above as it goes (debug on demand): nothing is kept."""

    __slots__ = ("closed", "level")
    direct = True
    failed = True

    def __init__(self, level: int) -> None:
        self.level = level
        self.closed = False

    def wants(self, level: int) -> bool:
        return level >= self.level and not self.closed

    def keep(self, emit: Emit, args: tuple[Any, ...], size: int) -> None:
        emit(*args)

    def fail(self) -> None:
        """Nothing kept, nothing to write."""

    def close(self, *, failed: bool) -> None:
        self.closed = True


Lines = RequestLines | DebugLines

active_lines: ContextVar[Lines | None] = ContextVar("aioreqctx.log_buffer", default=None)
"""The buffer of the request or job running here, if it buffers."""


class buffering:  # noqa: N801 - used like contextlib's lower-case context managers
    """Make ``lines`` current for a block; on exit close it (failed if the block raised).

    The stdlib hook is in place while any such block is open. For code that runs its own units
    of work; ``JobPropagation(log_buffer=...)`` does this for each job.
    """

    __slots__ = ("_lines", "_token", "_uninstall")

    def __init__(self, lines: Lines) -> None:
        self._lines = lines
        self._token: contextvars.Token[Lines | None] | None = None
        self._uninstall: Callable[[], None] | None = None

    def __enter__(self) -> Lines:
        self._uninstall = install_stdlib_hook()
        self._token = active_lines.set(self._lines)
        return self._lines

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.end(failed=exc_type is not None)

    def end(self, *, failed: bool, restore: bool = True) -> None:
        """Close the lines (written out if ``failed``). ``restore=False`` for a unit of work
        ended from another task, whose context went with its own task: nothing to reset."""
        assert self._token is not None, "buffering block exited without being entered"
        assert self._uninstall is not None
        try:
            self._lines.close(failed=failed)
        finally:
            if restore:
                active_lines.reset(self._token)
            self._uninstall()


# stdlib: the hook on Logger.isEnabledFor and Logger.handle.

_original_enabled = logging.Logger.isEnabledFor
_original_handle = logging.Logger.handle
_installed = [0]
_hook_lock = threading.Lock()


def _enabled_or_buffered(self: logging.Logger, level: int) -> bool:
    if _original_enabled(self, level):
        return True
    lines = active_lines.get()
    return (
        lines is not None
        and lines.wants(level)
        and not self.disabled
        and self.manager.disable < level
    )


def _handle(self: logging.Logger, record: logging.LogRecord) -> None:
    lines = active_lines.get()
    if lines is not None and not lines.closed:
        level = record.levelno
        if level >= logging.ERROR:
            lines.fail()  # the request's kept lines come before its error
        elif not lines.direct and not _original_enabled(self, level):
            if self.disabled:
                return
            lines.keep(_original_handle, (self, _frozen(record)), _size_of(record))
            return
    _original_handle(self, record)


def _frozen(record: logging.LogRecord) -> logging.LogRecord:
    """The record as it reads now: its message formatted (arguments may change or be large
    before a flush) and its traceback rendered, so it holds no frames; marked ``buffered``."""
    if isinstance(record.msg, dict):  # structlog's stdlib bridge: the event dict is the message
        record.msg["buffered"] = True
    else:
        record.msg = record.getMessage()
        record.args = None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = format_exception(record.exc_info)
        record.exc_info = None
    record.buffered = True
    return record


def _size_of(record: logging.LogRecord) -> int:
    message = record.msg
    return _RECORD_BYTES + (len(message) if isinstance(message, str) else _RECORD_BYTES)


def install_stdlib_hook() -> Callable[[], None]:
    """Let stdlib loggers build below-level records for buffering requests; returns the undo.

    Counted: the hook stays while any installer has not undone its install.
    """
    with _hook_lock:
        _installed[0] += 1
        if _installed[0] == 1:
            logging.Logger.isEnabledFor = _enabled_or_buffered  # type: ignore[method-assign]
            logging.Logger.handle = _handle  # type: ignore[method-assign]
    undone = False

    def uninstall() -> None:
        nonlocal undone
        with _hook_lock:
            if undone:
                return
            undone = True
            _installed[0] -= 1
            if _installed[0] == 0:
                logging.Logger.isEnabledFor = _original_enabled  # type: ignore[method-assign]
                logging.Logger.handle = _original_handle  # type: ignore[method-assign]

    return uninstall
