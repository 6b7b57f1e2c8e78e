"""Every request logs its start and its ending, at the level its ending deserves."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
import structlog
from aiohttp import web

import aioreqctx as context

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving
from .log_capture import Captured, capture
from .waiting import abandon, until

LOGGER = "tests.request_events"


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def fails(request: web.Request) -> web.Response:
    raise ValueError("boom")


def make_app(events: context.RequestEvents) -> web.Application:
    app = web.Application()
    context.setup(app, observers=(events,))
    for path, handler in {"/ok": ok, "/fails": fails, "/health": ok, "/static/a.css": ok}.items():
        app.router.add_get(path, handler)
    return app


def lines(captured: Captured) -> list[tuple[Any, ...]]:
    return [
        (r.event, r.levelname, r.event_fields["path"], r.event_fields["status"])  # type: ignore[attr-defined]
        for r in captured.records
        if getattr(r, "event", None) in ("request_started", "request_finished", "request_failed")
    ]


def test_endings_and_their_levels(loop_factory: LoopFactory) -> None:
    events = context.RequestEvents(
        logger=LOGGER, exclude_paths=("/health", re.compile(r"/static/.*"))
    )

    async def main() -> None:
        async with serving(make_app(events)) as port:
            paths = ["/ok", "/health", "/static/a.css", "/nowhere", "/fails"]
            requests = [
                get_request(p, f"X-Request-ID: id-{i}".encode()) for i, p in enumerate(paths)
            ]
            responses = await raw_exchange(port, *requests)
        assert [r.status for r in responses] == [200, 200, 200, 404, 500]

    with capture(LOGGER) as captured, capture("aiohttp.server"):
        run(loop_factory, main)
    assert lines(captured) == [
        ("request_started", "INFO", "/ok", None),
        ("request_finished", "INFO", "/ok", 200),
        ("request_started", "INFO", "/nowhere", None),
        ("request_finished", "WARNING", "/nowhere", 404),
        ("request_started", "INFO", "/fails", None),
        ("request_failed", "ERROR", "/fails", 500),
    ]
    finished = captured.fields("request_finished")[0]
    assert finished["request_id"] == "id-0"
    assert finished["method"] == "GET"
    assert isinstance(finished["duration_ms"], float)
    failed = captured.fields("request_failed")[0]
    assert failed["request_id"] == "id-4"
    assert failed["error"] == "ValueError"
    assert captured.records[-1].exc_info is not None  # the traceback of the failure


def test_a_cancelled_request_is_a_failure_without_traceback(loop_factory: LoopFactory) -> None:
    entered = asyncio.Event()

    async def hangs(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(30)
        return web.Response()

    async def main(captured: Captured) -> None:
        app = make_app(context.RequestEvents(logger=LOGGER))
        app.router.add_get("/hangs", hangs)
        async with serving(app, handler_cancellation=True) as port:
            await abandon(port, "/hangs", entered, b"X-Request-ID: gone")
            await until(lambda: captured.fields("request_failed"), "request_failed")

    with capture(LOGGER) as captured:
        run(loop_factory, lambda: main(captured))
    assert lines(captured) == [
        ("request_started", "INFO", "/hangs", None),
        ("request_failed", "WARNING", "/hangs", None),
    ]
    (failed,) = captured.fields("request_failed")
    assert failed["request_id"] == "gone"
    assert failed["error"] == "CancelledError"
    assert captured.records[-1].exc_info is None


def test_filtered_levels_log_nothing_and_levels_are_configurable() -> None:
    events = context.RequestEvents(
        logger=LOGGER, status_level=lambda status: logging.ERROR if status >= 400 else logging.DEBUG
    )

    async def main() -> None:
        async with serving(make_app(events)) as port:
            await raw_exchange(port, get_request("/ok"), get_request("/nowhere"))

    with capture(LOGGER, level=logging.WARNING) as captured:
        run(asyncio.new_event_loop, main)
    assert lines(captured) == [("request_finished", "ERROR", "/nowhere", 404)]


def test_a_structlog_logger_gets_the_events() -> None:
    async def main() -> None:
        async with serving(make_app(context.RequestEvents(logger=structlog.get_logger()))) as port:
            await raw_exchange(port, get_request("/ok", b"X-Request-ID: s-1"))

    with structlog.testing.capture_logs() as logs:
        run(asyncio.new_event_loop, main)
    assert [(log["event"], log["request_id"], log["status"]) for log in logs] == [
        ("request_started", "s-1", None),
        ("request_finished", "s-1", 200),
    ]


def test_bad_options_are_refused() -> None:
    with pytest.raises(TypeError, match="not one path"):
        context.RequestEvents(exclude_paths="/health")
    with pytest.raises(TypeError, match="neither a path string nor a compiled regex"):
        context.RequestEvents(exclude_paths=(3,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="status_level must be callable"):
        context.RequestEvents(status_level=logging.INFO)  # type: ignore[arg-type]


def test_default_levels() -> None:
    assert [context.web.level_for_status(s) for s in (200, 302, 404, 503)] == [
        logging.INFO,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
    ]


def test_a_client_gone_during_a_plain_handler_is_marked_disconnected() -> None:
    entered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(0.3)
        return web.Response(text="late")

    async def main(captured: Captured) -> None:
        app = make_app(context.RequestEvents(logger=LOGGER))
        app.router.add_get("/slow", slow)
        async with serving(app) as port:
            await abandon(port, "/slow", entered)
            await until(lambda: captured.fields("request_finished"), "request_finished")

    with capture(LOGGER) as captured:
        run(asyncio.new_event_loop, lambda: main(captured))
    (finished,) = captured.fields("request_finished")
    assert finished["status"] == 200
    assert finished["disconnected"] is True
