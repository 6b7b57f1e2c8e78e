"""The aiohttp middleware: a fresh context per request, its ID policy, the ID on every response.

Each request runs in a task of its own, so the middleware gives that task a fresh mapping
(``store.enter``) and never resets it: aiohttp's ``on_response_prepare`` signal and access logger
run after the middleware, in the same task, and still see the request. The fresh mapping is the
middleware's, not a task factory's (on Python 3.12 and 3.13 aiohttp starts request tasks without the
loop's factory), and never the inherited one (a mapping set at start-up is one object shared by
every request). Streaming and WebSocket responses are prepared inside the handler, before the
middleware gets them back, so only an ``on_response_prepare`` handler can put the ID on them:
``aioreqctx.setup(app)`` installs both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from time import perf_counter, time
from typing import Any, ClassVar, Literal

from aiohttp import web
from multidict import istr

from .. import keys
from .._core.detach import startup_values
from .._core.emit import logger
from .._core.factories import register_dispatcher
from .._core.ids import (
    checked_generator,
    checked_validator,
    escaped,
    is_valid_request_id,
    match_valid_request_id,
    new_request_id,
    trace_id_of,
)
from .._core.options import check
from .._core.peers import Network, is_trusted, parse_networks
from .._core.snapshot import snapshot
from .._core.store import Context, current_mapping, enter
from .._core.timing import OperationTimings
from .._core.unit_of_work import START_KEYS
from .observers import Answer, Failure, RequestObserver, overridden
from .server_timing import SERVER_TIMING, server_timing_header

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Rejected = tuple[str, str]
"""An invalid incoming ID: the header it came in, and its value escaped and truncated."""

CONTEXT_MAPPING: web.RequestKey[Context] = web.RequestKey("aioreqctx.context")
"""The request's context mapping on the request object, for code that runs outside its task."""

CLIENT_CLOSED_REQUEST = 499
"""nginx's status for a client that hung up before the response was complete (a streaming
write failed, or ``handler_cancellation=True`` cancelled the handler): what the access log and
observers see for it (nothing reaches the client)."""

UNHANDLED_ERROR: web.ResponseKey[BaseException] = web.ResponseKey("aioreqctx.unhandled_error")
"""On the 500 the middleware built for an unhandled exception: that exception; on its 499 for
a client that went away: the reset or the cancellation."""

OwnRecord = tuple[str, float, OperationTimings]
"""What the middleware itself knows of a request: its ID, ``perf_counter()`` at its start and its
operation timings; kept out of the context mapping, which the request's code may clear or
overwrite (aiotask-context's ``clear()``, its example middleware's ``set("X-Request-ID", ...)``)."""

OWN_RECORD: web.RequestKey[OwnRecord] = web.RequestKey("aioreqctx.own_record")

UNTRUSTED_PEER: web.RequestKey[bool] = web.RequestKey("aioreqctx.untrusted_peer")
"""True on a request whose peer is outside ``trusted_networks`` (absent otherwise): its
headers are not believed, neither its ID nor, for ``DeadlineObserver``, its deadline."""


STARTED_RESPONSE: web.RequestKey[web.StreamResponse] = web.RequestKey("aioreqctx.started")
"""With ``setup()``: the response whose headers are going out (set by ``on_response_prepare``),
so that a handler failing after it started one is reported with the status that was sent."""


class ResponseCutShort(web.StreamResponse):
    """Stands, for the access log and observers, for a response the handler started (its
    headers, maybe part of its body, are on the wire) and then failed: the status and bytes
    that went out. Preparing it closes the connection and raises ``ConnectionResetError``, so
    aiohttp writes nothing more and logs this as a cut-short response (as it does a reset)."""

    def __init__(self, started: web.StreamResponse, bytes_sent: int) -> None:
        super().__init__(status=started.status, reason=started.reason)
        self._bytes_sent = bytes_sent

    @property
    def body_length(self) -> int:
        """What went out (headers and body) before the connection was cut."""
        return self._bytes_sent

    async def prepare(self, request: web.BaseRequest) -> None:
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError("the handler failed after its response started")


_ID, _START, _WALL, _TIMINGS = START_KEYS  # start_values' keys, for the inline mapping
_ERROR_STATUSES = frozenset((CLIENT_CLOSED_REQUEST, HTTPStatus.INTERNAL_SERVER_ERROR))

server_logger = logging.getLogger("aiohttp.server")

# aiohttp's connection task starts each request's task: under a factory those must not share it.
register_dispatcher(web.RequestHandler.start)


