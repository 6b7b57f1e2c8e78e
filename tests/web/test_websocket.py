"""WebSocket messages each run in a child scope: their own ID, the connection's as parent."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import aioreqctx
from aioreqctx import keys
from aioreqctx.web import InFlightRegistry, RequestEvents, message_scope, messages

from ..conftest import LoopFactory, run
from ..support.http_helpers import serving
from ..support.log_capture import ListHandler, attached, capture

log = logging.getLogger("tests.ws")


def ids_here() -> dict[str, Any]:
    return {
        "id": aioreqctx.get(keys.REQUEST_ID),
        "parent": aioreqctx.get(keys.PARENT_REQUEST_ID),
        "operations": aioreqctx.get(keys.OPERATIONS),
    }


def chat_app(
    registry: InFlightRegistry | None = None, events: RequestEvents | None = None
) -> web.Application:
    """Answers each message with the IDs its handling saw, in the loop and in a child task."""

    async def chat(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in messages(ws, registry=registry, events=events):
            log.info("got %s", message.data)
            async with aioreqctx.timed_operation("reply"):
                await asyncio.sleep(0.001)
            await asyncio.sleep(0)  # let the other connections interleave
            in_child = await asyncio.create_task(asyncio.to_thread(ids_here))
            seen = ids_here()
            listed = [] if registry is None else [e.to_dict() for e in registry.entries()]
            await ws.send_json(
                {
                    "id": seen["id"],
                    "parent": seen["parent"],
                    "child_id": in_child["id"],
                    "own_timings": seen["operations"] is not CONNECTION_OPERATIONS[seen["parent"]],
                    "listed": listed,
                }
            )
        return ws

    class Remember:
        def request_started(self, request: web.Request, mapping: Any) -> None:
            CONNECTION_OPERATIONS[mapping[keys.REQUEST_ID]] = mapping[keys.OPERATIONS]

        def request_finished(self, *args: object) -> None:
            pass

    app = web.Application()
    app.router.add_get("/ws", chat)
    aioreqctx.setup(app, registry=registry, observers=(Remember(),))
    return app


CONNECTION_OPERATIONS: dict[str, Any] = {}


async def converse(port: int, connection_id: str, count: int, linger: float = 0) -> list[Any]:
    """Open a WebSocket as ``connection_id``, send ``count`` messages, return the replies."""
    replies = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"http://127.0.0.1:{port}/ws", headers={"X-Request-ID": connection_id}
        ) as ws,
    ):
        for number in range(count):
            await ws.send_str(f"{connection_id}/{number}")
            replies.append(await ws.receive_json(timeout=10))
        await asyncio.sleep(linger)
    return replies


def test_three_messages_get_three_ids_with_the_connection_as_parent(
    loop_factory: LoopFactory,
) -> None:
    handler = ListHandler()
    handler.addFilter(aioreqctx.RequestContextFilter())

    async def main() -> list[Any]:
        async with serving(chat_app()) as port:
            return await converse(port, "conn-1", 3)

    with attached("tests.ws", handler):
        replies = run(loop_factory, main)
    ids = [reply["id"] for reply in replies]
    assert len(set(ids)) == 3
    assert "conn-1" not in ids
    assert [reply["parent"] for reply in replies] == ["conn-1"] * 3
    assert [reply["child_id"] for reply in replies] == ids  # tasks and threads inherit it
    assert all(reply["own_timings"] for reply in replies)
    fields = [(r.request_id, r.parent_request_id, r.getMessage()) for r in handler.records]  # type: ignore[attr-defined]
    assert fields == [(ids[n], "conn-1", f"got conn-1/{n}") for n in range(3)]


def test_fifty_concurrent_connections_have_no_cross_talk(loop_factory: LoopFactory) -> None:
    async def main() -> list[list[Any]]:
        async with serving(chat_app()) as port:
            return await asyncio.gather(*(converse(port, f"conn-{n}", 3) for n in range(50)))

    all_replies = run(loop_factory, main)
    for number, replies in enumerate(all_replies):
        assert {reply["parent"] for reply in replies} == {f"conn-{number}"}
        assert [reply["child_id"] for reply in replies] == [reply["id"] for reply in replies]
    every_id = [reply["id"] for replies in all_replies for reply in replies]
    assert len(set(every_id)) == 150


def test_a_connection_older_than_max_age_is_not_stale_and_its_message_is_listed(
    loop_factory: LoopFactory,
) -> None:
    registry = InFlightRegistry(max_age_seconds=0.2)
    warnings = ListHandler()
    swept: list[int] = []

    async def main() -> list[Any]:
        async with serving(chat_app(registry)) as port:
            conversation = asyncio.create_task(converse(port, "long-1", 1, linger=0.5))
            await asyncio.sleep(0.4)  # the connection is now older than max_age_seconds
            swept.append(registry.drop_stale())
            swept.append(registry.count())
            return await conversation

    with attached("aioreqctx.inflight", warnings):
        [reply] = run(loop_factory, main)
    assert swept == [0, 1]
    assert warnings.lines == []
    listed = {
        (entry["method"], entry["request_id"], entry["long_lived"]) for entry in reply["listed"]
    }
    assert listed == {("GET", "long-1", True), ("MESSAGE", reply["id"], False)}
    assert [entry["path"] for entry in reply["listed"]] == ["/ws", "/ws"]


def test_three_messages_log_three_finished_lines_with_their_own_ids_and_the_parent(
    loop_factory: LoopFactory,
) -> None:
    async def main() -> list[Any]:
        async with serving(chat_app(events=RequestEvents())) as port:
            return await converse(port, "conn-ev", 3)

    with capture("aioreqctx.requests") as captured:
        replies = run(loop_factory, main)
    ids = [reply["id"] for reply in replies]
    started = captured.fields("message_started")
    finished = captured.fields("message_finished")
    assert [line["request_id"] for line in started] == ids
    assert [line["request_id"] for line in finished] == ids
    assert {line["parent_request_id"] for line in started + finished} == {"conn-ev"}
    assert {line["method"] for line in finished} == {"MESSAGE"}
    for line in finished:  # each its own duration and timed operation
        assert isinstance(line["duration_ms"], float)
        assert isinstance(line["op_reply_ms"], float)
        assert 0 < line["op_reply_ms"] <= line["duration_ms"]
    assert captured.events() == ["message_started", "message_finished"] * 3


def test_a_message_that_raises_inside_async_with_logs_message_failed(
    loop_factory: LoopFactory,
) -> None:
    seen: list[str] = []

    async def fragile(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async with messages(ws, events=RequestEvents()) as incoming:
            async for message in incoming:
                seen.append(aioreqctx.get(keys.REQUEST_ID))
                if message.data == "boom":
                    raise ValueError("cannot handle boom")
                await ws.send_str("ok")
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws", fragile)
        aioreqctx.setup(app)
        async with (
            serving(app) as port,
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"http://127.0.0.1:{port}/ws", headers={"X-Request-ID": "conn-f"}
            ) as ws,
        ):
            await ws.send_str("fine")
            assert await ws.receive_str(timeout=10) == "ok"
            await ws.send_str("boom")
            assert (await ws.receive(timeout=10)).type in {
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
            }

    with capture("aioreqctx.requests") as captured:
        run(loop_factory, main)
    (fine,) = captured.fields("message_finished")
    (failed,) = captured.fields("message_failed")
    assert (fine["request_id"], failed["request_id"]) == tuple(seen)
    assert failed["parent_request_id"] == "conn-f"
    assert failed["error"] == "ValueError"
    (record,) = [r for r in captured.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None  # the traceback of the failed message


def test_messages_events_must_be_request_events() -> None:
    async def main() -> None:
        async with aioreqctx.unit_of_work():
            with pytest.raises(TypeError, match="events must be a RequestEvents"):
                messages(web.WebSocketResponse(), events=True)  # type: ignore[arg-type]

    asyncio.run(main())


def test_messages_outside_a_request_is_refused_clearly() -> None:
    with pytest.raises(RuntimeError, match=r"must be used in the handler"):
        messages(web.WebSocketResponse())
    with pytest.raises(RuntimeError, match=r"must be used in the handler"):
        message_scope()


def test_each_server_sent_event_gets_a_child_scope_and_the_stream_is_long_lived(
    loop_factory: LoopFactory,
) -> None:
    registry = InFlightRegistry(max_age_seconds=0.1)

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(3):
            async with message_scope():
                seen = ids_here()
                await response.write(f"data: {seen['id']} {seen['parent']}\n\n".encode())
            await asyncio.sleep(0.1)
        return response

    async def main() -> tuple[list[str], int]:
        app = web.Application()
        app.router.add_get("/events", events)
        aioreqctx.setup(app, registry=registry)
        async with (
            serving(app) as port,
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/events",
                headers={"X-Request-ID": "stream-1", "Accept": "text/event-stream"},
            ) as response,
        ):
            await asyncio.sleep(0.2)
            dropped = registry.drop_stale()
            body = await response.text()
        return [line for line in body.splitlines() if line], dropped

    data, dropped = run(loop_factory, main)
    assert dropped == 0
    ids = [line.split()[1] for line in data]
    assert len(set(ids)) == 3
    assert "stream-1" not in ids
    assert {line.split()[2] for line in data} == {"stream-1"}
