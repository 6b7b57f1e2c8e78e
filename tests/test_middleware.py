"""The middleware on a real server: one ID per request, on every response path, never shared."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from typing import Any, ClassVar

import pytest
from aiohttp import ClientSession, TCPConnector, WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

import aioreqctx as context

from .conftest import FACTORIES, LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving
from .log_capture import ListHandler, attached


def is_uuid4(value: str) -> bool:
    try:
        return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value
    except ValueError:
        return False


class SeenBy(logging.Filter):
    """Records which request ID was current when each record was emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, Any]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen.append((record.getMessage(), context.get(context.REQUEST_ID)))
        return True


class ContextAccessLogger(AbstractAccessLogger):
    seen: ClassVar[list[tuple[str, Any]]] = []

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        ContextAccessLogger.seen.append((request.path, context.get(context.REQUEST_ID)))


async def ok(request: web.Request) -> web.Response:
    return web.Response(text=str(context.get(context.REQUEST_ID)))


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(str(context.get(context.REQUEST_ID)).encode())
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(str(context.get(context.REQUEST_ID)))
    await ws.close()
    return ws


async def crash(request: web.Request) -> web.Response:
    raise ValueError("boom")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ok")


async def unavailable(request: web.Request) -> web.Response:
    raise web.HTTPServiceUnavailable(headers={"Retry-After": "30"})


async def sets_own_header(request: web.Request) -> web.Response:
    return web.Response(text="x", headers={"X-Request-ID": "from-the-handler"})


def make_app(*, with_setup: bool = True, **options: Any) -> web.Application:
    app = (
        web.Application()
        if with_setup
        else web.Application(middlewares=[context.RequestIdMiddleware(**options)])
    )
    if with_setup:
        context.setup(app, **options)
    app.router.add_get("/ok", ok)
    app.router.add_get("/stream", stream)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/crash", crash)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/unavailable", unavailable)
    app.router.add_get("/own-header", sets_own_header)
    app.router.add_post("/only-post", ok)
    return app


PATHS = {
    "/ok": 200,
    "/stream": 200,
    "/crash": 500,
    "/redirect": 302,
    "/unavailable": 503,
    "/own-header": 200,
    "/no-such-route": 404,
    "/only-post": 405,
}


def test_every_response_path_carries_exactly_one_id(loop_factory: LoopFactory) -> None:
    async def main() -> dict[str, Any]:
        async with serving(make_app()) as port:
            replies = {}
            for path in PATHS:
                (reply,) = await raw_exchange(port, get_request(path, b"X-Request-ID: rid-1"))
                replies[path] = reply
            return replies

    replies = run(loop_factory, main)
    for path, status in PATHS.items():
        assert replies[path].status == status, path
        assert replies[path].all("X-Request-ID") == ["rid-1"], path
    assert replies["/redirect"].all("Location") == ["/ok"]
    assert replies["/unavailable"].all("Retry-After") == ["30"]
    assert replies["/ok"].body == replies["/stream"].body == b"rid-1"


def test_websocket_handshake_carries_the_id(loop_factory: LoopFactory) -> None:
    async def main() -> tuple[str, str]:
        async with serving(make_app()) as port, ClientSession() as session:
            url = f"http://127.0.0.1:{port}/ws"
            async with session.ws_connect(url, headers={"X-Request-ID": "ws-1"}) as ws:
                message = await ws.receive(timeout=5)
                assert message.type == WSMsgType.TEXT
                return ws._response.headers["X-Request-ID"], message.data

    assert run(loop_factory, main) == ("ws-1", "ws-1")


def test_bare_middleware_labels_what_it_can_reach(loop_factory: LoopFactory) -> None:
    async def main() -> dict[str, list[str]]:
        async with serving(make_app(with_setup=False)) as port:
            found = {}
            for path in ("/ok", "/crash", "/redirect", "/no-such-route", "/stream"):
                (reply,) = await raw_exchange(port, get_request(path))
                found[path] = reply.all("X-Request-ID")
            return found

    found = run(loop_factory, main)
    for path in ("/ok", "/crash", "/redirect", "/no-such-route"):
        assert len(found[path]) == 1, path
        assert is_uuid4(found[path][0]), path
    assert found["/stream"] == []  # prepared inside the handler: needs setup(app)


