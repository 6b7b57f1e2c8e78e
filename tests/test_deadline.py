"""Deadlines: from the incoming header or a budget, to the handler and to outgoing calls."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web

import aioreqctx as context
from aioreqctx._core.deadline import format_deadline, parse_deadline

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import capture
from .test_client import BACKEND, SESSION, backend_app, gateway_app, seen_by_backend

RELEASE: web.AppKey[asyncio.Event] = web.AppKey("release")


async def report(request: web.Request) -> web.Response:
    """The gateway's view of its deadline, and what one outgoing call carried and got."""
    left = context.remaining_time()
    timeout = context.deadline_timeout()
    try:
        seen = await seen_by_backend(request.app[SESSION], request.app[BACKEND] + "/echo")
    except context.DeadlineExceeded as error:
        return web.json_response({"left": left, "error": str(error)}, status=504)
    return web.json_response({"left": left, "total": timeout.total, "sent": seen["deadline"]})


async def stuck(request: web.Request) -> web.Response:
    await request.app[RELEASE].wait()
    return web.Response(text="late")


async def call_stuck(request: web.Request) -> web.Response:
    url = request.app[BACKEND] + "/stuck"
    try:
        await seen_by_backend(request.app[SESSION], url)
    except TimeoutError as error:
        return web.json_response({"timed_out": type(error).__name__}, status=504)
    return web.json_response({"timed_out": None})


async def exchange(observer: context.DeadlineObserver, path: str, **headers: str) -> Any:
    """One request to a gateway with ``observer``; returns (status, body)."""
    release = asyncio.Event()
    backend = backend_app()
    backend[RELEASE] = release
    backend.router.add_get("/stuck", stuck)
    try:
        async with serving(backend) as backend_port:
            gateway = gateway_app(f"http://127.0.0.1:{backend_port}", observers=(observer,))
            gateway.router.add_get("/report", report)
            gateway.router.add_get("/call-stuck", call_stuck)
            async with serving(gateway) as port, ClientSession() as client:
                url = f"http://127.0.0.1:{port}{path}"
                async with client.get(url, headers=headers) as response:
                    result = response.status, await response.json()
                release.set()  # before the servers shut down, which waits for handlers
                return result
    finally:
        release.set()


def test_incoming_deadline_reaches_the_handler_and_the_backend(loop_factory: LoopFactory) -> None:
    header = format_deadline(20.0)
    status, body = run(
        loop_factory,
        lambda: exchange(context.DeadlineObserver(), "/report", **{"X-Request-Deadline": header}),
    )
    assert status == 200
    assert 0 < body["left"] <= 20.0
    assert 0 < body["total"] <= 20.0
    sent = parse_deadline(body["sent"])
    assert sent is not None
    assert sent <= 20.0  # never later than the incoming deadline (same clock, ms precision)


def test_a_budget_gives_a_deadline_and_the_earlier_one_wins(loop_factory: LoopFactory) -> None:
    budget_only = context.DeadlineObserver(budget=5.0)
    status, body = run(loop_factory, lambda: exchange(budget_only, "/report"))
    assert status == 200
    assert 0 < body["left"] <= 5.0
    late = format_deadline(60.0)
    _, body = run(
        loop_factory, lambda: exchange(budget_only, "/report", **{"X-Request-Deadline": late})
    )
    assert body["left"] <= 5.0


def test_a_far_deadline_is_cut_to_max_budget(loop_factory: LoopFactory) -> None:
    far = format_deadline(10 * 365 * 86400.0)
    capped = context.DeadlineObserver(max_budget=30.0)
    _, body = run(loop_factory, lambda: exchange(capped, "/report", **{"X-Request-Deadline": far}))
    assert body["left"] <= 30.0


def test_a_passed_deadline_stops_outgoing_calls_unsent(loop_factory: LoopFactory) -> None:
    past = format_deadline(-5.0)
    status, body = run(
        loop_factory,
        lambda: exchange(context.DeadlineObserver(), "/report", **{"X-Request-Deadline": past}),
    )
    assert status == 504
    assert body["left"] == 0.0
    assert "deadline passed" in body["error"]
    assert "/echo was not sent" in body["error"]


def test_a_slow_backend_times_out_at_the_deadline(loop_factory: LoopFactory) -> None:
    started = time.monotonic()
    status, body = run(
        loop_factory, lambda: exchange(context.DeadlineObserver(budget=0.3), "/call-stuck")
    )
    assert status == 504
    assert body["timed_out"] == "TimeoutError"
    assert time.monotonic() - started < 30  # bounded: the backend never answers by itself


@pytest.mark.parametrize(
    "raw",
    [
        "tomorrow",
        "2026-13-01T00:00:00Z",
        "2026-05-01 12:00:00",
        "2026-05-01T12:00:00",
        "1746100800",
        "2026-05-01T12:00:00.1234567Z",
        "2026-05-01T12:00:00Z" + "x" * 500,
        "2026-05-01T12:00:00Z\u00fc\u202e",
    ],
)
def test_invalid_deadline_headers_are_ignored_and_logged_escaped(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "aioreqctx")
    status, body = run(
        asyncio.new_event_loop,
        lambda: exchange(context.DeadlineObserver(), "/report", **{"X-Request-Deadline": raw}),
    )
    assert status == 200
    assert body["left"] is None
    assert body["sent"] is None
    [record] = [r for r in caplog.records if "X-Request-Deadline" in r.getMessage()]
    assert record.getMessage().isascii()
    assert len(record.getMessage()) < 300


