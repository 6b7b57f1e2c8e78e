"""The pytest plugin, run on real test files through pytester (plugins loaded by entry point)."""

from __future__ import annotations

import itertools

import pytest
from aiohttp import ClientSession, web

import aioreqctx as context
from aioreqctx._core.store import current_mapping
from aioreqctx.testing import RequestIdCheck

from .conftest import LoopFactory, run
from .http_helpers import serving

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""

SESSION_MAPPING_SHARED_BY_TASK_FACTORY = """
import asyncio

import pytest
import pytest_asyncio

import aioreqctx


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_context():
    asyncio.get_running_loop().set_task_factory(aioreqctx.task_factory)
    aioreqctx.set("X-Request-ID", "session")
    yield


@pytest.mark.asyncio(loop_scope="session")
async def test_writes(shared_context):
    assert aioreqctx.get("X-Request-ID") == "session"
    aioreqctx.set("written", "by the first test")


@pytest.mark.asyncio(loop_scope="session")
async def test_sees_nothing_of_the_first(shared_context):
    assert aioreqctx.get("X-Request-ID") == "session"
    assert aioreqctx.get("written") is None
"""

PUSHED_LOG_FIELDS = """
import structlog

import aioreqctx


def test_pushes_and_forgets_to_pop():
    aioreqctx.log_context.push(user="alice")


def test_logs_without_the_first_tests_fields(aioreqctx_logs):
    structlog.get_logger().info("clean")
    assert "user" not in aioreqctx_logs[0]
"""

CLIENT_AND_LOGS = """
import logging

import structlog
from aiohttp import web

import aioreqctx


async def hello(request):
    logging.getLogger("shop.stdlib").info("stdlib line")
    structlog.get_logger("shop").info("structlog line", name="ana")
    return web.Response(text="hello")


def make_app(with_ids=True):
    app = web.Application()
    if with_ids:
        aioreqctx.setup(app)
    app.router.add_get("/", hello)
    return app


async def test_every_line_of_the_request_carries_its_id(aioreqctx_client, aioreqctx_logs):
    client = await aioreqctx_client(make_app())
    assert (await client.get("/", headers={"X-Request-ID": "t-1"})).status == 200
    response = await client.get("/")
    generated = response.headers["X-Request-ID"]
    assert client.request_id_check.ids == ["t-1", generated]
    lines = [e for e in aioreqctx_logs if e["event"] in ("stdlib line", "structlog line")]
    assert [(e["event"], e["request_id"]) for e in lines] == [
        ("stdlib line", "t-1"), ("structlog line", "t-1"),
        ("stdlib line", generated), ("structlog line", generated),
    ]
    assert aioreqctx_logs.of_request("t-1")[1]["name"] == "ana"
    assert {"t-1", generated} <= aioreqctx_logs.request_ids()


async def test_a_response_without_an_id_fails_the_test(aioreqctx_client):
    client = await aioreqctx_client(make_app(with_ids=False))
    await client.get("/")
"""


def test_a_tests_writes_never_reach_the_next_test(pytester: pytest.Pytester) -> None:
    """A session fixture's mapping, shared by task_factory, is copied for each test."""
    pytester.makeini(INI)
    pytester.makepyfile(SESSION_MAPPING_SHARED_BY_TASK_FACTORY)
    pytester.runpytest().assert_outcomes(passed=2)
    # Without the plugin the second test sees the first one's write: the leak is real.
    pytester.runpytest("-p", "no:aioreqctx").assert_outcomes(passed=1, failed=1)
    # The session fixture's teardown undid its mapping; the plugin did not put it back.
    assert current_mapping.get(None) is None


def test_pushed_log_fields_end_with_their_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(PUSHED_LOG_FIELDS)
    pytester.runpytest().assert_outcomes(passed=2)


def test_client_check_and_captured_log_lines(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI.replace("strict", "auto"))
    pytester.makepyfile(CLIENT_AND_LOGS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError: GET / answered 200 with 0 X-Request-ID headers, not 1"]
    )


CUSTOM_GENERATOR = """
import itertools

from aiohttp import web

import aioreqctx

counter = itertools.count(1)


def make_app(with_setup):
    options = dict(
        generator=lambda: f"svc~{next(counter)}",
        validator=lambda value: value.startswith("svc~"),
        response_header="X-Trace-Ref",
        header_names=("X-Trace-Ref",),
    )
    app = web.Application(
        middlewares=[] if with_setup else [aioreqctx.RequestIdMiddleware(**options)]
    )
    if with_setup:
        aioreqctx.setup(app, **options)
    app.router.add_get("/", lambda request: web.Response())
    return app


async def test_with_setup(aioreqctx_client):
    client = await aioreqctx_client(make_app(True))
    for sent in ({}, {"X-Trace-Ref": "svc~given"}, {"X-Trace-Ref": "plain-id"}):
        assert (await client.get("/", headers=sent)).status == 200
    first, given, replaced = client.request_id_check.ids
    assert first.startswith("svc~") and replaced.startswith("svc~") and given == "svc~given"


async def test_with_the_bare_middleware(aioreqctx_client):
    client = await aioreqctx_client(make_app(False))
    assert (await client.get("/", headers={"X-Trace-Ref": "plain-id"})).status == 200
    assert client.request_id_check.ids[0].startswith("svc~")
"""


def test_the_client_checks_ids_with_the_apps_own_rules(pytester: pytest.Pytester) -> None:
    """IDs a custom generator makes (``svc~1``) pass; an ID the app's validator refuses may be
    replaced; the app's own response header is the one checked."""
    pytester.makeini(INI.replace("strict", "auto"))
    pytester.makepyfile(CUSTOM_GENERATOR)
    pytester.runpytest().assert_outcomes(passed=2)


def test_request_id_check_alone_accepts_what_a_custom_generator_makes(
    loop_factory: LoopFactory,
) -> None:
    """Without the app, the check holds received IDs to the floor, not the stock alphabet."""
    counter = itertools.count(1)

    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    async def main() -> list[str]:
        app = web.Application()
        context.setup(app, generator=lambda: f"svc~{next(counter)}")
        app.router.add_get("/", ok)
        check = RequestIdCheck()
        async with serving(app) as port, ClientSession(middlewares=(check,)) as session:
            for _ in range(2):
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert response.status == 200
        return check.ids

    assert run(loop_factory, main) == ["svc~1", "svc~2"]
