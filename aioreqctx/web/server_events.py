"""Lifecycle events from an aiohttp server: connection hooks plus a request observer.

aiohttp has no public hook for connections. Its ``web.Server`` is told of each one through
``connection_made(handler, transport)`` and ``connection_lost(handler, exc)`` (platform notes
§3.4), and that server is built by ``Application._make_handler()``, which ``AppRunner.setup()``
calls (and so ``web.run_app`` and aiohttp's gunicorn worker). ``install`` wraps that method on
the one application instance: the single private name relied on. If a future aiohttp lacks it,
one warning says connection events are off and request events keep working.

Protocol callbacks run in whatever context happens to be current (pitfall 7), so connection
state lives on a per-connection object keyed by the protocol (``request.protocol`` in the
middleware), never in the request's context. A response's bytes are known only once aiohttp
has written it, after the middleware returned (pitfall 16), so a request ends when its task
(one per request, platform notes §3.1) is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from aiohttp import web

from .._core.store import Context
from ..events import (
    ClientDisconnected,
    ConnectionCompleted,
    ConnectionOpened,
    LifecycleCollector,
    LifecycleEvent,
    RequestStarted,
    ResponseCompleted,
    default_worker_id,
    next_connection_id,
)
from .middleware import OWN_RECORD, ResponseCutShort

logger = logging.getLogger("aioreqctx")

# An idle connection closed this close to aiohttp's keep-alive timeout was closed by it.
_TIMEOUT_TOLERANCE_S = 0.05


class _Call:
    """One request on a connection, from the middleware's start to the end of its task."""

    # No reference to the request itself: the request refers to its call, and a cycle would
    # keep every request's objects alive until the garbage collector runs (measured: costly).
    __slots__ = (
        "ended",
        "finished",
        "method",
        "path",
        "request_id",
        "response",
        "started",
        "streaming",
        "writer",
    )

    def __init__(self, request: web.Request, request_id: str, started: float) -> None:
        self.method = request.method
        self.path = request.path
        self.writer = request.writer
        self.request_id = request_id
        self.started = started
        self.response: web.StreamResponse | None = None
        self.finished: float | None = None  # when the middleware was done with it
        self.streaming = False
        self.ended = False

    @property
    def written(self) -> bool:
        """The response went out to its end (``body_length`` is set by ``write_eof``)."""
        response = self.response
        return response is not None and (
            response.body_length > 0 or isinstance(response, web.WebSocketResponse)
        )


class _Connection:
    __slots__ = (
        "current",
        "cut_short",
        "disconnected",
        "id",
        "idle_since",
        "opened",
        "requests_served",
        "total_bytes_sent",
        "worker_id",
    )

    def __init__(self, worker_id: int, connection_id: int | None = None) -> None:
        self.id = next_connection_id() if connection_id is None else connection_id
        self.worker_id = worker_id
        self.opened = self.idle_since = perf_counter()
        self.requests_served = 0
        self.total_bytes_sent = 0
        self.current: _Call | None = None
        self.disconnected = False
        self.cut_short = False  # a handler failed mid-response: the server closed it


