"""An aiohttp access logger that writes one structured line per request, with its request ID.

aiohttp calls the access logger in the request's task after the middleware has returned, but
it also calls it for requests the middleware never saw (a malformed request line), so the ID is
read from what the middleware kept on the request object (``OWN_RECORD``), not from the
context, which the handler may have cleared or overwritten. A client that
disconnected still gets a line: the status the handler produced (499 when a streaming write
failed or ``handler_cancellation=True`` cancelled it: the middleware answers those so that
aiohttp logs them), 0 bytes and ``disconnected=true`` (platform notes, pitfalls 15 and 16).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from .._core.emit import event_sink
from ..log.fields import DEFAULT_REQUEST_ID
from .middleware import OWN_RECORD


class AccessLogger(AbstractAccessLogger):
    """``web.run_app(app, access_log_class=aioreqctx.AccessLogger)`` (or ``AppRunner(...)``).

    Writes the event ``access`` at INFO with ``request_id``, ``method``, ``path``, ``status``,
    ``bytes`` (headers and body as sent), ``duration_ms``, ``remote``, ``user_agent`` and
    ``disconnected``, to the stdlib logger aiohttp passes (``aiohttp.access`` unless
    ``access_log=`` says otherwise), or to ``target`` when a subclass sets it (see
    ``access_logger_for``). aiohttp's ``access_log_format`` is not used.
    """

    target: ClassVar[Any] = None
    """A structlog logger or a stdlib logger (or its name) to write to instead of aiohttp's."""

    level: ClassVar[int] = logging.INFO

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._sink = event_sink(logger if self.target is None else self.target)

    @property
    def enabled(self) -> bool:
        return self.target is not None or self.logger.isEnabledFor(self.level)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        own = request.get(OWN_RECORD)
        request_id = DEFAULT_REQUEST_ID if own is None else own[0]
        self._sink(
            self.level,
            "access",
            {
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "bytes": response.body_length,
                "duration_ms": round(time * 1000.0, 3),
                "remote": request.remote,
                "user_agent": request.headers.get("User-Agent"),
                "disconnected": _disconnected(request),
            },
        )


def access_logger_for(target: Any) -> type[AccessLogger]:
    """An ``AccessLogger`` class writing to ``target``: a structlog logger, or a stdlib logger or
    its name; pass it as ``access_log_class``."""
    event_sink(target)  # refuses anything that is not a logger, now rather than per request
    return type("BoundAccessLogger", (AccessLogger,), {"target": target})


def _disconnected(request: BaseRequest) -> bool:
    """The client left, or the server cut the response short (a handler failed mid-response)."""
    transport = request.transport
    return transport is None or transport.is_closing()
