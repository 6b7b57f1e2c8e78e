"""Lifecycle events from a real aiohttp server, driven by raw sockets, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx.events import as_collector
from aioreqctx.web.server_events import ServerEvents

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, read_response, serving


class Handlers:
    """Routes whose handlers tell the test when they are inside the request."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok " * int(request.query.get("n", "1")))

    async def slow(self, request: web.Request) -> web.Response:
        self.entered.set()
        await self.release.wait()
        return web.Response(text="late")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(int(request.query.get("n", "500"))):
            await response.write(b"chunk " * 20)
            self.entered.set()
            await asyncio.sleep(0.01)
        return response

    def app(self, collector: Any) -> web.Application:
        app = web.Application()
        context.setup(app, collector=collector)
        app.router.add_get("/ok", self.ok)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/stream", self.stream)
        return app


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s on a loaded machine) for ``condition``."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting for lifecycle events")


def closed(events: list[Any]) -> Callable[[], bool]:
    return lambda: any(isinstance(e, context.events.ConnectionCompleted) for e in events)


def kinds(events: list[Any]) -> list[str]:
    return [type(event).__name__ for event in events]


def test_one_connection_opens_and_completes(loop_factory: LoopFactory) -> None:
    events: list[Any] = []

    async def main() -> None:
        async with serving(Handlers().app(events.append)) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            client_port = writer.get_extra_info("sockname")[1]
            writer.close()
            await until(closed(events))
        opened, done = events
        assert opened.client_addr == "127.0.0.1"
        assert opened.client_port == client_port
        assert opened.server_port == port
        assert opened.protocol == "http"
        assert opened.worker_id == os.getpid()
        assert done.connection_id == opened.connection_id
        assert done.timestamp_ns >= opened.timestamp_ns

    run(loop_factory, main)
    assert kinds(events) == ["ConnectionOpened", "ConnectionCompleted"]
    assert events[1].reason == "complete"
    assert events[1].requests_served == 0


def test_keep_alive_requests_carry_their_ids_and_count_every_byte(
    loop_factory: LoopFactory,
) -> None:
    events: list[Any] = []
    received = bytearray()

    async def main() -> None:
        async with serving(Handlers().app(events.append)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(4):  # sequential keep-alive requests, then one that closes
                writer.write(get_request(f"/ok?n={i}", f"X-Request-ID: ka-{i}".encode()))
                response = await asyncio.wait_for(read_response(reader), 10)
                assert response.all("X-Request-ID") == [f"ka-{i}"]
            writer.write(get_request("/ok?n=9", b"X-Request-ID: ka-4", b"Connection: close"))
            # The last response, byte for byte, up to the server's FIN.
            received.extend(await asyncio.wait_for(reader.read(), 10))
            writer.close()
            await until(closed(events))

    run(loop_factory, main)
    started = [e for e in events if isinstance(e, context.events.RequestStarted)]
    completed = [e for e in events if isinstance(e, context.events.ResponseCompleted)]
    assert kinds(events) == [
        "ConnectionOpened",
        *["RequestStarted", "ResponseCompleted"] * 5,
        "ConnectionCompleted",
    ]
    assert [e.request_id for e in started] == [f"ka-{i}" for i in range(5)]
    assert [e.request_id for e in completed] == [f"ka-{i}" for i in range(5)]
    assert {e.connection_id for e in events} == {events[0].connection_id}
    assert started[0].http_version == "1.1"
    assert started[0].path == "/ok"
    assert completed[-1].bytes_sent == len(received)
    done = events[-1]
    assert done.requests_served == 5
    assert done.reason == "complete"
    assert done.total_bytes_sent == sum(e.bytes_sent for e in completed)


def test_byte_totals_equal_what_the_client_received(loop_factory: LoopFactory) -> None:
    events: list[Any] = []
    wire = bytearray()

    async def main() -> None:
        async with serving(Handlers().app(events.append)) as port:
            requests = [
                get_request(f"/ok?n={i}", f"X-Request-ID: p-{i}".encode()) for i in range(5)
            ]
            last = get_request("/stream?n=3", b"X-Request-ID: p-5", b"Connection: close")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"".join(requests) + last)  # pipelined
            wire.extend(await asyncio.wait_for(reader.read(), 20))
            writer.close()
            await until(closed(events))

    run(loop_factory, main)
    completed = [e for e in events if isinstance(e, context.events.ResponseCompleted)]
    assert [e.request_id for e in completed] == [f"p-{i}" for i in range(6)]
    assert [e.streaming for e in completed] == [False] * 5 + [True]
    assert events[-1].requests_served == 6
    assert events[-1].total_bytes_sent == len(wire)


