"""Pushed fields appear on every line inside their block, stdlib and structlog, and nowhere else."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

import aioreqctx as context

from .conftest import LoopFactory, run
from .support.http_helpers import get_request, raw_exchange, serving
from .support.log_capture import ListHandler, attached

CONCURRENT = 200


def test_blocks_and_pushes_nest_and_unwind() -> None:
    log_context = context.log_context
    assert dict(log_context.fields) == {}
    with log_context(a=1, b=1) as fields:
        assert dict(fields) == {"a": 1, "b": 1}
        log_context.push(b=2, c=3)
        assert dict(log_context.fields) == {"a": 1, "b": 2, "c": 3}
        log_context.pop()
        assert dict(log_context.fields) == {"a": 1, "b": 1}
        log_context.push(d=4)  # left pushed: the block's end removes it too
    assert dict(log_context.fields) == {}
    with pytest.raises(RuntimeError, match="without a matching push"):
        log_context.pop()
    with pytest.raises(TypeError):
        log_context.fields["a"] = 1  # type: ignore[index]


def test_a_block_is_used_once_at_a_time() -> None:
    block = context.log_context(a=1)
    with block, pytest.raises(RuntimeError, match="already open"), block:
        pass
    with block:  # and can be used again once closed
        assert dict(context.log_context.fields) == {"a": 1}


def test_children_see_the_block_and_their_pushes_stay_theirs(loop_factory: LoopFactory) -> None:
    async def child() -> dict[str, Any]:
        seen = dict(context.log_context.fields)
        context.log_context.push(child=True)
        return seen

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with context.log_context(job="nightly"):
            seen = await asyncio.create_task(child())
            return seen, dict(context.log_context.fields)

    assert run(loop_factory, main) == ({"job": "nightly"}, {"job": "nightly"})


@pytest.fixture
def structlog_json() -> Iterator[io.StringIO]:
    """Pure structlog rendering JSON lines, with the request processor."""
    stream = io.StringIO()
    structlog.configure(
        processors=[context.add_request_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
    )
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def test_fields_never_cross_between_concurrent_requests(
    loop_factory: LoopFactory, structlog_json: io.StringIO
) -> None:
    stdlib_handler = ListHandler()
    stdlib_handler.addFilter(context.RequestContextFilter())
    log = structlog.get_logger()
    all_inside = asyncio.Event()
    inside = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal inside
        rid = context.get(context.REQUEST_ID)
        async with context.log_context(who=rid):
            inside += 1
            if inside == CONCURRENT:
                all_inside.set()
            await asyncio.wait_for(all_inside.wait(), 30)  # every request is in its block now
            log.info("inside")
            logging.getLogger("tests.pushed").info("inside")
        log.info("outside")
        return web.Response(text=rid)

    async def main() -> None:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", handler)
        connector = aiohttp.TCPConnector(limit=CONCURRENT)
        async with serving(app) as port, aiohttp.ClientSession(connector=connector) as session:

            async def call(n: int) -> str:
                url = f"http://127.0.0.1:{port}/"
                async with session.get(url, headers={"X-Request-ID": f"c-{n}"}) as response:
                    return await response.text()

            texts = await asyncio.gather(*map(call, range(CONCURRENT)))
        assert texts == [f"c-{n}" for n in range(CONCURRENT)]

    with attached("tests.pushed", stdlib_handler):
        run(loop_factory, main)

    events = [json.loads(line) for line in structlog_json.getvalue().splitlines()]
    assert len(events) == 2 * CONCURRENT
    for event in events:
        if event["event"] == "inside":
            assert event["who"] == event["request_id"]
        else:
            assert "who" not in event
    assert len(stdlib_handler.records) == CONCURRENT
    for record in stdlib_handler.records:
        assert record.who == record.request_id  # type: ignore[attr-defined]


def test_a_push_left_behind_does_not_reach_the_next_request_on_the_connection(
    loop_factory: LoopFactory,
) -> None:
    async def push_and_forget(request: web.Request) -> web.Response:
        context.log_context.push(leaked="yes")
        return web.Response(text="pushed")

    async def show(request: web.Request) -> web.Response:
        return web.json_response(dict(context.log_context.fields))

    async def main() -> list[bytes]:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/push", push_and_forget)
        app.router.add_get("/show", show)
        async with serving(app) as port:
            replies = await raw_exchange(port, get_request("/push"), get_request("/show"))
        return [reply.body for reply in replies]

    assert run(loop_factory, main) == [b"pushed", b"{}"]
