"""A handler that fails after its response started: cut short, never a second response."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType, web
from aiohttp.abc import AbstractAccessLogger

import aioreqctx as context

from .conftest import LoopFactory, run
from .http_helpers import get_request, serving
from .log_capture import ListHandler, attached

BODY = b"0123456789" * 1000


class FailureError(Exception):
    """What the handlers raise once their response is on the wire."""


async def started(request: web.Request, response: web.StreamResponse) -> None:
    await response.prepare(request)
    await response.write(b"data: first\n\n")


async def fixed_length(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1000
    await started(request, response)
    raise FailureError


async def chunked(request: web.Request) -> web.StreamResponse:
    await started(request, web.StreamResponse())
    raise FailureError


async def sse(request: web.Request) -> web.StreamResponse:
    await started(request, web.StreamResponse(headers={"Content-Type": "text/event-stream"}))
    raise TimeoutError  # would be a 504 before the response started


async def http_exception(request: web.Request) -> web.StreamResponse:
    await started(request, web.StreamResponse())
    raise web.HTTPNotFound


async def file(request: web.Request) -> web.StreamResponse:
    await web.FileResponse(request.app[FILE]).prepare(request)
    raise FailureError


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str("hello")
    raise FailureError


FILE: web.AppKey[Path] = web.AppKey("file")
HANDLERS: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "/fixed-length": fixed_length,
    "/chunked": chunked,
    "/sse": sse,
    "/http-exception": http_exception,
    "/file": file,
    "/ws": websocket,
}


class Seen(AbstractAccessLogger):
    lines: list[tuple[str, int, bool]] = []  # noqa: RUF012 - shared by the class aiohttp builds

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        transport = request.transport
        disconnected = transport is None or transport.is_closing()
        Seen.lines.append((request.path, response.status, disconnected))


def make_app(tmp_path: Path, *, with_setup: bool, collector: Any = None) -> web.Application:
    app = web.Application(middlewares=[] if with_setup else [context.web.request_id_middleware])
    if with_setup:
        context.setup(app, collector=collector)
    path = tmp_path / "file.bin"
    path.write_bytes(BODY)
    app[FILE] = path
    for route, handler in HANDLERS.items():
        app.router.add_get(route, handler)
    return app


async def read_until_closed(port: int, path: str) -> bytes:
    """What a keep-alive client receives for ``path`` before the server closes the connection;
    a second request on it would get nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(get_request(path, b"X-Request-ID: cut-1"))
        return await asyncio.wait_for(reader.read(), 10)  # EOF: the server closed it
    finally:
        writer.close()


@pytest.mark.parametrize("with_setup", [True, False], ids=["setup", "bare"])
@pytest.mark.parametrize("path", ["/fixed-length", "/chunked", "/sse", "/http-exception", "/file"])
def test_a_started_response_is_cut_short_never_followed_by_another(
    loop_factory: LoopFactory, tmp_path: Path, path: str, with_setup: bool
) -> None:
    errors = ListHandler()
    Seen.lines = []

    async def main() -> bytes:
        async with serving(
            make_app(tmp_path, with_setup=with_setup), access_log_class=Seen
        ) as port:
            return await read_until_closed(port, path)

    with attached("aiohttp.server", errors):
        errors.addFilter(lambda record: record.levelno >= logging.ERROR)
        errors.setFormatter(logging.Formatter("%(message)s"))
        received = run(loop_factory, main)
    assert received.count(b"HTTP/1.1") == 1, received[:300]  # one response, the one started
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    if path == "/file":
        assert received.endswith(BODY)  # all of it had gone out before the handler raised
    else:
        # cut short: no last chunk, nothing after the first write
        assert received.rstrip(b"\r\n").endswith(b"data: first"), received[-40:]
    (record,) = errors.records
    assert record.exc_info is not None
    error = record.exc_info[1]
    if not with_setup and error is not None:  # aiohttp's own line: the handler's is its cause
        error = error.__cause__
    assert type(error) in (FailureError, TimeoutError, web.HTTPNotFound)
    if with_setup:  # the access log says what went out, and that the response was cut
        assert Seen.lines == [(path, 200, True)]


def test_the_error_is_reported_with_the_request_id_and_events_say_it_was_cut(
    loop_factory: LoopFactory, tmp_path: Path
) -> None:
    events: list[Any] = []
    ids: list[Any] = []
    server = logging.getLogger("aiohttp.server")

    def seen(record: logging.LogRecord) -> bool:
        ids.append(context.get(context.REQUEST_ID))
        return True

    async def main() -> bytes:
        app = make_app(tmp_path, with_setup=True, collector=events.append)
        async with serving(app, access_log_class=context.AccessLogger) as port:
            received = await read_until_closed(port, "/chunked")
            for _ in range(500):
                if type(events[-1]).__name__ == "ConnectionCompleted":
                    break
                await asyncio.sleep(0.01)
            return received

    access = ListHandler("%(request_id)s %(status)s %(bytes)s %(disconnected)s")
    server.addFilter(seen)
    try:
        with attached("aiohttp.access", access):
            received = run(loop_factory, main)
    finally:
        server.removeFilter(seen)
    assert ids == ["cut-1"]
    assert access.lines == [f"cut-1 200 {len(received)} True"]
    kinds = [type(event).__name__ for event in events]
    assert kinds == [
        "ConnectionOpened",
        "RequestStarted",
        "ClientDisconnected",
        "ConnectionCompleted",
    ]
    assert events[2].during_streaming is True
    assert events[3].reason == "error"


@pytest.mark.parametrize("with_setup", [True, False], ids=["setup", "bare"])
def test_a_websocket_failing_after_the_handshake_is_closed_not_garbled(
    loop_factory: LoopFactory, tmp_path: Path, with_setup: bool
) -> None:
    async def main() -> list[WSMsgType]:
        async with (
            serving(make_app(tmp_path, with_setup=with_setup)) as port,
            ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            return [(await ws.receive(timeout=5)).type for _ in range(2)]

    assert run(loop_factory, main) == [WSMsgType.TEXT, WSMsgType.CLOSED]
