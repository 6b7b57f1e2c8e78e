"""``setup(app, log_buffer=LogBuffer(...))``: each request's low-level lines, kept until it ends.

A request observer: it opens the request's buffer when the request starts (in the request's
task, so the handler, its child tasks and its threads see it) and, when the request ends,
writes the lines if the request failed (a 5xx, an exception, or too slow; an ERROR line
already wrote them) and drops them otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from .._core.store import Context
from ..log.buffer import LogBuffer, RequestLines, active_lines, install_stdlib_hook

_LINES: web.RequestKey[RequestLines] = web.RequestKey("aioreqctx.log_buffer")


class LogBufferObserver:
    """Opens and closes each request's ``RequestLines``; put in place by ``setup``."""

    __slots__ = ("config",)

    def __init__(self, config: LogBuffer) -> None:
        self.config = config

    def request_started(self, request: web.Request, mapping: Context) -> None:
        lines = self.config.open()
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
