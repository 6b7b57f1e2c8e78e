"""The aiohttp server side, as ``aiohttp.web`` is aiohttp's: ``setup(app)``, the middleware,
its observers, the access log, the in-flight registry and per-message WebSocket scopes.

``CONTEXT_MAPPING`` is the request key holding a request's context mapping
(``request[CONTEXT_MAPPING]``), for code that runs outside the request's task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core.lazy import lazy_names

if TYPE_CHECKING:
    from .access_log import AccessLogger, access_logger_for
    from .app import setup
    from .deadline import DeadlineObserver
    from .inflight import InFlightEntry, InFlightRegistry, from_loopback, header_token
    from .middleware import (
        CLIENT_CLOSED_REQUEST,
        CONTEXT_MAPPING,
        UNHANDLED_ERROR,
        UNTRUSTED_PEER,
        RequestIdMiddleware,
        request_id_middleware,
    )
    from .observers import RequestObserver
    from .request_events import RequestEvents, level_for_status
    from .websocket import message_scope, messages

__all__ = (
    "CLIENT_CLOSED_REQUEST",
    "CONTEXT_MAPPING",
    "UNHANDLED_ERROR",
    "UNTRUSTED_PEER",
    "AccessLogger",
    "DeadlineObserver",
    "InFlightEntry",
    "InFlightRegistry",
    "RequestEvents",
    "RequestIdMiddleware",
    "RequestObserver",
    "access_logger_for",
    "from_loopback",
    "header_token",
    "level_for_status",
    "message_scope",
    "messages",
    "request_id_middleware",
    "setup",
)

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".access_log": ("AccessLogger", "access_logger_for"),
        ".app": ("setup",),
        ".deadline": ("DeadlineObserver",),
        ".inflight": ("InFlightEntry", "InFlightRegistry", "from_loopback", "header_token"),
        ".websocket": ("message_scope", "messages"),
        ".middleware": (
            "CLIENT_CLOSED_REQUEST",
            "CONTEXT_MAPPING",
            "UNHANDLED_ERROR",
            "UNTRUSTED_PEER",
            "RequestIdMiddleware",
            "request_id_middleware",
        ),
        ".observers": ("RequestObserver",),
        ".request_events": ("RequestEvents", "level_for_status"),
    },
)
