"""The request's own bookkeeping (its ID, start, timings) is the middleware's, not the context's.

The context is the program's to write: aiotask-context's ``clear()`` empties it and its example
middleware ``set("X-Request-ID", <the raw header>)``. Neither may break the response, and what
aioreqctx writes out (the response header, outgoing calls, job carriers, log lines) passes the
ID safety floor where it is written.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.typedefs import Handler

import aioreqctx as context
from aioreqctx import keys

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving
from .log_capture import ListHandler, attached, capture

FORGED = "abc\u2028INFO forged line"


async def clearing_handler(request: web.Request) -> web.Response:
    with context.timed_operation("db"):
        pass
    context.clear()
    with context.timed_operation("after-clear"):  # finds no timings now: only measured
        pass
    return web.Response(text=str(context.get(keys.REQUEST_ID)))


@pytest.mark.parametrize(
    ("installed_by", "streaming"),
    [("setup", False), ("setup", True), ("middleware", False)],  # only setup labels a stream
)
def test_a_handler_that_clears_its_context_still_gets_its_id_and_timing(
    loop_factory: LoopFactory, installed_by: str, streaming: bool
) -> None:
    async def streamed(request: web.Request) -> web.StreamResponse:
        context.clear()
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"streamed")
        return response

    async def main() -> list[Any]:
        if installed_by == "setup":
            app = web.Application()
            context.setup(app, server_timing=True, request_events=True)
        else:
            app = web.Application(middlewares=[context.RequestIdMiddleware(server_timing=True)])
        app.router.add_get("/", streamed if streaming else clearing_handler)
        with capture("aioreqctx.requests") as captured:
            async with serving(app) as port:
                (reply,) = await raw_exchange(port, get_request("/", b"X-Request-ID: kept-1"))
        return [reply, captured.records]

    reply, records = run(loop_factory, main)
    assert reply.status == 200
    assert reply.all("X-Request-ID") == ["kept-1"]
    (timing,) = reply.all("Server-Timing")
    assert timing.startswith("total;dur=")
    if not streaming:
        assert reply.body == b"None"  # the handler's context was cleared, as it asked
        assert "db;dur=" in timing
        assert "after-clear" not in timing
    if installed_by == "setup":
        finished = [r for r in records if getattr(r, "event", None) == "request_finished"]
        assert [(r.request_id, r.status) for r in finished] == [("kept-1", 200)]
        assert isinstance(finished[0].duration_ms, float)


@web.middleware
async def aiotask_context_example(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiotask-context's README middleware, which a migrating user still has."""
    context.set("X-Request-ID", request.headers.get("X-Request-ID"))
    return await handler(request)


def test_the_raw_header_an_old_middleware_puts_back_is_never_written_out(
    loop_factory: LoopFactory,
) -> None:
    jobs = context.JobPropagation()
    client = context.ClientPropagation()
    ports: list[int] = []

    async def downstream(request: web.Request) -> web.Response:
        return web.json_response(request.headers.get("X-Request-ID"))

    async def handler(request: web.Request) -> web.Response:
        logging.getLogger("tests.own").info("in the handler")
        async with ClientSession(middlewares=(client,)) as session:
            url = f"http://127.0.0.1:{ports[0]}/downstream"
            async with session.get(url) as response:
                seen_downstream = await response.json()
        return web.json_response({"downstream": seen_downstream, "carrier": jobs.carrier()})

    async def main() -> tuple[Any, list[str]]:
        app = web.Application(middlewares=[aiotask_context_example])
        context.setup(app)
        app.router.add_get("/", handler)
        app.router.add_get("/downstream", downstream)
        handler_ = ListHandler("%(request_id)s %(message)s")
        handler_.addFilter(context.RequestContextFilter())
        with attached("tests.own", handler_):
            async with serving(app) as port:
                ports.append(port)
                header = b"X-Request-ID: " + FORGED.encode()
                (reply,) = await raw_exchange(port, get_request("/", header))
        return reply, handler_.lines

    reply, lines = run(loop_factory, main)
    (echoed,) = reply.all("X-Request-ID")
    assert context.is_valid_request_id(echoed)  # the middleware's own ID, not the raw header
    body = json.loads(reply.body)
    assert body["downstream"] is None  # an ID that fails the floor is not sent
    assert body["carrier"] == {}  # an unsafe ID is not carried either
    (line,) = lines
    assert "\u2028" not in line
    assert line.endswith(" in the handler")