@pytest.mark.parametrize("cancellation", [False, True], ids=["default", "handler_cancellation"])
def test_a_client_closing_mid_response_is_a_disconnect(
    loop_factory: LoopFactory, cancellation: bool
) -> None:
    events: list[Any] = []
    handlers = Handlers()

    async def main() -> None:
        async with serving(handlers.app(events.append), handler_cancellation=cancellation) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/slow", b"X-Request-ID: gone-1"))
            await asyncio.wait_for(handlers.entered.wait(), 10)
            writer.close()
            await until(closed(events))
            handlers.release.set()
            await asyncio.sleep(0.05)  # the handler ends: nothing more is reported

    run(loop_factory, main)
    assert kinds(events) == [
        "ConnectionOpened",
        "RequestStarted",
        "ClientDisconnected",
        "ConnectionCompleted",
    ]
    assert events[2].request_id == "gone-1"
    assert events[2].during_streaming is False
    assert events[3].reason == "client_disconnect"
    assert events[3].requests_served == 0


def test_a_client_closing_mid_stream_is_a_disconnect_during_streaming(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Any] = []
    handlers = Handlers()

    async def main() -> None:
        async with serving(handlers.app(events.append)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/stream", b"X-Request-ID: gone-2"))
            await asyncio.wait_for(reader.readuntil(b"chunk"), 10)
            writer.close()
            await until(closed(events))

    run(loop_factory, main)
    assert kinds(events)[2:] == ["ClientDisconnected", "ConnectionCompleted"]
    assert events[2].request_id == "gone-2"
    assert events[2].during_streaming is True
    assert events[3].reason == "client_disconnect"


def test_a_malformed_request_is_a_connection_without_requests(loop_factory: LoopFactory) -> None:
    events: list[Any] = []

    async def main() -> None:
        async with serving(Handlers().app(events.append)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert reply.startswith(b"HTTP/1.0 400")
            await until(closed(events))
            (response,) = await raw_exchange(port, get_request("/ok"))  # still serving
            assert response.status == 200

    run(loop_factory, main)
    assert kinds(events)[:2] == ["ConnectionOpened", "ConnectionCompleted"]
    assert events[1].requests_served == 0


def test_an_idle_connection_closed_by_keep_alive_timeout(loop_factory: LoopFactory) -> None:
    events: list[Any] = []

    async def main() -> None:
        app = Handlers().app(events.append)
        async with serving(app, keepalive_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/ok"))
            await asyncio.wait_for(read_response(reader), 10)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # the server hung up
            writer.close()
            await until(closed(events))

    run(loop_factory, main)
    assert events[-1].reason == "timeout"
    assert events[-1].requests_served == 1


class ConnectionsOnly:
    """A collector that wants no request events: the server then tracks requests lazily."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def wants(self, kind: type) -> bool:
        return kind in (context.events.ConnectionOpened, context.events.ConnectionCompleted)

    def record(self, event: Any) -> None:
        self.events.append(event)


def test_an_idle_timeout_is_seen_without_request_events(loop_factory: LoopFactory) -> None:
    collector = ConnectionsOnly()

    async def main() -> None:
        async with serving(Handlers().app(collector), keepalive_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(get_request("/ok"))
                await asyncio.wait_for(read_response(reader), 10)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            await until(closed(collector.events))

    run(loop_factory, main)
    assert kinds(collector.events) == ["ConnectionOpened", "ConnectionCompleted"]
    assert collector.events[1].reason == "timeout"
    assert collector.events[1].requests_served == 2


def test_request_events_share_the_request_id_in_the_log(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioreqctx.lifecycle")

    async def main() -> None:
        async with serving(Handlers().app(context.LoggingCollector())) as port:
            (response,) = await raw_exchange(port, get_request("/ok", b"Connection: close"))
            request_id = response.all("X-Request-ID")[0]
            await until(lambda: "connection_completed" in caplog.text)
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("cycle")]
        assert [line["event"] for line in lines] == [
            "connection_opened",
            "request_started",
            "response_completed",
            "connection_completed",
        ]
        assert [line["request_id"] for line in lines[1:3]] == [request_id, request_id]
        assert len({line["connection_id"] for line in lines}) == 1

    run(loop_factory, main)


def test_at_warning_only_disconnects_are_logged(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The filtered events are never built, yet a disconnect still finds its request."""
    caplog.set_level(logging.WARNING, logger="aioreqctx.lifecycle")
    handlers = Handlers()

    async def main() -> None:
        async with serving(handlers.app(context.LoggingCollector())) as port:
            await raw_exchange(port, get_request("/ok"), get_request("/ok"))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/stream", b"X-Request-ID: quits"))
            await asyncio.wait_for(reader.readuntil(b"chunk"), 10)
            writer.close()
            await until(lambda: "client_disconnected" in caplog.text)
            await asyncio.sleep(0.05)

    run(loop_factory, main)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name.endswith("cycle")]
    assert [(line["event"], line["request_id"]) for line in lines] == [
        ("client_disconnected", "quits")
    ]
    assert lines[0]["during_streaming"] is True


def test_a_failing_collector_never_breaks_the_server(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("collector bug")

    async def main() -> None:
        async with serving(Handlers().app(broken)) as port:
            responses = await raw_exchange(port, get_request("/ok"), get_request("/ok"))
            assert [r.status for r in responses] == [200, 200]

    run(loop_factory, main)
    assert "collector bug" in caplog.text


def test_the_default_collector_adds_nothing() -> None:
    app = web.Application()
    middleware = context.setup(app, collector=context.events.NoopCollector())
    assert middleware.observers == ()
    assert "_make_handler" not in vars(app)


def test_worker_id_is_settable_and_checked(loop_factory: LoopFactory) -> None:
    events: list[Any] = []

    async def main() -> None:
        app = web.Application()
        context.setup(app, collector=events.append, worker_id=7)
        app.router.add_get("/", Handlers().ok)
        async with serving(app) as port:
            await raw_exchange(port, get_request("/"))
            await until(lambda: len(events) >= 3)

    run(loop_factory, main)
    assert {event.worker_id for event in events} == {7}
    with pytest.raises(TypeError, match="worker_id"):
        context.setup(web.Application(), collector=events.append, worker_id="w1")  # type: ignore[arg-type]


def test_without_the_private_hook_request_events_still_flow(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Any] = []

    class Changed:  # an aiohttp whose Application lacks _make_handler
        pass

    ServerEvents(as_collector(events.append)).install(Changed())  # type: ignore[arg-type]
    assert "connection lifecycle events are off" in caplog.text

    async def main() -> None:
        app = web.Application()
        context.setup(app, collector=events.append)
        del app.__dict__["_make_handler"]  # as if the hook had not been installed
        app.router.add_get("/", Handlers().ok)
        async with serving(app) as port:
            await raw_exchange(port, get_request("/", b"X-Request-ID: unhooked"))
            await until(lambda: len(events) >= 2)

    run(loop_factory, main)
    assert kinds(events) == ["RequestStarted", "ResponseCompleted"]
    assert events[1].request_id == "unhooked"
    assert {event.connection_id for event in events} == {0}


SERVER = textwrap.dedent(
    """
    import logging, sys
    from aiohttp import web
    import aioreqctx

    logging.basicConfig(level=logging.DEBUG, format="%(message)s", stream=sys.stdout)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    app = web.Application()
    aioreqctx.setup(app, collector=aioreqctx.LoggingCollector(log_format="json"))
    app.router.add_get("/", lambda request: web.Response(text="hi"))
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
    """
)


def test_web_run_app_in_a_subprocess(tmp_path: Path, unused_tcp_port: int) -> None:
    port = unused_tcp_port  # pytest-asyncio's
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    server = subprocess.Popen(
        [sys.executable, str(script), str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                    client.sendall(get_request("/", b"X-Request-ID: run-app", b"Connection: close"))
                    reply = client.recv(65536)
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        assert reply.startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events == [
        "connection_opened",
        "request_started",
        "response_completed",
        "connection_completed",
    ]
    assert lines[2]["request_id"] == "run-app"
    assert lines[3]["worker_id"] == server.pid
