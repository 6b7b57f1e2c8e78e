"""The in-flight registry lists exactly the running requests, however they end."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from time import perf_counter

import aiohttp
import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx import keys

from .conftest import LoopFactory, run
from .http_helpers import get_request, raw_exchange, read_response, serving
from .log_capture import capture
from .waiting import abandon, until

CONCURRENT = 500


@asynccontextmanager
async def serving_many(app: web.Application, **options: object) -> AsyncIterator[int]:
    """``http_helpers.serving`` with a listen backlog that holds every test connection at once."""
    runner = web.AppRunner(app, **options)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=CONCURRENT * 2)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def app_with(
    registry: context.InFlightRegistry,
    path: str,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.Application:
    app = web.Application()
    context.setup(app, observers=(registry,))
    app.router.add_get(path, handler)
    app.router.add_get("/_inflight", registry.handler)
    return app


def test_counts_every_concurrent_request(loop_factory: LoopFactory) -> None:
    registry = context.InFlightRegistry()
    gate = asyncio.Event()

    async def waits(request: web.Request) -> web.Response:
        async with context.timed_operation("waiting"):
            await gate.wait()
        return web.Response(text="done")

    async def client(port: int, number: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(get_request(f"/wait?n={number}", f"X-Request-ID: req-{number}".encode()))
            return (await asyncio.wait_for(read_response(reader), 60)).status
        finally:
            writer.close()

    async def main() -> None:
        nonlocal gate
        gate = asyncio.Event()
        async with serving_many(app_with(registry, "/wait", waits)) as port:
            clients = [asyncio.create_task(client(port, n)) for n in range(CONCURRENT)]
            await until(lambda: registry.count() == CONCURRENT, f"{CONCURRENT} in flight", 60)
            entries = registry.entries()
            assert sorted(e.request_id for e in entries) == sorted(
                f"req-{n}" for n in range(CONCURRENT)
            )
            assert {(e.method, e.path, e.current_operation()) for e in entries} == {
                ("GET", "/wait", "waiting")
            }
            (page,) = await raw_exchange(port, get_request("/_inflight"))
            listed = json.loads(page.body)
            assert listed["count"] == CONCURRENT + 1  # and the request that asks
            assert {"request_id", "method", "path", "age_seconds", "current_operation"} <= set(
                listed["requests"][0]
            )
            gate.set()
            assert await asyncio.gather(*clients) == [200] * CONCURRENT
            await until(lambda: registry.count() == 0, "an empty registry")

    run(loop_factory, main)


@pytest.mark.parametrize("cancellation", [True, False], ids=["cancelled", "disconnected"])
def test_empty_after_clients_go_away(loop_factory: LoopFactory, cancellation: bool) -> None:
    registry = context.InFlightRegistry()
    entered: asyncio.Event

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(0.5 if not cancellation else 30)
        return web.Response(text="late")

    async def main() -> None:
        nonlocal entered
        entered = asyncio.Event()
        app = app_with(registry, "/slow", slow)
        async with serving_many(app, handler_cancellation=cancellation) as port:
            for _ in range(20):
                entered.clear()
                await abandon(port, "/slow", entered)
            await until(lambda: registry.count() == 0, "an empty registry")

    with capture("aiohttp"), capture("aioreqctx.requests"):
        run(loop_factory, main)


def test_stale_entries_are_dropped_and_logged_once() -> None:
    registry = context.InFlightRegistry(max_age_seconds=60)
    old = {keys.REQUEST_ID: "old\nid", keys.START_MONOTONIC: perf_counter() - 120}
    fresh = {keys.REQUEST_ID: "fresh", keys.START_MONOTONIC: perf_counter()}
    with capture("aioreqctx.inflight") as captured:
        registry.add(old, method="GET", path="/stuck")
        registry.add(fresh, method="POST", path="/new")
        assert [entry.request_id for entry in registry.entries()] == ["fresh"]
        assert registry.count() == 1
        registry.remove(old)  # its real end, much later: nothing to do
        assert registry.drop_stale() == 0
    (stale,) = captured.fields("inflight_stale")
    assert stale["request_id"] == "old\nid"
    assert stale["path"] == "/stuck"
    assert stale["age_seconds"] >= 120  # type: ignore[operator]
    assert captured.records[0].levelno == logging.WARNING
    assert "\n" not in captured.records[0].getMessage()


def test_threads_add_and_remove_safely() -> None:
    registry = context.InFlightRegistry()

    def work(number: int) -> None:
        mapping = {keys.REQUEST_ID: f"t-{number}", keys.START_MONOTONIC: perf_counter()}
        registry.add(mapping, method=None, path="thread")
        registry.entries()
        registry.remove(mapping)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(2000)))
    assert registry.count() == 0


def test_max_age_must_be_a_positive_number() -> None:
    for bad in (0, -1, float("inf"), float("nan"), "60"):
        with pytest.raises(ValueError, match="positive number of seconds"):
            context.InFlightRegistry(max_age_seconds=bad)  # type: ignore[arg-type]


async def inflight_status(connector: aiohttp.BaseConnector, url: str, **headers: str) -> int:
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url, headers=headers) as response,
    ):
        if response.status == 200:
            shown = (await response.json())["requests"]
            assert [entry["path"] for entry in shown] == ["/_inflight"]  # itself
        return response.status


def test_the_json_page_is_served_to_loopback_peers_or_whom_allow_lets_in(
    loop_factory: LoopFactory, tmp_path: Path
) -> None:
    """A Unix socket stands in for a peer that is not on loopback (its address is none)."""

    def by_token(request: web.Request) -> bool:
        return request.headers.get("X-Ops-Token") == "s3cret"

    async def main() -> list[int]:
        statuses: list[int] = []
        for allow in (None, by_token):
            registry = (
                context.InFlightRegistry()
                if allow is None
                else context.InFlightRegistry(allow=allow)
            )
            app = web.Application()
            context.setup(app, registry=registry)
            app.router.add_get("/_inflight", registry.handler)
            runner = web.AppRunner(app)
            await runner.setup()
            tcp = web.TCPSite(runner, "127.0.0.1", 0)
            socket_path = str(tmp_path / f"inflight-{len(statuses)}.sock")
            unix = web.UnixSite(runner, socket_path)
            await tcp.start()
            await unix.start()
            try:
                url = f"http://127.0.0.1:{runner.addresses[0][1]}/_inflight"
                unix_url = "http://localhost/_inflight"
                statuses += [
                    await inflight_status(aiohttp.TCPConnector(), url),
                    await inflight_status(aiohttp.UnixConnector(socket_path), unix_url),
                    await inflight_status(aiohttp.TCPConnector(), url, **{"X-Ops-Token": "s3cret"}),
                ]
            finally:
                await runner.cleanup()
        return statuses

    assert run(loop_factory, main) == [200, 403, 200, 403, 403, 200]


def test_allow_must_be_callable() -> None:
    with pytest.raises(TypeError, match="allow must be callable"):
        context.InFlightRegistry(allow="127.0.0.1")  # type: ignore[arg-type]


def test_an_ipv4_peer_of_a_dual_stack_socket_is_loopback_on_every_python(
    loop_factory: LoopFactory,
) -> None:
    """Served on ``::`` with IPV6_V6ONLY off, a client on 127.0.0.1 is ``::ffff:127.0.0.1``:
    the in-flight page lets it in, and ``trusted_networks=("127.0.0.0/8",)`` keeps its ID."""
    registry = context.InFlightRegistry()
    remotes: list[str | None] = []

    async def echo(request: web.Request) -> web.Response:
        remotes.append(request.remote)
        return web.Response(text=str(context.get(context.REQUEST_ID)))

    async def main() -> tuple[int, str]:
        app = web.Application()
        context.setup(app, registry=registry, trusted_networks=("127.0.0.0/8",))
        app.router.add_get("/_inflight", registry.handler)
        app.router.add_get("/echo", echo)
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind(("::", 0))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.SockSite(runner, listener).start()
        try:
            port = listener.getsockname()[1]
            status = await inflight_status(
                aiohttp.TCPConnector(), f"http://127.0.0.1:{port}/_inflight"
            )
            (reply,) = await raw_exchange(port, get_request("/echo", b"X-Request-ID: mapped-1"))
            return status, reply.body.decode()
        finally:
            await runner.cleanup()

    assert run(loop_factory, main) == (200, "mapped-1")
    assert remotes == ["::ffff:127.0.0.1"]


def test_header_token_lets_in_only_the_token_and_refuses_a_missing_one(
    loop_factory: LoopFactory,
) -> None:
    for missing in (None, ""):
        with pytest.raises(ValueError, match=r"header_token\(\): token must be a non-empty"):
            context.web.header_token("X-Ops-Token", missing)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="header must be a header name"):
        context.web.header_token("X Ops", "s3cret")
    registry = context.InFlightRegistry(allow=context.web.header_token("X-Ops-Token", "s3cret"))

    async def main() -> list[int]:
        app = web.Application()
        context.setup(app, registry=registry)
        app.router.add_get("/_inflight", registry.handler)
        async with serving(app) as port:
            return [
                await inflight_status(
                    aiohttp.TCPConnector(), f"http://127.0.0.1:{port}/_inflight", **headers
                )
                for headers in ({}, {"X-Ops-Token": "guess"}, {"X-Ops-Token": "s3cret"})
            ]

    assert run(loop_factory, main) == [403, 403, 200]
