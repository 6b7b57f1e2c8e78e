"""setup(): every option checked by name, one ID middleware per application."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp import ClientSession, web

import aioreqctx as context

from .conftest import LoopFactory, run
from .http_helpers import serving


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"observers": context.RequestEvents()}, "observers must be a tuple"),
        ({"observers": "events"}, "observers must be a tuple"),
        ({"server_timing": "yes"}, "server_timing must be True or False"),
        ({"server_timing": 1}, "server_timing must be True or False"),
        ({"worker_id": "w1"}, "worker_id must be an int"),
        ({"worker_id": True}, "worker_id must be an int"),
        ({"request_events": "yes"}, "request_events must be True, False or a RequestEvents"),
        ({"registry": {}}, "registry must be an InFlightRegistry"),
        ({"collector": 3}, "collector must be a LifecycleCollector"),
        ({"task_factory": "copy"}, "task_factory must be a task factory"),
        (
            {"header_names": "X-Request-ID"},
            "header_names must be a non-empty tuple of header names",
        ),
        ({"trusted_networks": "10.0.0.0/8"}, "trusted_networks must be a tuple of CIDR strings"),
        ({"response_header": None}, "response_header must be a header name"),
        ({"generator": "uuid4"}, "generator must be a function"),
        ({"validator": None}, "validator must be a function"),
        ({"on_invalid": "drop"}, "on_invalid must be 'regenerate' or 'reject'"),
        ({"header_name": "X-Id"}, "got an unexpected option 'header_name'"),
        ({"response_header": "Request@ID"}, "response_header must be a header name (letters"),
        ({"response_header": "X/Req"}, "response_header must be a header name (letters"),
        ({"header_names": ("X-Request-ID", "X Req")}, "header_names must be a non-empty tuple"),
    ],
)
def test_a_bad_option_is_refused_by_setup_naming_it(options: dict[str, Any], named: str) -> None:
    app = web.Application()
    with pytest.raises(TypeError) as refused:
        context.setup(app, **options)
    assert str(refused.value).startswith("setup()")
    assert named in str(refused.value)
    assert not app.middlewares  # nothing half-installed


def test_setup_after_the_app_started_is_refused_by_name(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        app = web.Application()
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            with pytest.raises(RuntimeError, match=r"setup\(\) was called on an application that"):
                context.setup(app)
        finally:
            await runner.cleanup()

    run(loop_factory, main)


def test_the_option_table_covers_every_middleware_field() -> None:
    from aioreqctx.web.app import OPTIONS  # noqa: PLC0415 - the table, not the API

    fields = {f.name for f in dataclasses.fields(context.RequestIdMiddleware) if f.init}
    assert fields <= set(OPTIONS)


def test_the_middleware_in_middlewares_and_setup_is_refused() -> None:
    app = web.Application(middlewares=[context.web.request_id_middleware])
    with pytest.raises(RuntimeError, match=r"two IDs: remove it from web\.Application"):
        context.setup(app, request_events=True)


def test_a_middleware_added_after_setup_is_refused_at_startup(loop_factory: LoopFactory) -> None:
    app = web.Application()
    context.setup(app)
    app.middlewares.append(context.RequestIdMiddleware())

    async def main() -> None:
        async with serving(app):
            raise AssertionError("the application started with two ID middlewares")

    with pytest.raises(RuntimeError, match="two IDs"):
        run(loop_factory, main)


@pytest.mark.parametrize("in_subapp", ["setup", "middlewares", "nested setup"])
def test_a_second_middleware_in_a_subapp_is_refused_at_startup(
    loop_factory: LoopFactory, in_subapp: str
) -> None:
    app = web.Application()
    context.setup(app)
    subapp = web.Application(
        middlewares=[context.web.request_id_middleware] if in_subapp == "middlewares" else []
    )
    if in_subapp == "nested setup":
        inner = web.Application()
        context.setup(inner)
        subapp.add_subapp("/inner", inner)
    elif in_subapp == "setup":
        context.setup(subapp)
    app.add_subapp("/api", subapp)

    async def main() -> None:
        async with serving(app):
            raise AssertionError("a sub-application's requests would get two IDs")

    with pytest.raises(RuntimeError, match=r"sub-application .* two IDs"):
        run(loop_factory, main)


def test_a_subapp_without_a_middleware_of_its_own_starts_and_shares_the_id(
    loop_factory: LoopFactory,
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(context.get(context.REQUEST_ID))
        return web.Response(text="ok")

    app, subapp, domain = web.Application(), web.Application(), web.Application()
    subapp.router.add_get("/h", handler)
    context.setup(app)
    app.add_subapp("/api", subapp)
    app.add_domain("example.test", domain)

    async def main() -> str:
        async with serving(app) as port, ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/h"
            async with session.get(url, headers={"X-Request-ID": "sub-1"}) as response:
                return response.headers["X-Request-ID"]

    assert run(loop_factory, main) == "sub-1"
    assert seen == ["sub-1"]


def test_setup_alone_still_starts(loop_factory: LoopFactory) -> None:
    app = web.Application()
    context.setup(app)

    async def main() -> int:
        async with serving(app) as port:
            return port

    assert run(loop_factory, main) > 0
