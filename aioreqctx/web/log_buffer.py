"""``setup(app, log_buffer=..., debug_on_demand=...)``: what each request does with the lines
below the loggers' level.

A request observer: when the request starts (in the request's task, so the handler, its child
tasks and its threads see it) it gives a trusted request that asks for it ``DebugLines`` (and
keeps the accepted value in the context, to travel downstream), and any other request a
buffer. When the request ends it writes the buffer if the request failed (a 5xx, an exception,
or too slow; an ERROR line already wrote them) and drops it otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from .._core.store import Context
from ..log.buffer import Lines, LogBuffer, active_lines, install_stdlib_hook
from ..log.debug import DEBUG_LOG, DebugOnDemand

_LINES: web.RequestKey[Lines] = web.RequestKey("aioreqctx.log_lines")


class LogLinesObserver:
    """Opens and closes each request's lines; put in place by ``setup``."""

    __slots__ = ("buffer", "debug")

    def __init__(self, buffer: LogBuffer | None, debug: DebugOnDemand | None) -> None:
        self.buffer = buffer
        self.debug = debug

    def request_started(self, request: web.Request, mapping: Context) -> None:
        lines: Lines | None = None
        debug = self.debug
        if debug is not None:
            value = request.headers.get(debug.header)
            if value is not None and debug.accepts(value, request.remote):
                mapping[DEBUG_LOG] = value
                lines = debug.lines()
        if lines is None:
            if self.buffer is None:
                return
            lines = self.buffer.open()
        request[_LINES] = lines
        active_lines.set(lines)

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        lines = request.get(_LINES)
        if lines is not None:
            lines.close(failed=_failed(response, error))

    async def hook_while_serving(self, app: web.Application) -> AsyncIterator[None]:
        """A ``cleanup_ctx``: stdlib loggers consult the buffer while the app serves."""
        uninstall = install_stdlib_hook()
        try:
            yield
        finally:
            uninstall()


def _failed(response: web.StreamResponse | None, error: BaseException | None) -> bool:
    """A 5xx, or an exception other than an HTTP error below 500 or a cancellation."""
    if response is not None and response.status >= 500:
        return True
    if error is None or isinstance(error, asyncio.CancelledError):
        return False
    if isinstance(error, web.HTTPException):
        return error.status >= 500
    return True