class ServerEvents:
    """Turns one application's connections and requests into events for ``collector``.

    ``setup(app, collector=...)`` creates it, passes it to the middleware as an observer and
    calls ``install(app)``. ``worker_id`` defaults to the process ID.
    """

    def __init__(self, collector: LifecycleCollector, worker_id: int | None = None) -> None:
        if worker_id is not None and type(worker_id) is not int:
            raise TypeError(f"worker_id must be an int, not {worker_id!r}")
        self._record = collector.record
        self._wants: Callable[[type[LifecycleEvent]], bool] = getattr(
            collector, "wants", _everything
        )
        self._worker_id = worker_id
        self._connections: dict[object, _Connection] = {}
        # Requests on connections that were never hooked: only from start to finish.
        self._unhooked: dict[object, _Connection] = {}

    def install(self, app: web.Application) -> None:
        """Hook the server ``app`` will be served by, to see connections open and close."""
        make_handler = getattr(app, "_make_handler", None)
        if not callable(make_handler):
            _cannot_hook("Application._make_handler")
            return

        def make_handler_with_events(*args: Any, **kwargs: Any) -> Any:
            server = make_handler(*args, **kwargs)
            self._hook(server)
            return server

        # Application.__setattr__ warns about custom attributes; this one is deliberate.
        object.__setattr__(app, "_make_handler", make_handler_with_events)

    def _hook(self, server: object) -> None:
        made = getattr(server, "connection_made", None)
        lost = getattr(server, "connection_lost", None)
        if not (callable(made) and callable(lost)):
            _cannot_hook("Server.connection_made/connection_lost")
            return

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            _safely(self._opened, handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            _safely(self._closed, handler, exc)
            lost(handler, exc)

        object.__setattr__(server, "connection_made", connection_made)
        object.__setattr__(server, "connection_lost", connection_lost)

    def _opened(self, handler: object, transport: asyncio.Transport) -> None:
        connection = _Connection(self._worker_id or default_worker_id())
        self._connections[handler] = connection
        if not self._wants(ConnectionOpened):
            return
        client_addr, client_port = _address(transport.get_extra_info("peername"))
        server_addr, server_port = _address(transport.get_extra_info("sockname"))
        secure = transport.get_extra_info("sslcontext") is not None
        self._record(
            ConnectionOpened(
                connection_id=connection.id,
                worker_id=connection.worker_id,
                client_addr=client_addr,
                client_port=client_port,
                server_addr=server_addr,
                server_port=server_port,
                protocol="https" if secure else "http",
            )
        )

    def _closed(self, handler: Any, exc: BaseException | None) -> None:
        connection = self._connections.pop(handler, None)
        if connection is None:
            return
        call = connection.current
        if call is not None and not call.ended:
            if call.written:
                self._end(connection, call)
            else:
                self._lose(connection, call)
        if not self._wants(ConnectionCompleted):
            return
        if connection.cut_short:
            reason = "error"
        elif connection.disconnected or isinstance(exc, ConnectionError):
            reason = "client_disconnect"
        elif exc is not None:
            reason = "error"
        elif _idle_timed_out(connection, handler):
            reason = "timeout"
        else:
            reason = "complete"
        self._record(
            ConnectionCompleted(
                connection_id=connection.id,
                worker_id=connection.worker_id,
                requests_served=connection.requests_served,
                total_bytes_sent=connection.total_bytes_sent,
                duration_ms=(perf_counter() - connection.opened) * 1000.0,
                reason=reason,
            )
        )

    def request_started(self, request: web.Request, mapping: Context) -> None:
        protocol = request.protocol
        connection = self._connections.get(protocol)
        if connection is None:  # not hooked (see install): request events, connection ID 0
            connection = _Connection(self._worker_id or default_worker_id(), 0)
            self._unhooked[protocol] = connection
        elif connection.current is not None and not connection.current.ended:
            self._end(connection, connection.current)  # aiohttp is done with it already
        request_id, start, _ = request[OWN_RECORD]  # not the mapping: an observer may clear it
        call = _Call(request, request_id, start)
        connection.current = call
        wants = self._wants
        # Only a ResponseCompleted needs the moment the request ends. Without one, the call is
        # settled when the next request on the connection starts, or the connection closes.
        if wants(ResponseCompleted) and (task := asyncio.current_task()) is not None:
            task.add_done_callback(lambda _: _safely(self._end, connection, call))
        if not wants(RequestStarted):
            return
        version = request.version
        self._record(
            RequestStarted(
                connection_id=connection.id,
                worker_id=connection.worker_id,
                request_id=call.request_id,
                method=call.method,
                path=call.path,
                http_version=f"{version.major}.{version.minor}",
            )
        )

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        # The connection's current call is this request's: HTTP/1.1 serves one at a time, and
        # a connection that closed meanwhile has settled its call and is gone from the table.
        # (Reached through the connection, not through the request: no per-request key.)
        protocol = request.protocol
        connection = self._connections.get(protocol) or self._unhooked.pop(protocol, None)
        if connection is None or (call := connection.current) is None or call.ended:
            return
        if response is None and isinstance(error, web.HTTPException):
            response = error  # aiohttp sends the raised exception as the response
        elif type(response) is ResponseCutShort:  # not complete: a disconnect, by the server
            connection.cut_short = True
            response = None
        call.response = response
        call.streaming = response is not None and response.prepared
        call.finished = perf_counter()

    def _end(self, connection: _Connection, call: _Call) -> None:
        """The request's task is done (or its connection closed): say how it ended, once."""
        if call.ended:
            return
        call.ended = True
        if connection.current is call:
            connection.current = None
        # Not the time it is settled: without a done callback that is when the next request
        # starts or the connection closes, and an idle keep-alive would look busy.
        connection.idle_since = call.finished or perf_counter()
        response = call.response
        if response is None or not call.written:
            self._lose(connection, call)
            return
        bytes_sent = response.body_length or call.writer.output_size  # WebSocket: 0
        connection.requests_served += 1
        connection.total_bytes_sent += bytes_sent
        if not self._wants(ResponseCompleted):
            return
        self._record(
            ResponseCompleted(
                connection_id=connection.id,
                worker_id=connection.worker_id,
                request_id=call.request_id,
                method=call.method,
                path=call.path,
                status=response.status,
                bytes_sent=bytes_sent,
                duration_ms=(perf_counter() - call.started) * 1000.0,
                streaming=call.streaming,
            )
        )

    def _lose(self, connection: _Connection, call: _Call) -> None:
        call.ended = True
        connection.disconnected = True
        if connection.current is call:
            connection.current = None
        if not self._wants(ClientDisconnected):
            return
        self._record(
            ClientDisconnected(
                connection_id=connection.id,
                worker_id=connection.worker_id,
                request_id=call.request_id,
                during_streaming=call.writer.output_size > 0,
            )
        )


def _everything(kind: type[LifecycleEvent]) -> bool:
    return True


def _safely(callback: Callable[..., None], *args: Any) -> None:
    """Run an event hook; a failing collector must never break aiohttp's connection handling."""
    try:
        callback(*args)
    except Exception:
        logger.exception("recording a lifecycle event failed")


def _cannot_hook(what: str) -> None:
    logger.warning(
        "aiohttp no longer has %s, so connection lifecycle events are off "
        "(request events still work); please report this with your aiohttp version",
        what,
    )


def _address(address: object) -> tuple[str, int]:
    """``(host, port)`` of a socket address; a Unix socket's path with port 0."""
    if isinstance(address, tuple | list) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return (str(address) if address else ""), 0


def _idle_timed_out(connection: _Connection, handler: Any) -> bool:
    """aiohttp closed the connection for being idle as long as its keep-alive timeout."""
    timeout = getattr(handler, "keepalive_timeout", None)
    if not isinstance(timeout, int | float) or timeout <= 0 or connection.current is not None:
        return False
    return perf_counter() - connection.idle_since + _TIMEOUT_TOLERANCE_S >= timeout
