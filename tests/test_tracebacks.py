"""Tracebacks in text logs: an exception message built from request input forges no line."""

from __future__ import annotations

import ast
import logging
import sys
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

import aioreqctx as context
from aioreqctx.log.tracebacks import format_exception

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import ListHandler, attached
from .waiting import until

FORGED = "\nINFO [admin] app.auth: login ok\u2028WARNING [-] app: \x85done"


async def fails(request: web.Request) -> web.Response:
    raise ValueError(f"no such order: {request.query['order']}")


def with_filter(handler: logging.Handler) -> Callable[[], None]:
    handler.addFilter(context.RequestContextFilter())
    return lambda: None


def with_record_factory(handler: logging.Handler) -> Callable[[], None]:
    return context.install_log_record_factory()


@pytest.mark.parametrize("set_up", [with_filter, with_record_factory])
def test_unhandled_error_tracebacks_escape_request_input(
    loop_factory: LoopFactory, set_up: Callable[[logging.Handler], Callable[[], None]]
) -> None:
    handler = ListHandler("%(levelname)s [%(request_id)s] %(name)s: %(message)s")

    async def main() -> None:
        app = web.Application()
        context.setup(app, request_events=context.RequestEvents(logger="tests.tb.requests"))
        app.router.add_get("/order", fails)
        async with serving(app) as port, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/order"
            params = {"order": FORGED}
            headers = {"X-Request-ID": "tb-1"}
            async with session.get(url, params=params, headers=headers) as response:
                assert response.status == 500
        await until(lambda: len(handler.records) == 3, "3 records")  # started, error, failed

    undo = set_up(handler)
    try:
        with attached("aiohttp.server", handler), attached("tests.tb", handler):
            run(loop_factory, main)
    finally:
        undo()
    text = "\n".join(handler.lines)
    lines = text.splitlines()
    assert "ERROR [tb-1] aiohttp.server: Error handling request from 127.0.0.1" in lines
    assert "\nValueError: no such order: \\nINFO [admin] app.auth: login ok\\u2028WARNING" in text
    # The message stays on one line, and nothing after it looks like a record of its own.
    assert not [line for line in lines if line.startswith(("INFO [admin]", "WARNING [-]"))]
    assert sum(line.startswith("ERROR [tb-1] ") for line in lines) == 2


async def fails_with_a_note(request: web.Request) -> web.Response:
    error = LookupError("no such order")
    error.add_note(f"while serving {request.path}")  # aiohttp decoded %0A, %E2%80%A8...
    raise error


async def evaluates_input(request: web.Request) -> web.Response:
    return web.json_response(ast.literal_eval(request.query["expr"]))


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (f"/note/{quote(FORGED)}", "while serving /note/\\nINFO [admin] app.auth: login ok\\u2028"),
        (f"/eval?expr={quote('1 +' + FORGED)}", "    INFO [admin] app.auth: login ok\\u2028WARN"),
    ],
    ids=["exception note", "SyntaxError text"],
)
@pytest.mark.parametrize("set_up", [with_filter, with_record_factory])
def test_notes_and_syntax_errors_from_request_input_forge_no_line(
    loop_factory: LoopFactory,
    set_up: Callable[[logging.Handler], Callable[[], None]],
    path: str,
    shown: str,
) -> None:
    handler = ListHandler("%(levelname)s [%(request_id)s] %(name)s: %(message)s")

    async def main() -> None:
        app = web.Application()
        context.setup(app)
        app.router.add_get(r"/note/{tail:[\s\S]*}", fails_with_a_note)
        app.router.add_get("/eval", evaluates_input)
        async with serving(app) as port, aiohttp.ClientSession() as session:
            url = URL(f"http://127.0.0.1:{port}{path}", encoded=True)
            async with session.get(url, headers={"X-Request-ID": "tb-2"}) as response:
                assert response.status == 500
        await until(lambda: len(handler.records) == 1, "the error's log line")

    undo = set_up(handler)
    try:
        with attached("aiohttp.server", handler):
            run(loop_factory, main)
    finally:
        undo()
    lines = "\n".join(handler.lines).splitlines()
    assert lines[0] == "ERROR [tb-2] aiohttp.server: Error handling request from 127.0.0.1"
    assert [line for line in lines if line.startswith(shown)], lines
    assert not [line for line in lines if line.startswith(("INFO [admin]", "WARNING [-]"))]


def test_a_safe_message_prints_exactly_as_logging_prints_it() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as error:
            raise RuntimeError("plain message\twith a tab") from error
    except RuntimeError:
        exc_info = sys.exc_info()
        assert exc_info[0] is not None
        assert format_exception(exc_info) == logging.Formatter().formatException(exc_info)
