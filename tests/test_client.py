"""Two real services on 127.0.0.1: a gateway calling a backend through a propagating session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientSession, TraceConfig, web

import aioreqctx as context
from aioreqctx.web.observers import RequestObserver

from .conftest import FACTORIES, LoopFactory, run
from .http_helpers import serving

SESSION: web.AppKey[ClientSession] = web.AppKey("session")
BACKEND: web.AppKey[str] = web.AppKey("backend")


async def echo(request: web.Request) -> web.Response:
    """The backend: what it received, and the ID its own middleware settled on."""
    return web.json_response(
        {
            "header": request.headers.get("X-Request-ID"),
            "context_id": context.get(context.REQUEST_ID),
            "deadline": request.headers.get(context.propagation.DEADLINE_HEADER),
        }
    )


def backend_app(**options: Any) -> web.Application:
    app = web.Application()
    context.setup(app, **options)
    app.router.add_get("/echo", echo)
    return app


async def seen_by_backend(session: ClientSession, url: str, **kwargs: Any) -> dict[str, Any]:
    async with session.get(url, **kwargs) as response:
        response.raise_for_status()
        seen: dict[str, Any] = await response.json()
        return seen


def from_own_loop_in_thread(url: str) -> str | None:
    """An executor thread with its own loop and session (it runs in the request's context)."""

    async def call() -> str | None:
        async with ClientSession(middlewares=(context.ClientPropagation(),)) as session:
            header: str | None = (await seen_by_backend(session, url))["header"]
            return header

    return asyncio.run(call())


async def fan_out(request: web.Request) -> web.Response:
    session, url = request.app[SESSION], request.app[BACKEND] + "/echo"
    direct = await seen_by_backend(session, url)
    spawned = await asyncio.gather(*(seen_by_backend(session, url) for _ in range(3)))
    task = await asyncio.create_task(seen_by_backend(session, url))
    thread = await context.run_in_executor(None, from_own_loop_in_thread, url)
    return web.json_response(
        {
            "gateway": context.get(context.REQUEST_ID),
            "backend": [direct["header"], *(s["header"] for s in spawned), task["header"], thread],
            "backend_ids": [direct["context_id"], task["context_id"]],
        }
    )


async def call_backend(request: web.Request) -> web.Response:
    """Calls with the headers the test asks for (a caller-set ID) and reports what arrived."""
    headers = {"X-Request-ID": request.query["set"]} if "set" in request.query else None
    seen = await seen_by_backend(
        request.app[SESSION], request.app[BACKEND] + "/echo", headers=headers
    )
    return web.json_response({"gateway": context.get(context.REQUEST_ID), **seen})


def gateway_app(
    backend_url: str,
    *,
    observers: tuple[RequestObserver, ...] = (),
    middlewares: tuple[context.ClientPropagation, ...] = (context.ClientPropagation(),),
    trace_configs: list[TraceConfig] | None = None,
    **session_options: Any,
) -> web.Application:
    app = web.Application()
    context.setup(app, observers=observers, header_names=("X-Request-ID", "traceparent"))
    app[BACKEND] = backend_url

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(
            middlewares=middlewares, trace_configs=trace_configs, **session_options
        ) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/fanout", fan_out)
    app.router.add_get("/call", call_backend)
    return app


@asynccontextmanager
async def two_services(**gateway_options: Any) -> AsyncIterator[str]:
    """The backend and a gateway in front of it; yields the gateway's base URL."""
    async with serving(backend_app()) as backend_port:
        gateway = gateway_app(f"http://127.0.0.1:{backend_port}", **gateway_options)
        async with serving(gateway) as gateway_port:
            yield f"http://127.0.0.1:{gateway_port}"


async def get_json(url: str, **headers: str) -> dict[str, Any]:
    """A plain client, outside any request: nothing propagates from it."""
    async with ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


@pytest.mark.parametrize("factory", [None, *sorted(FACTORIES)])
def test_backend_sees_the_gateway_id_from_tasks_and_threads(
    loop_factory: LoopFactory, factory: str | None
) -> None:
    async def main() -> list[dict[str, Any]]:
        async with two_services() as gateway:
            return [
                await get_json(gateway + "/fanout", **{"X-Request-ID": "incoming-1"}),
                await get_json(gateway + "/fanout"),
            ]

    given, generated = run(loop_factory, main, None if factory is None else FACTORIES[factory])
    assert given["gateway"] == "incoming-1"
    assert given["backend"] == ["incoming-1"] * 6
    assert given["backend_ids"] == ["incoming-1"] * 2
    assert generated["gateway"] != "incoming-1"
    assert generated["backend"] == [generated["gateway"]] * 6


def test_a_header_the_caller_set_is_kept(loop_factory: LoopFactory) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with two_services() as gateway:
            per_request = await get_json(
                gateway + "/call?set=callers-own", **{"X-Request-ID": "g1"}
            )
        default_header = {"headers": {"X-Request-ID": "session-default"}}
        async with two_services(**default_header) as gateway:
            per_session = await get_json(gateway + "/call", **{"X-Request-ID": "g2"})
        return per_request, per_session

    per_request, per_session = run(loop_factory, main)
    assert (per_request["gateway"], per_request["header"]) == ("g1", "callers-own")
    assert (per_session["gateway"], per_session["header"]) == ("g2", "session-default")


def test_trace_config_propagates_the_same_way(loop_factory: LoopFactory) -> None:
    async def main() -> list[dict[str, Any]]:
        propagation = context.ClientPropagation()
        options = {"middlewares": (), "trace_configs": [propagation.trace_config()]}
        async with two_services(**options) as gateway:
            return [
                await get_json(gateway + "/call", **{"X-Request-ID": "tc-1"}),
                await get_json(gateway + "/call?set=kept", **{"X-Request-ID": "tc-2"}),
            ]

    propagated, kept = run(loop_factory, main)
    assert propagated["header"] == "tc-1"
    assert (kept["gateway"], kept["header"]) == ("tc-2", "kept")


def test_traceparent_trace_id_becomes_the_id_downstream(loop_factory: LoopFactory) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"

    async def main() -> dict[str, Any]:
        async with two_services() as gateway:
            return await get_json(gateway + "/call", traceparent=traceparent)

    seen = run(loop_factory, main)
    assert seen["gateway"] == seen["header"] == seen["context_id"] == trace_id


def outside_any_request(
    propagation: context.ClientPropagation,
) -> Callable[[], Coroutine[Any, Any, list[str | None]]]:
    async def main() -> list[str | None]:
        async with serving(backend_app()) as port:
            url = f"http://127.0.0.1:{port}/echo"
            async with ClientSession(middlewares=(propagation,)) as session:
                first = await seen_by_backend(session, url)
                second = await seen_by_backend(session, url)
                with context.scope(job="no request id"):
                    in_scope = await seen_by_backend(session, url)
        return [first["header"], second["header"], in_scope["header"]]

    return main


def test_outside_a_request_nothing_is_sent_by_default(loop_factory: LoopFactory) -> None:
    assert run(loop_factory, outside_any_request(context.ClientPropagation())) == [None] * 3


def test_outside_a_request_an_id_can_be_generated(loop_factory: LoopFactory) -> None:
    made = iter(["made-1", "made-2", "made-3"])
    propagation = context.ClientPropagation(outside_request="generate", generator=made.__next__)
    assert run(loop_factory, outside_any_request(propagation)) == ["made-1", "made-2", "made-3"]


def test_a_custom_header_name() -> None:
    async def main() -> dict[str, Any]:
        async with serving(backend_app(header_names=("X-Correlation-ID",))) as port:
            url = f"http://127.0.0.1:{port}/echo"
            propagation = context.ClientPropagation(header="X-Correlation-ID")
            async with ClientSession(middlewares=(propagation,)) as session:
                with context.scope({context.REQUEST_ID: "corr-7"}):
                    return await seen_by_backend(session, url)

    assert run(asyncio.new_event_loop, main)["context_id"] == "corr-7"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"header": "Bad Header"}, ValueError),
        ({"header": "X-Request-ID:"}, ValueError),
        ({"deadline_header": ""}, ValueError),
        ({"outside_request": "always"}, ValueError),
        ({"generator": "uuid4"}, TypeError),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error, match=r"header name|outside_request|generator"):
        context.ClientPropagation(**options)
