"""Helpers for testing code that uses aioreqctx; the pytest plugin offers them as fixtures.

``capture_logs()`` keeps every log line written in a block, stdlib and structlog alike, as a
dict with the request's fields, in the spirit of ``structlog.testing.capture_logs``: enough to
assert that every line of a request carried its ID. ``RequestIdCheck`` is an aiohttp client
middleware that fails a test on any response without exactly one valid ``X-Request-ID``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import ClientRequest, ClientResponse, web
from aiohttp.client_middlewares import ClientHandlerType

from . import keys
from ._core.ids import is_safe_request_id, is_valid_request_id
from ._core.options import HEADER_NAME, check
from .log.fields import DEFAULT_REQUEST_ID
from .log.processors import request_context_processor
from .log.stdlib import RequestContextFilter
from .web.app import MIDDLEWARE
from .web.middleware import RequestIdMiddleware

_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class CapturedLogs(list[dict[str, Any]]):
    """The captured lines, oldest first: ``event``, ``log_level``, ``logger`` (stdlib only) and
    every field the line carried, ``request_id`` always among them."""

    def request_ids(self) -> set[str]:
        """Every request ID the lines carry: one per request, if each line got its own."""
        return {entry["request_id"] for entry in self}

    def of_request(self, request_id: str) -> list[dict[str, Any]]:
        """The lines written for one request, oldest first."""
        return [entry for entry in self if entry["request_id"] == request_id]


class _CapturingHandler(logging.Handler):
    def __init__(self, captured: CapturedLogs) -> None:
        super().__init__(logging.NOTSET)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}
        fields.update(fields.pop("event_fields", None) or {})  # aioreqctx's own events
        self.captured.append(
            {
                "event": fields.pop("event", None) or record.getMessage(),
                "log_level": record.levelname.lower(),
                "logger": record.name,
                **fields,
            }
        )


@contextmanager
def capture_logs(
    level: int = logging.DEBUG,
    context_keys: Mapping[str, str] | None = None,
    default: Any = DEFAULT_REQUEST_ID,
) -> Iterator[CapturedLogs]:
    """Every stdlib record reaching the root logger at ``level`` or above, and every structlog
    event, logged while the block runs.

    The root logger's level is lowered to ``level`` for the block; loggers that do not propagate
    (or have a higher level of their own) are not seen. structlog's configured processors are
    bypassed, as with ``structlog.testing.capture_logs``: the request's fields are added here.
    """
    captured = CapturedLogs()
    handler = _CapturingHandler(captured)
    handler.addFilter(RequestContextFilter(context_keys=context_keys, default=default))
    add_fields = request_context_processor(context_keys=context_keys, default=default)

    def keep(_: Any, method_name: str, event: MutableMapping[str, Any]) -> Any:
        captured.append({"log_level": "warning" if method_name == "warn" else method_name, **event})
        raise structlog.DropEvent

    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        with structlog.testing.capture_logs(processors=(add_fields, keep)):
            yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


@dataclass
class RequestIdCheck:
    """An aiohttp client middleware for tests: every response must carry exactly one
    ``header`` holding a safe ID (``is_safe_request_id``, the floor under whatever a custom
    generator makes), equal to the one the request sent when ``validator`` (the app's, by
    default the stock one) accepts it; otherwise the call raises ``AssertionError``. ``ids``
    lists the IDs received, in order.

    ``await aiohttp_client(app, middlewares=(RequestIdCheck.for_app(app),))`` with
    pytest-aiohttp, or the plugin's ``aioreqctx_client`` fixture (which does that).
    """

    header: str = keys.REQUEST_ID
    validator: Callable[[str], bool] = is_valid_request_id
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check("RequestIdCheck", "header", self.header, HEADER_NAME)
        check("RequestIdCheck", "validator", self.validator)

    @classmethod
    def for_app(cls, app: object) -> RequestIdCheck:
        """The check for ``app``: its middleware's response header and validator (the stock
        check for anything else)."""
        if not isinstance(app, web.Application):
            return cls()
        middleware = app.get(MIDDLEWARE) or next(
            (each for each in app.middlewares if isinstance(each, RequestIdMiddleware)), None
        )
        if middleware is None:
            return cls()
        return cls(header=middleware.response_header, validator=middleware.validator)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        sent = request.headers.get(self.header)
        response = await handler(request)
        received = response.headers.getall(self.header, [])
        where = f"{request.method} {request.url.path_qs} answered {response.status}"
        if len(received) != 1:
            raise AssertionError(f"{where} with {len(received)} {self.header} headers, not 1")
        if not is_safe_request_id(received[0]):
            raise AssertionError(f"{where} with an unsafe {self.header}: {received[0]!r}")
        if sent is not None and self._accepted(sent) and received[0] != sent:
            raise AssertionError(f"{where} with {self.header} {received[0]!r}, sent {sent!r}")
        self.ids.append(received[0])
        return response

    def _accepted(self, sent: str) -> bool:
        """Whether the app keeps ``sent`` as the request's ID (a validator that raises: no)."""
        try:
            return is_safe_request_id(sent) and bool(self.validator(sent))
        except Exception:  # noqa: BLE001 - the middleware counts it as invalid too
            return False
