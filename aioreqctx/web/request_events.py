"""Request events: ``request_started``, ``request_finished`` and ``request_failed`` log lines.

In the style of django-structlog and ccproxy, each request logs when it starts and how it
ended, with its ID, method, path, status and duration. They come from the middleware (a
``RequestObserver``), not from the access logger, because aiohttp writes no access line for a
request whose client went away while it streamed (its write raised ``ConnectionResetError``).

How each ending is logged:

* a response (the handler's, or a raised ``web.HTTPException`` such as a 404):
  ``request_finished``, at a level chosen from its status (5xx ERROR, 4xx WARNING, else INFO);
* an unhandled exception (answered with a 500): ``request_failed`` at ERROR, with the traceback;
* a cancellation (``handler_cancellation=True`` and the client went away) or a disconnect while
  streaming (``ConnectionResetError``): ``request_failed`` at WARNING, ``status=-`` and
  ``error=CancelledError`` (or the reset's type), without a traceback: no code failed;
* a client that went away while a plain handler ran (aiohttp's default) is only seen as
  ``disconnected=True`` on its ``request_finished`` line;
* a 504 for a request whose deadline ran out (``DeadlineObserver``): ``request_finished`` with
  ``deadline_expired=true`` at ``deadline_level`` (WARNING): the caller's budget ran out, no
  server code failed.

A WebSocket message handled by ``messages(ws, events=...)`` logs ``message_started`` and
``message_finished`` (or ``message_failed``) the same way, with its own ID and its connection's
as ``parent_request_id``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from aiohttp import web

from .. import keys
from .._core.deadline import deadline_expired
from .._core.emit import REQUESTS_LOGGER, enabled_check, error_fields, event_sink
from .._core.store import Context
from .._core.timing import OperationTimings
from .middleware import OWN_RECORD
from .observers import Answer, Failure, RequestObserver


def level_for_status(status: int) -> int:
    """The default: ERROR for 5xx, WARNING for 4xx, INFO for everything else."""
    if status >= 500:
        return logging.ERROR
    if status >= 400:
        return logging.WARNING
    return logging.INFO


class RequestEvents(RequestObserver):
    """Log each request's start and end; a ``RequestObserver``.

    ``logger``: a stdlib logger or its name (default ``aioreqctx.requests``) or a structlog
    logger. ``exclude_paths``: paths that log nothing, each an exact string or a compiled
    regex (matched with ``fullmatch``), e.g. ``("/health", re.compile(r"/static/.*"))``.
    ``started_level``: the level of ``request_started`` (INFO). ``status_level``: the level of
    ``request_finished`` for a status. ``interrupted_level``: the level of ``request_failed``
    for a cancelled or disconnected request (WARNING). ``deadline_level``: the level of
    ``request_finished`` for a 504 caused by the request's own deadline (WARNING).
    ``usage``: whether ``request_finished`` and ``request_failed`` carry what the request used
    (``OperationTimings.summary()``: ``db_queries=3 http_calls=2 jobs=1 ...``, only what it used).
    Pass it to ``messages(ws, events=...)`` too for a line per WebSocket message.
    """

    __slots__ = (
        "_enabled",
        "_exact",
        "_patterns",
        "_sink",
        "deadline_level",
        "interrupted_level",
        "started_level",
        "status_level",
        "usage",
    )

    def __init__(
        self,
        *,
        logger: logging.Logger | str | Any = REQUESTS_LOGGER,
        exclude_paths: Iterable[str | re.Pattern[str]] = (),
        started_level: int = logging.INFO,
        status_level: Callable[[int], int] = level_for_status,
        interrupted_level: int = logging.WARNING,
        deadline_level: int = logging.WARNING,
        usage: bool = True,
    ) -> None:
        if isinstance(exclude_paths, str | re.Pattern):
            raise TypeError("exclude_paths must be a collection of paths, not one path")
        paths = tuple(exclude_paths)
        for path in paths:
            if not isinstance(path, str | re.Pattern):
                raise TypeError(
                    f"exclude_paths: {path!r} is neither a path string nor a compiled regex"
                )
        if not callable(status_level):
            raise TypeError(
                f"status_level must be callable (status -> level), not {status_level!r}"
            )
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self._sink = event_sink(logger)
        self._enabled = enabled_check(logger)
        self._exact = frozenset(path for path in paths if isinstance(path, str))
        self._patterns = tuple(path for path in paths if isinstance(path, re.Pattern))
        self.started_level = started_level
        self.status_level = status_level
        self.interrupted_level = interrupted_level
        self.deadline_level = deadline_level
        self.usage = usage

    def excludes(self, path: str) -> bool:
        return path in self._exact or any(p.fullmatch(path) for p in self._patterns)

    def request_started(self, request: web.Request, mapping: Context) -> None:
        if self._enabled(self.started_level) and not self.excludes(request.path):
            self._sink(self.started_level, "request_started", _fields(request, None))

    def request_finished(
        self, request: web.Request, mapping: Context, response: Answer, error: Failure
    ) -> None:
        if isinstance(error, web.HTTPException):  # raised, but an answer all the same
            response, error = error, None
        status: int | None
        if error is None:
            status = 500 if response is None else response.status
            level, event, extra = self.status_level(status), "request_finished", {}
            if status == 504 and deadline_expired(mapping):
                level, extra = self.deadline_level, {"deadline_expired": True}
        else:
            level, extra = self._failure(error)
            status = None if response is None or _interrupted(error) else response.status
            event = "request_failed"
        if not self._enabled(level) or self.excludes(request.path):
            return
        fields = _fields(request, status)
        if request.transport is None:
            fields["disconnected"] = True
        own = request.get(OWN_RECORD)
        if own is not None and self.usage:
            fields.update(own[2].summary())
        self._sink(level, event, {**fields, **extra})

    def message_started(self, mapping: Context) -> None:
        """A WebSocket message's handling starts (``messages(ws, events=...)``)."""
        if self._enabled(self.started_level):
            self._sink(self.started_level, "message_started", _message_fields(mapping, False))

    def message_finished(self, mapping: Context, error: Failure) -> None:
        """A message's handling ended: ``message_finished`` (INFO) when the handler went on
        to the next message (or the connection closed), ``message_failed`` when it raised."""
        level, event, extra = logging.INFO, "message_finished", dict[str, Any]()
        if error is not None:
            (level, extra), event = self._failure(error), "message_failed"
        if self._enabled(level):
            self._sink(level, event, {**_message_fields(mapping, self.usage), **extra})

    def _failure(self, error: BaseException) -> tuple[int, dict[str, Any]]:
        """The level and fields of a failure: a cancellation or disconnect is no bug (no
        traceback, ``interrupted_level``); anything else is an ERROR with its traceback."""
        if _interrupted(error):
            return self.interrupted_level, error_fields(error, traceback=False)
        return logging.ERROR, error_fields(error)


def _interrupted(error: BaseException) -> bool:
    return isinstance(error, asyncio.CancelledError | ConnectionResetError)


def _message_fields(mapping: Context, usage: bool) -> dict[str, Any]:
    """A message's own ID and timing, and its connection's ID; a message has no path."""
    start = mapping.get(keys.START_MONOTONIC)
    timings = mapping.get(keys.OPERATIONS)
    fields: dict[str, Any] = {
        "request_id": mapping.get(keys.REQUEST_ID),
        "parent_request_id": mapping.get(keys.PARENT_REQUEST_ID),
        "method": "MESSAGE",
        "duration_ms": None if start is None else round((perf_counter() - start) * 1000.0, 3),
    }
    if usage and isinstance(timings, OperationTimings):
        fields.update(timings.summary())
    return fields


def _fields(request: web.Request, status: int | None) -> dict[str, Any]:
    """Read from what the middleware itself kept: the request's code may have cleared or
    overwritten its context."""
    own = request.get(OWN_RECORD)
    request_id, duration_ms = None, None
    if own is not None:
        request_id, duration_ms = own[0], round((perf_counter() - own[1]) * 1000.0, 3)
    return {
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": duration_ms,
    }