def test_without_a_deadline_nothing_changes() -> None:
    assert context.remaining_time() is None
    base = context.deadline_timeout()
    assert base.total == 300

    async def main() -> tuple[float | None, float | None]:
        with context.scope({context.keys.DEADLINE: time.monotonic() - 1}):
            return context.remaining_time(), context.deadline_timeout().total

    assert asyncio.run(main()) == (0.0, 0.001)


def test_parse_and_format_round_trip() -> None:
    assert parse_deadline(format_deadline(10.0)) == pytest.approx(10.0, abs=0.05)
    assert parse_deadline("2026-05-01T12:00:00.250+02:00") == pytest.approx(
        parse_deadline("2026-05-01T10:00:00.25Z"), abs=0.01
    )
    assert format_deadline(0.0).endswith("Z")


@pytest.mark.parametrize(
    "options",
    [
        {"budget": 0},
        {"budget": -1},
        {"budget": float("nan")},
        {"max_budget": float("inf")},
        {"budget": "5"},
        {"header": "X Deadline"},
    ],
)
def test_bad_observer_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"positive number of seconds|header name"):
        context.DeadlineObserver(**options)


async def call_backend_unguarded(request: web.Request) -> web.Response:
    """An ordinary handler: it does not catch DeadlineExceeded."""
    seen = await seen_by_backend(request.app[SESSION], request.app[BACKEND] + "/echo")
    return web.json_response({"left": context.remaining_time(), "sent": seen["deadline"]})


async def call_stuck_unguarded(request: web.Request) -> web.Response:
    """An ordinary handler whose backend call is cut off at the deadline (TimeoutError)."""
    await seen_by_backend(request.app[SESSION], request.app[BACKEND] + "/stuck")
    return web.Response(text="unreachable")


def serve_with_deadline(
    loop_factory: LoopFactory,
    deadline: str,
    trusted_networks: tuple[str, ...],
    path: str = "/call",
) -> tuple[int, Any]:
    async def main() -> tuple[int, Any]:
        backend = backend_app()
        backend[RELEASE] = asyncio.Event()
        backend.router.add_get("/stuck", stuck)
        async with serving(backend) as backend_port:
            app = web.Application()
            context.setup(
                app,
                trusted_networks=trusted_networks,
                observers=(context.DeadlineObserver(),),
                request_events=True,
            )
            app[BACKEND] = f"http://127.0.0.1:{backend_port}"
            app.router.add_get("/call", call_backend_unguarded)
            app.router.add_get("/call-stuck", call_stuck_unguarded)
            async with ClientSession(middlewares=(context.ClientPropagation(),)) as session:
                app[SESSION] = session
                async with serving(app) as port, ClientSession() as client:
                    url = f"http://127.0.0.1:{port}{path}"
                    headers = {"X-Request-Deadline": deadline, "X-Request-ID": "from-client"}
                    try:
                        async with client.get(url, headers=headers) as response:
                            body = await response.text()
                            return response.status, (response.headers["X-Request-ID"], body)
                    finally:
                        backend[RELEASE].set()  # before the servers shut down

    return run(loop_factory, main)


def test_an_untrusted_client_deadline_is_ignored_like_its_id(loop_factory: LoopFactory) -> None:
    status, (request_id, body) = serve_with_deadline(
        loop_factory, "2000-01-01T00:00:00Z", trusted_networks=("10.0.0.0/8",)
    )
    assert status == 200, body
    assert request_id != "from-client"
    assert json.loads(body) == {"left": None, "sent": None}


@pytest.mark.parametrize(
    ("path", "deadline"),
    [
        ("/call", lambda: "2000-01-01T00:00:00Z"),  # passed: the call is never sent
        ("/call-stuck", lambda: format_deadline(0.3)),  # the call is cut off at the deadline
    ],
    ids=["passed", "cut-off"],
)
def test_a_trusted_deadline_504_is_logged_as_no_server_error(
    loop_factory: LoopFactory, path: str, deadline: Callable[[], str]
) -> None:
    with capture("aioreqctx") as ours, capture("aiohttp") as aiohttp_logs:
        status, (request_id, _) = serve_with_deadline(
            loop_factory, deadline(), trusted_networks=("127.0.0.0/8",), path=path
        )
    assert status == 504
    assert request_id == "from-client"
    records = ours.records + aiohttp_logs.records
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
    (finished,) = [r for r in ours.records if getattr(r, "event", None) == "request_finished"]
    assert finished.levelno == logging.WARNING
    assert finished.event_fields["status"] == 504  # type: ignore[attr-defined]
    assert finished.event_fields["deadline_expired"] is True  # type: ignore[attr-defined]
