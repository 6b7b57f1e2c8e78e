"""Observers hear of every request's start and end, in its context, whatever the ending."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx.web.observers import RequestObserver

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def request_started(self, request: web.Request, mapping: context.Context) -> None:
        self.events.append(("started", request.path, context.get(context.REQUEST_ID)))

    def request_finished(
        self,
        request: web.Request,
        mapping: context.Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        status = None if response is None else response.status
        self.events.append(
            ("finished", request.path, context.get(context.REQUEST_ID), status, type(error))
        )


class Broken:
    def request_started(self, request: web.Request, mapping: context.Context) -> None:
        raise RuntimeError("observer bug")

    def request_finished(self, *args: object) -> None:
        raise RuntimeError("observer bug")


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def fails(request: web.Request) -> web.Response:
    raise ValueError("boom")


async def forbidden(request: web.Request) -> web.Response:
    raise web.HTTPForbidden()


def make_app(*observers: RequestObserver) -> web.Application:
    app = web.Application()
    context.setup(app, observers=observers)
    app.router.add_get("/ok", ok)
    app.router.add_get("/fails", fails)
    app.router.add_get("/forbidden", forbidden)
    return app


def test_observers_see_every_ending_in_the_request_context(loop_factory: LoopFactory) -> None:
    recorder = Recorder()

    async def main() -> None:
        async with serving(make_app(Broken(), recorder)) as port:
            requests = [
                get_request(path, f"X-Request-ID: id-{i}".encode())
                for i, path in enumerate(["/ok", "/fails", "/forbidden", "/nowhere"])
            ]
            responses = await raw_exchange(port, *requests)
        assert [r.status for r in responses] == [200, 500, 403, 404]

    run(loop_factory, main)
    assert recorder.events == [
        ("started", "/ok", "id-0"),
        ("finished", "/ok", "id-0", 200, type(None)),
        ("started", "/fails", "id-1"),
        ("finished", "/fails", "id-1", 500, ValueError),
        ("started", "/forbidden", "id-2"),
        ("finished", "/forbidden", "id-2", None, web.HTTPForbidden),
        ("started", "/nowhere", "id-3"),
        ("finished", "/nowhere", "id-3", None, web.HTTPNotFound),
    ]


def test_a_cancelled_request_is_finished_with_its_cancellation(loop_factory: LoopFactory) -> None:
    recorder = Recorder()
    entered = asyncio.Event()

    async def hangs(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(30)
        return web.Response()

    async def main() -> None:
        app = make_app(recorder)
        app.router.add_get("/hangs", hangs)
        async with serving(app, handler_cancellation=True) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/hangs", b"X-Request-ID: gone"))
            await asyncio.wait_for(entered.wait(), 5)
            writer.close()
            for _ in range(200):
                if len(recorder.events) == 2:
                    break
                await asyncio.sleep(0.01)

    run(loop_factory, main)
    assert recorder.events == [
        ("started", "/hangs", "gone"),
        ("finished", "/hangs", "gone", context.web.CLIENT_CLOSED_REQUEST, asyncio.CancelledError),
    ]


def test_an_object_without_the_methods_is_refused() -> None:
    with pytest.raises(TypeError, match="not a RequestObserver"):
        context.RequestIdMiddleware(observers=(object(),))  # type: ignore[arg-type]


def test_setup_turns_named_options_into_observers() -> None:
    registry = context.InFlightRegistry()
    events = context.RequestEvents()
    app = web.Application()
    middleware = context.setup(
        app, request_events=events, registry=registry, observers=(Recorder(),)
    )
    kinds = [type(observer) for observer in middleware.observers]
    assert kinds == [Recorder, context.RequestEvents, context.InFlightRegistry]
    assert middleware.observers[1] is events
    plain = context.setup(web.Application(), request_events=True)
    assert [type(o) for o in plain.observers] == [context.RequestEvents]
    assert context.setup(web.Application()).observers == ()
    with pytest.raises(TypeError, match="registry must be an InFlightRegistry"):
        context.setup(web.Application(), registry=object())  # type: ignore[arg-type]
