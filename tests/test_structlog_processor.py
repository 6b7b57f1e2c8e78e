"""The README's structlog set-ups, for real: JSON lines that parse and carry the request ID."""

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
from aioreqctx import keys

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving
from .log_capture import attached
from .waiting import until


def pure_structlog_json(stream: io.StringIO) -> None:
    structlog.configure(
        processors=[
            context.add_request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
    )


def stdlib_integrated_json(handler: logging.Handler) -> None:
    shared: list[Any] = [
        context.add_request_context,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[context.log.add_event_fields, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def make_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        log = structlog.get_logger("tests.sl.app")
        context.set(keys.METADATA, {"tenant": "acme"})
        log.info("in handler", step=1)
        log.info("explicit wins", request_id="chosen-by-caller")
        await asyncio.create_task(asyncio.to_thread(log.info, "in a thread"))
        logging.getLogger("tests.sl.plain").warning("plain stdlib")
        return web.Response(text="ok")

    app = web.Application()
    context.setup(app)
    app.router.add_get("/", handler)
    return app


async def serve_two_requests(access_log_class: type[context.AccessLogger]) -> None:
    async with (
        serving(make_app(), access_log_class=access_log_class) as port,
        aiohttp.ClientSession() as session,
    ):
        for rid in ("sl-1", "sl-2"):
            async with session.get(
                f"http://127.0.0.1:{port}/", headers={"X-Request-ID": rid}
            ) as response:
                assert response.status == 200


def check_events(events: list[dict[str, Any]], stdlib_integrated: bool) -> None:
    for rid in ("sl-1", "sl-2"):
        by_event = {event["event"]: event for event in events if event["request_id"] == rid}
        assert by_event["in handler"]["step"] == 1
        assert by_event["in handler"]["tenant"] == "acme"
        assert by_event["in a thread"]["level"] == "info"
        access = by_event["access"]
        assert (access["method"], access["path"], access["status"]) == ("GET", "/", 200)
        assert access["bytes"] > 0
        assert access["disconnected"] is False
        if stdlib_integrated:
            assert by_event["plain stdlib"]["logger"] == "tests.sl.plain"
            assert by_event["in handler"]["logger"] == "tests.sl.app"
    assert sum(event["request_id"] == "chosen-by-caller" for event in events) == 2
    startup = [event for event in events if event["event"] == "startup"]
    assert startup[0]["request_id"] == "-"


def test_pure_structlog_json(loop_factory: LoopFactory, reset_structlog: None) -> None:
    stream = io.StringIO()
    pure_structlog_json(stream)
    access_log_class = context.web.access_logger_for(structlog.get_logger("access"))

    async def main() -> None:
        structlog.get_logger().info("startup")
        await serve_two_requests(access_log_class)
        await until(lambda: stream.getvalue().count('"event": "access"') == 2, "2 access lines")

    run(loop_factory, main)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    check_events(events, stdlib_integrated=False)
    assert all(event["timestamp"].endswith("Z") for event in events)


def test_stdlib_integrated_json(loop_factory: LoopFactory, reset_structlog: None) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    stdlib_integrated_json(handler)
    access_log_class = context.web.access_logger_for(structlog.get_logger("tests.sl.access"))

    async def main() -> None:
        structlog.get_logger("tests.sl.app").info("startup")
        await serve_two_requests(access_log_class)
        await until(lambda: stream.getvalue().count('"event": "access"') == 2, "2 access lines")

    with attached("tests.sl", handler):
        run(loop_factory, main)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    check_events(events, stdlib_integrated=True)


def test_outside_a_request_the_default_and_configured_keys_are_added() -> None:
    processor = context.request_context_processor(
        context_keys={"tenant.id": "tenant"}, default=None
    )
    assert processor(None, "info", {"event": "e"}) == {
        "event": "e",
        "request_id": None,
        "tenant": None,
    }
    with context.scope({keys.REQUEST_ID: "R", "tenant.id": "t"}):
        assert processor(None, "info", {"event": "e", "tenant": "mine"}) == {
            "event": "e",
            "request_id": "R",
            "tenant": "mine",
        }


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.mark.parametrize("lifecycle_format", ["json", "text"])
def test_stdlib_integrated_json_has_aioreqctxs_own_events_as_fields_once(
    loop_factory: LoopFactory, reset_structlog: None, lifecycle_format: str
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    stdlib_integrated_json(handler)
    app = web.Application()
    collector = context.LoggingCollector(log_format=lifecycle_format)  # type: ignore[arg-type]
    context.setup(app, request_events=True, collector=collector)
    app.router.add_get("/", ok)

    async def main() -> None:
        async with serving(app, access_log_class=context.AccessLogger) as port:
            (response,) = await raw_exchange(port, get_request("/", b"X-Request-ID: own-1"))
            assert response.status == 200
        await until(lambda: "connection_completed" in stream.getvalue(), "connection_completed")

    with attached("aiohttp.access", handler), attached("aioreqctx", handler):
        run(loop_factory, main)
    events = {}
    for line in stream.getvalue().splitlines():
        event = json.loads(line)
        assert "event_fields" not in event, line
        events[event["event"]] = event
    assert {
        "access",
        "request_started",
        "request_finished",
        "connection_completed",
        "response_completed",
        "connection_opened",
    } <= set(events)
    access = events["access"]
    assert access["logger"] == "aiohttp.access"
    assert (access["request_id"], access["method"], access["path"], access["status"]) == (
        "own-1",
        "GET",
        "/",
        200,
    )
    assert access["bytes"] > 0
    assert access["disconnected"] is False
    finished = events["request_finished"]
    assert (finished["request_id"], finished["status"], finished["level"]) == ("own-1", 200, "info")
    assert isinstance(finished["duration_ms"], float)
    completed = events["response_completed"]
    assert (completed["request_id"], completed["status"]) == ("own-1", 200)
    assert isinstance(events["connection_opened"]["connection_id"], int)