class StartUpValues:
    """The values of the context the server was started in, as every request starts with them.

    Frozen (deep-copied) the first time a request sees that context, so a later write into it
    (the start-up task itself, a task sharing its mapping under ``task_factory``) never reaches
    a request. A different context (another server, the next test) is frozen anew.
    """

    __slots__ = ("_frozen", "_source")

    def __init__(self) -> None:
        self._source: Context | None = None
        self._frozen: dict[str, Any] = {}

    def under(self, inherited: Context, mapping: Context) -> Context:
        """``mapping`` over a deep copy of ``inherited``'s start-up values."""
        if inherited is not self._source:
            self._source, self._frozen = inherited, snapshot(inherited)
        if not self._frozen:
            return mapping
        startup_values.set(self._frozen)  # what work detached from the request starts with
        return {**snapshot(self._frozen), **mapping}


@dataclass(frozen=True, kw_only=True, eq=False)
class RequestIdMiddleware:
    """The request-ID middleware; every field is an option of ``aioreqctx.setup``.

    ``header_names``: incoming headers to take the ID from, in order of preference
    (case-insensitive; ``"traceparent"`` means the trace-id of a W3C traceparent).
    ``response_header``: the header that carries the final ID back.
    ``validator``: which incoming IDs to accept; ``generator``: makes new ones (both are
    re-checked and fall back safely).
    ``on_invalid``: ``"regenerate"`` (default) or ``"reject"`` (answer 400).
    ``trusted_networks``: if set, incoming IDs (and deadlines) are used only from peers in
    these CIDRs; requests from other peers carry ``UNTRUSTED_PEER``.
    ``server_timing``: add a W3C ``Server-Timing`` header (total plus timed operations).
    ``observers``: told when each request starts and ends (``aioreqctx.RequestObserver``).
    """

    header_names: tuple[str, ...] = (keys.REQUEST_ID,)
    response_header: str = keys.REQUEST_ID
    validator: Callable[[str], bool] = is_valid_request_id
    generator: Callable[[], str] = new_request_id
    on_invalid: Literal["regenerate", "reject"] = "regenerate"
    trusted_networks: tuple[str, ...] = ()
    server_timing: bool = False
    observers: tuple[RequestObserver, ...] = ()
    _networks: tuple[Network, ...] = field(init=False, repr=False)
    _validate: Callable[[str], bool] = field(init=False, repr=False)
    _generate: Callable[[], str] = field(init=False, repr=False)
    _header: istr = field(init=False, repr=False)
    _incoming: istr = field(init=False, repr=False)
    _single_header: bool = field(init=False, repr=False)
    _observed: bool = field(init=False, repr=False)
    _rejection_text: str = field(init=False, repr=False)
    _started: tuple[Callable[[web.Request, Context], None], ...] = field(init=False, repr=False)
    _finished: tuple[Callable[..., None], ...] = field(init=False, repr=False)
    _startup: StartUpValues = field(default_factory=StartUpValues, init=False, repr=False)
    # Set by setup(): on_response_prepare labels every response, so the middleware need not.
    _labelled_on_prepare: bool = field(default=False, init=False, repr=False)
    # Set once this instance has said (at DEBUG) that it passes requests through.
    _told_passing_through: bool = field(default=False, init=False, repr=False)

    __middleware_version__: ClassVar[int] = 1  # an aiohttp "new-style" middleware

    def __post_init__(self) -> None:
        for option in MIDDLEWARE_OPTIONS:
            check("RequestIdMiddleware", option, getattr(self, option))
        object.__setattr__(self, "_networks", parse_networks(self.trusted_networks))
        object.__setattr__(self, "_validate", checked_validator(self.validator))
        object.__setattr__(self, "_generate", checked_generator(self.generator))
        object.__setattr__(self, "_header", istr(self.response_header))
        object.__setattr__(self, "_incoming", istr(self.header_names[0]))
        rejection = f"400: invalid {self.header_names[0]} header"
        object.__setattr__(self, "_rejection_text", rejection)
        single = (
            len(self.header_names) == 1
            and self.header_names[0].lower() != "traceparent"
            and self.validator is is_valid_request_id
            and not self._networks
        )
        object.__setattr__(self, "_single_header", single)
        object.__setattr__(self, "observers", tuple(self.observers))
        for observer in self.observers:
            if not callable(getattr(observer, "request_started", None)) or not callable(
                getattr(observer, "request_finished", None)
            ):
                raise TypeError(
                    f"{observer!r} is not a RequestObserver: it needs request_started() and "
                    "request_finished() methods"
                )
        # Bound once, without the base's no-ops: the request path calls them without looking
        # them up, and an observer that only uses one moment costs nothing at the other.
        started = tuple(
            o.request_started for o in self.observers if overridden(o, "request_started")
        )
        object.__setattr__(self, "_started", started)
        finished = tuple(
            o.request_finished for o in self.observers if overridden(o, "request_finished")
        )
        object.__setattr__(self, "_finished", finished)
        object.__setattr__(self, "_observed", bool(finished))

    async def __call__(  # noqa: PLR0912, PLR0915 - one frame per request, on purpose
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        # One coroutine per request: every frame, await and call saved here is paid by every
        # request (bench/RESULTS.md). The default configuration (one header, the stock
        # validator) is checked inline; the rare paths are plain methods.
        inherited = current_mapping.get(None)  # the context the server was started in...
        if inherited is not None and self._inside(request, inherited):
            return await handler(request)  # ...or a second instance's: the first one's ID stands
        rejected: Rejected | None = None
        if self._single_header:
            request_id = request.headers.get(self._incoming)
            if request_id is None:
                request_id = self._generate()
            elif match_valid_request_id(request_id) is None:
                rejected = (self.header_names[0], escaped(request_id))
                request_id = self._generate()
        else:
            request_id, rejected = self._request_id_for(request)
        own: OwnRecord = (request_id, perf_counter(), OperationTimings())
        mapping: Context = {_ID: request_id, _START: own[1], _WALL: time(), _TIMINGS: own[2]}
        if inherited is not None:
            mapping = self._startup.under(inherited, mapping)
        enter(mapping)
        request[CONTEXT_MAPPING] = mapping
        request[OWN_RECORD] = own
        if rejected is not None:
            self._note_rejected(request, mapping, rejected)
        for started in self._started:  # inline: no call when there are no observers
            try:
                started(request, mapping)
            except Exception:
                logger.exception("request observer %r failed", started)
        response: web.StreamResponse | None = None
        error: BaseException | None = None
        try:
            try:
                if rejected is not None and self.on_invalid == "reject":
                    response = web.Response(status=400, text=self._rejection_text)
                else:
                    response = await handler(request)
            except web.HTTPException as raised:
                if request.writer.output_size:  # another response went out already
                    return self._cut_short(request, raised)
                if not self._labelled_on_prepare:
                    self._label(raised, own)  # raised, so never prepared yet
                raise
            except (asyncio.CancelledError, Exception) as raised:
                response = self._answer(request, raised)
                if response is None:
                    raise
            if not (self._labelled_on_prepare or response.prepared):
                response.headers[self._header] = request_id
                if self.server_timing:
                    _add_server_timing(response, own)
            return response
        except BaseException as raised:
            error = raised
            raise
        finally:
            if self._observed:
                self._tell_finished(request, mapping, response, error)

    def _inside(self, request: web.Request, current: Context) -> bool:
        """Whether another instance (listed twice, or in a sub-application too) already opened
        this request's context: one ID per request, so this one passes it through."""
        if request.get(CONTEXT_MAPPING) is not current:
            return False
        if not self._told_passing_through:
            object.__setattr__(self, "_told_passing_through", True)
            logger.debug(
                "a second RequestIdMiddleware (%s %s) found the request's context already "
                "open, so it passes requests through and its options are not used: list it "
                "once, on the main application only",
                request.method,
                request.path,
            )
        return True

    def _note_rejected(self, request: web.Request, mapping: Context, rejected: Rejected) -> None:
        """Kept in the request's context, and logged in it (the line carries the new ID)."""
        header_name, shown = rejected
        mapping[keys.REJECTED_REQUEST_ID] = shown
        logger.warning(
            'invalid %s header from %s ignored: "%s"', header_name, request.remote, shown
        )

    def _answer(self, request: web.Request, error: BaseException) -> web.StreamResponse | None:
        """The response to an exception the handler raised (other than ``web.HTTPException``),
        built here so that it, and its log line, are inside the request's context; None for a
        cancellation that must go on."""
        if isinstance(error, asyncio.CancelledError):
            if not _client_gone(request) or not _only_cancelled_by_the_disconnect():
                return None
            # handler_cancellation=True and the client hung up: answered like a streaming
            # reset, so aiohttp still writes the access line (it logs none for a cancellation).
            server_logger.debug("Client %s disconnected.", request.remote)
            response = web.Response(status=CLIENT_CLOSED_REQUEST)
        elif isinstance(error, ConnectionResetError) and _client_gone(request):
            # Not a server error: the client hung up mid-response (a streaming write raised).
            server_logger.debug("Client %s disconnected.", request.remote, exc_info=error)
            response = web.Response(status=CLIENT_CLOSED_REQUEST)
        elif request.writer.output_size:  # a second response would corrupt the first
            return self._cut_short(request, error)
        elif isinstance(error, TimeoutError):
            server_logger.debug("Request handler timed out.", exc_info=error)
            return _error_response(HTTPStatus.GATEWAY_TIMEOUT)
        else:
            server_logger.error("Error handling request from %s", request.remote, exc_info=error)
            response = _error_response(HTTPStatus.INTERNAL_SERVER_ERROR)
        response[UNHANDLED_ERROR] = error
        return response

    @staticmethod
    def _cut_short(request: web.Request, error: BaseException) -> web.StreamResponse:
        """The handler failed after its response started: logged with the request's ID, and
        the response cut short as aiohttp does without a middleware (no second response on the
        wire, the connection closed). The bare middleware, which sees no
        ``on_response_prepare``, does not know the started response: it raises, and aiohttp
        logs the error (in the request's context) and cuts the response short itself."""
        started = request.get(STARTED_RESPONSE)
        if started is None:
            raise RuntimeError("the handler failed after its response started") from error
        server_logger.error(
            "Error handling request from %s after its response started; cut short",
            request.remote,
            exc_info=error,
        )
        response = ResponseCutShort(started, request.writer.output_size)
        response[UNHANDLED_ERROR] = error
        return response

    def _tell_finished(
        self, request: web.Request, mapping: Context, response: Answer, error: Failure
    ) -> None:
        if (
            error is None
            and response is not None
            and (response.status in _ERROR_STATUSES or type(response) is ResponseCutShort)
        ):
            error = response.get(UNHANDLED_ERROR)  # a KeyError inside: not on every request
        for finished in self._finished:
            try:
                finished(request, mapping, response, error)
            except Exception:
                logger.exception("request observer %r failed", finished)

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Label every response just before its headers go out (streaming, WebSocket, 500s)."""
        try:
            own = request[OWN_RECORD]
        except KeyError:  # a request the middleware never saw (aiohttp's own error pages)
            return
        request[STARTED_RESPONSE] = response
        self._label(response, own)

    def _request_id_for(self, request: web.Request) -> tuple[str, Rejected | None]:
        """The request's ID, and the escaped first invalid incoming value if there was one."""
        rejected: Rejected | None = None
        if self._networks and not is_trusted(request.remote, self._networks):
            request[UNTRUSTED_PEER] = True
            return self._generate(), rejected
        headers = request.headers
        for name in self.header_names:
            raw = headers.get(name)
            if raw is None:
                continue
            candidate = trace_id_of(raw) if name.lower() == "traceparent" else raw
            if candidate is not None and self._validate(candidate):
                return candidate, rejected
            if rejected is None:
                rejected = (name, escaped(raw))
        return self._generate(), rejected

    def _label(self, response: web.StreamResponse, own: OwnRecord) -> None:
        response.headers[self._header] = own[0]
        if self.server_timing:
            _add_server_timing(response, own)


def _add_server_timing(response: web.StreamResponse, own: OwnRecord) -> None:
    total_ms = (perf_counter() - own[1]) * 1000.0
    response.headers[SERVER_TIMING] = server_timing_header(total_ms, own[2].server_timing_entries())


MIDDLEWARE_OPTIONS = tuple(
    name for name in RequestIdMiddleware.__dataclass_fields__ if name[0] != "_"
)
"""The options ``RequestIdMiddleware`` takes, each checked by its shared rule (``options``)."""


def _only_cancelled_by_the_disconnect() -> bool:
    """Whether the one pending cancellation is aiohttp's for the lost connection; if so it is
    withdrawn (``uncancel``). Any other cancellation (shutdown, a timeout) goes on."""
    task = asyncio.current_task()
    if task is None or task.cancelling() != 1:
        return False
    task.uncancel()
    return True


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _error_response(status: HTTPStatus) -> web.Response:
    """What aiohttp itself would answer, built here so it runs inside the request's context."""
    return web.Response(status=status, text=f"{status.value}: {status.phrase}")


request_id_middleware = RequestIdMiddleware()
"""The middleware with every default: ``web.Application(middlewares=[request_id_middleware])``."""
