"""One access line per request with its ID: served, raised, malformed and abandoned requests."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog
from aiohttp import web

import aioreqctx as context

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving
from .log_capture import ListHandler, attached
from .waiting import until


def make_app(slow_started: asyncio.Event) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def slow(request: web.Request) -> web.Response:
        slow_started.set()
        async with asyncio.timeout(10):
            while request.transport is not None:  # aiohttp notices the client left
                await asyncio.sleep(0.01)
        return web.Response(text="nobody is listening")

    app = web.Application()
    context.setup(app)
    app.router.add_get("/ok", ok)
    app.router.add_get("/slow", slow)
    return app


def test_every_kind_of_ending_gets_one_line(loop_factory: LoopFactory) -> None:
    handler = ListHandler()

    async def main() -> list[bytes]:
        started = asyncio.Event()
        access = logging.getLogger("tests.access")
        async with serving(
            make_app(started), access_log_class=context.AccessLogger, access_log=access
        ) as port:
            ok = await received(
                port, get_request("/ok", b"X-Request-ID: ok-1", b"User-Agent: probe/1.0")
            )
            missing = await received(port, get_request("/nowhere", b"X-Request-ID: nf-1"))
            assert ok.startswith(b"HTTP/1.1 200")
            assert missing.startswith(b"HTTP/1.1 404")
            (malformed,) = await raw_exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
            assert malformed.status == 400
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/slow", b"X-Request-ID: gone-1"))
            await asyncio.wait_for(started.wait(), 10)
            writer.close()
            await until(lambda: len(handler.records) == 4, "4 access lines")
        return [ok, missing]

    with attached("tests.access", handler):
        ok, missing = run(loop_factory, main)

    by_id = {record.request_id: record for record in handler.records}  # type: ignore[attr-defined]
    assert set(by_id) == {"ok-1", "nf-1", "-", "gone-1"}
    fields = {rid: record.event_fields for rid, record in by_id.items()}  # type: ignore[attr-defined]
    assert fields["ok-1"] == {
        "request_id": "ok-1",
        "method": "GET",
        "path": "/ok",
        "status": 200,
        "bytes": len(ok),  # headers and body, as the client received them
        "duration_ms": fields["ok-1"]["duration_ms"],
        "remote": "127.0.0.1",
        "user_agent": "probe/1.0",
        "disconnected": False,
    }
    assert fields["ok-1"]["duration_ms"] >= 0
    assert (fields["nf-1"]["status"], fields["nf-1"]["path"]) == (404, "/nowhere")
    assert fields["nf-1"]["bytes"] == len(missing)
    assert (fields["-"]["status"], fields["-"]["disconnected"]) == (400, False)
    assert fields["gone-1"] | {"duration_ms": 0} == {
        "request_id": "gone-1",
        "method": "GET",
        "path": "/slow",
        "status": 200,  # what the handler produced, although nobody received it
        "bytes": 0,
        "duration_ms": 0,
        "remote": "127.0.0.1",
        "user_agent": None,
        "disconnected": True,
    }
    line = next(line for line in handler.lines if "ok-1" in line)
    assert line.startswith("access request_id=ok-1 method=GET path=/ok status=200 bytes=")
    assert "user_agent=probe/1.0 disconnected=False" in line


def test_a_client_gone_under_handler_cancellation_still_gets_its_line(
    loop_factory: LoopFactory,
) -> None:
    handler = ListHandler()

    async def main() -> None:
        started = asyncio.Event()
        access = logging.getLogger("tests.access.cancel")
        async with serving(
            make_app(started),
            access_log_class=context.AccessLogger,
            access_log=access,
            handler_cancellation=True,
        ) as port:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/slow", b"X-Request-ID: cancelled-1"))
            await asyncio.wait_for(started.wait(), 10)
            writer.close()
            await until(lambda: len(handler.records) == 1, "1 access line")
            ok = await received(port, get_request("/ok", b"X-Request-ID: after-1"))
            assert ok.startswith(b"HTTP/1.1 200")  # the server goes on serving
            await until(lambda: len(handler.records) == 2, "2 access lines")

    with attached("tests.access.cancel", handler):
        run(loop_factory, main)
    gone, after = (record.event_fields for record in handler.records)  # type: ignore[attr-defined]
    assert gone | {"duration_ms": 0} == {
        "request_id": "cancelled-1",
        "method": "GET",
        "path": "/slow",
        "status": context.web.CLIENT_CLOSED_REQUEST,  # cancelled: the handler produced nothing
        "bytes": 0,
        "duration_ms": 0,
        "remote": "127.0.0.1",
        "user_agent": None,
        "disconnected": True,
    }
    assert (after["request_id"], after["status"]) == ("after-1", 200)


async def received(port: int, request: bytes) -> bytes:
    """Every byte the server sends for ``request`` on a connection it then closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def test_a_quiet_access_logger_is_switched_off() -> None:
    quiet = logging.getLogger("tests.access.quiet")
    quiet.setLevel(logging.WARNING)
    assert not context.AccessLogger(quiet, "").enabled
    structlog_bound = context.web.access_logger_for(structlog.get_logger())
    assert structlog_bound(quiet, "").enabled  # structlog filters by itself


def test_a_target_that_is_not_a_logger_is_refused_up_front() -> None:
    with pytest.raises(TypeError, match="structlog logger"):
        context.web.access_logger_for(42)