def test_unhandled_error_is_logged_inside_the_request(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    seen = SeenBy()
    logging.getLogger("aiohttp.server").addFilter(seen)

    async def main() -> None:
        async with serving(make_app()) as port:
            await raw_exchange(port, get_request("/crash", b"X-Request-ID: crash-1"))

    try:
        with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
            run(loop_factory, main)
    finally:
        logging.getLogger("aiohttp.server").removeFilter(seen)
    assert ("Error handling request from 127.0.0.1", "crash-1") in seen.seen


@pytest.mark.parametrize("factory_name", ["no factory", *FACTORIES])
def test_access_logger_signal_later_middleware_tasks_and_threads_see_the_request(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    seen: dict[str, Any] = {}
    background_done = asyncio.Event()
    background: list[asyncio.Task[None]] = []

    @web.middleware
    async def later(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen["later middleware"] = context.get(context.REQUEST_ID)
        return await handler(request)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        seen["on_response_prepare"] = context.get(context.REQUEST_ID)

    async def fire_and_forget() -> None:
        await asyncio.sleep(0.05)
        seen["background task"] = context.get(context.REQUEST_ID)
        background_done.set()

    async def handler(request: web.Request) -> web.Response:
        seen["child task"] = await asyncio.create_task(
            asyncio.sleep(0, context.get(context.REQUEST_ID))
        )
        seen["thread"] = await context.run_in_executor(None, context.get, context.REQUEST_ID)
        background.append(asyncio.create_task(fire_and_forget()))
        seen["elapsed"] = context.elapsed_ms()
        return web.Response()

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(FACTORIES.get(factory_name))
        app = web.Application(middlewares=[later])
        context.setup(app)
        app.on_response_prepare.append(on_prepare)
        app.router.add_get("/", handler)
        async with serving(app, access_log_class=ContextAccessLogger) as port:
            await raw_exchange(port, get_request("/", b"X-Request-ID: all-1"))
            await asyncio.wait_for(background_done.wait(), 5)

    ContextAccessLogger.seen = []
    run(loop_factory, main)
    elapsed = seen.pop("elapsed")
    assert isinstance(elapsed, float)
    assert elapsed >= 0
    assert seen == dict.fromkeys(
        ["later middleware", "child task", "thread", "on_response_prepare", "background task"],
        "all-1",
    )
    assert ContextAccessLogger.seen == [("/", "all-1")]


async def remember(request: web.Request) -> web.Response:
    previous = context.get("user")
    context.set("user", request.query.get("user"))
    await asyncio.sleep(random.random() / 1000)
    child_saw = await asyncio.create_task(asyncio.sleep(0, context.get("user")))
    return web.json_response(
        {"previous": previous, "user": context.get("user"), "child": child_saw,
         "rid": context.get(context.REQUEST_ID)}
    )  # fmt: skip


def _remember_app() -> web.Application:
    app = web.Application()
    context.setup(app)
    app.router.add_get("/", remember)
    return app


def test_keep_alive_and_pipelined_requests_are_isolated(loop_factory: LoopFactory) -> None:
    async def main() -> list[Any]:
        async with serving(_remember_app()) as port:
            requests = [
                get_request(f"/?user=u{n}", f"X-Request-ID: p{n}".encode()) for n in range(6)
            ]
            sequential = [(await raw_exchange(port, request))[0] for request in requests[:2]]
            pipelined = await raw_exchange(port, *requests)
            return sequential + pipelined

    replies = run(loop_factory, main)
    bodies = [json.loads(reply.body) for reply in replies]
    for body, reply in zip(bodies, replies, strict=True):
        assert body["previous"] is None
        assert body["user"] == body["child"]
        assert reply.all("X-Request-ID") == [body["rid"]]
        assert body["rid"] == "p" + body["user"][1:]


def test_two_thousand_concurrent_requests_never_cross_talk(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def main() -> list[tuple[str, dict[str, Any], str]]:
        asyncio.get_running_loop().set_task_factory(FACTORIES[factory_name])
        async with serving(_remember_app()) as port:
            connector = TCPConnector(limit=100)
            async with ClientSession(f"http://127.0.0.1:{port}", connector=connector) as s:

                async def one(n: int) -> tuple[str, dict[str, Any], str]:
                    headers = {"X-Request-ID": f"req-{n}"}
                    async with s.get(f"/?user=u{n}", headers=headers) as response:
                        return f"{n}", await response.json(), response.headers["X-Request-ID"]

                return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(2000))), 120)

    results = run(loop_factory, main)
    assert len(results) == 2000
    for n, body, header in results:
        assert body == {"previous": None, "user": f"u{n}", "child": f"u{n}", "rid": f"req-{n}"}
        assert header == f"req-{n}"


def test_startup_values_are_seen_but_never_shared_writable_state(
    loop_factory: LoopFactory,
) -> None:
    async def handler(request: web.Request) -> web.Response:
        seen = context.get("app")
        context.set("app", f"changed by {request.query['n']}")
        return web.Response(text=str(seen))

    async def main() -> tuple[list[bytes], Any]:
        context.set("app", "demo")
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            replies = [(await raw_exchange(port, get_request(f"/?n={n}")))[0] for n in range(3)]
        return [reply.body for reply in replies], context.get("app")

    bodies, after = run(loop_factory, main)
    assert bodies == [b"demo"] * 3
    assert after == "demo"


def test_a_client_hanging_up_mid_stream_is_not_a_server_error(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    statuses: list[int] = []
    first_chunk_sent = asyncio.Event()

    class StatusLogger(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            statuses.append(response.status)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while True:
            await response.write(b"tick\n")
            first_chunk_sent.set()
            await asyncio.sleep(0.02)

    async def main() -> None:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/endless", endless)
        async with serving(app, access_log_class=StatusLogger) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/endless"))
            await asyncio.wait_for(first_chunk_sent.wait(), 5)
            await reader.readuntil(b"tick\n")
            writer.close()
            for _ in range(500):
                if statuses:
                    break
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
        run(loop_factory, main)
    assert statuses == [context.web.CLIENT_CLOSED_REQUEST]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("disconnected" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("arrangement", ["listed twice", "main app and sub-app"])
def test_the_bare_middleware_twice_still_gives_one_id_per_request(
    loop_factory: LoopFactory, arrangement: str
) -> None:
    lines = ListHandler("%(levelname)s %(message)s")
    seen = SeenBy()
    second = context.RequestIdMiddleware(response_header="X-Other-ID")

    async def handler(request: web.Request) -> web.Response:
        logging.getLogger("tests.twice").info("handled")
        return web.Response(text=str(context.get(context.REQUEST_ID)))

    def make() -> web.Application:
        if arrangement == "listed twice":
            app = web.Application(middlewares=[context.web.request_id_middleware, second])
            app.router.add_get("/api/x", handler)
            return app
        app = web.Application(middlewares=[context.web.request_id_middleware])
        api = web.Application(middlewares=[second])
        api.router.add_get("/x", handler)
        app.add_subapp("/api", api)
        return app

    async def main() -> list[Any]:
        async with serving(make()) as port:
            return await raw_exchange(
                port,
                get_request("/api/x", b"X-Request-ID: bad value"),
                get_request("/api/x", b"X-Request-ID: twice-2"),
            )

    logging.getLogger("tests.twice").addFilter(seen)
    try:
        with attached("aioreqctx", lines), attached("tests.twice", ListHandler()):
            replies = run(loop_factory, main)
    finally:
        logging.getLogger("tests.twice").removeFilter(seen)
    ids = [reply.all("X-Request-ID") for reply in replies]
    assert is_uuid4(ids[0][0])
    assert ids[1] == ["twice-2"]
    assert [[reply.body.decode()] for reply in replies] == ids  # what the handler saw
    assert [[request_id] for _, request_id in seen.seen] == ids  # what its log lines carry
    assert [reply.all("X-Other-ID") for reply in replies] == [[], []]
    assert [line.split()[0] for line in lines.lines] == ["WARNING", "DEBUG"]  # once each
    assert "second RequestIdMiddleware" in lines.lines[1]
