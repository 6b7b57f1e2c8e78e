"""Where the middleware's time goes: what each operation it does per request costs, in-process.

wrk (``bench/http_middleware.py``) sees the whole server; this takes the request path apart.
Each operation that ``request_id_middleware``, ``setup(app)`` and its observers do per request
runs on its own, ``--number`` times in a loop inside a running task (as in a request), on the
objects a request has (``aiohttp.test_utils.make_mocked_request``, a ``web.Response``, a
mapping like the middleware's); best of ``--rounds``, minus the loop's own cost. The first
section is the whole middleware per request against a do-nothing middleware (one task per
request, as aiohttp runs them), the same floor the wrk ratios are taken against.

Run: ``python bench/middleware_floor.py`` (``--quick`` for a smoke run, ``--markdown``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shlex
import sys
import timeit
from collections.abc import Awaitable, Callable
from time import perf_counter, time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.typedefs import Handler
from multidict import istr
from tasks import render

import aioreqctx
from aioreqctx import keys
from aioreqctx._core.request_view import REQUESTS_LOGGER
from aioreqctx._core.store import current_mapping, enter
from aioreqctx._core.timing import OperationTimings, server_timing_header
from aioreqctx.web.middleware import CONTEXT_MAPPING, OWN_RECORD
from aioreqctx.web.server_events import ServerEvents

KEY = istr(keys.REQUEST_ID)
RID, START, WALL, OPS = keys.REQUEST_ID, keys.START_MONOTONIC, keys.START_TIME, keys.OPERATIONS
INCOMING_ID = "7d1f0c52-3a6e-4b8f-9c2d-51e0a4b6f389"

# Each operation as a statement over the names in ``namespace()``; grouped by who does it.
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("middleware", "read the ID header", "request.headers.get(KEY)"),
    ("middleware", "check an incoming ID", "valid(INCOMING_ID)"),
    ("middleware", "new_request_id()", "new_request_id()"),
    ("middleware", "os.urandom(16).hex() (reference)", "urandom(16).hex()"),
    ("middleware", "perf_counter() + time()", "perf_counter(); time()"),
    ("middleware", "OperationTimings()", "OperationTimings()"),
    ("middleware", "the mapping (4 keys)", "{RID: 1, START: 2, WALL: 3, OPS: 4}"),
    ("middleware", "store.enter(mapping)", "enter(mapping)"),
    ("middleware", "request[CONTEXT_MAPPING] = mapping", "request[CONTEXT_MAPPING] = mapping"),
    ("middleware", "response.prepared", "response.prepared"),
    ("middleware", "response.headers[ID] = id", "response.headers[KEY] = INCOMING_ID"),
    ("setup", "on_response_prepare (label)", "drive(setup.on_response_prepare(request, response))"),
    ("server_timing", "Server-Timing header value", "server_timing_header(1.5, [])"),
    ("events@WARNING", "RequestEvents start + finish", "events_pair()"),
    ("registry", "InFlightRegistry start + finish", "registry_pair()"),
    ("lifecycle@WARNING", "ServerEvents start + finish", "lifecycle_pair()"),
)


async def hello(request: web.Request) -> web.StreamResponse:
    return web.Response(text="Hello")


@web.middleware
async def noop(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


def drive(coroutine: Any) -> None:
    """Run a coroutine that never suspends, without the event loop."""
    with contextlib.suppress(StopIteration):
        coroutine.send(None)


def filtered(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    return logger


def namespace() -> dict[str, Any]:
    request = make_mocked_request("GET", "/orders/7")
    response = web.Response(text="Hello")
    mapping = {
        keys.REQUEST_ID: INCOMING_ID,
        keys.START_MONOTONIC: perf_counter(),
        keys.START_TIME: time(),
        keys.OPERATIONS: OperationTimings(),
    }
    request[CONTEXT_MAPPING] = mapping
    request[OWN_RECORD] = (INCOMING_ID, perf_counter(), OperationTimings())
    events = aioreqctx.RequestEvents(logger=filtered("bench.floor.events"))
    registry = aioreqctx.InFlightRegistry()
    filtered("bench.floor.lifecycle")
    lifecycle = ServerEvents(aioreqctx.LoggingCollector(logger="bench.floor.lifecycle"))
    app = web.Application()

    def pair(observer: Any) -> Any:
        def both() -> None:
            observer.request_started(request, mapping)
            observer.request_finished(request, mapping, response, None)

        return both

    return {
        **{"KEY": KEY, "INCOMING_ID": INCOMING_ID, "CONTEXT_MAPPING": CONTEXT_MAPPING},
        **{"RID": keys.REQUEST_ID, "START": keys.START_MONOTONIC, "WALL": keys.START_TIME},
        **{"OPS": keys.OPERATIONS, "request": request, "response": response, "mapping": mapping},
        "valid": aioreqctx.is_valid_request_id,
        "new_request_id": aioreqctx.new_request_id,
        "urandom": os.urandom,
        **{"perf_counter": perf_counter, "time": time, "OperationTimings": OperationTimings},
        **{"enter": enter, "drive": drive, "server_timing_header": server_timing_header},
        "setup": aioreqctx.setup(app),
        "events_pair": pair(events),
        "registry_pair": pair(registry),
        "lifecycle_pair": pair(lifecycle),
    }


async def per_operation(number: int, rounds: int) -> list[tuple[str, str, float]]:
    """ns per call of each operation, best of ``rounds``, the empty loop's cost taken off."""
    names = namespace()
    current_mapping.set(names["mapping"])
    empty = min(timeit.repeat("pass", number=number, repeat=rounds)) / number
    results = []
    for who, label, statement in OPERATIONS:
        best = min(timeit.repeat(statement, globals=names, number=number, repeat=rounds))
        results.append((who, label, (best / number - empty) * 1e9))
    return results


STEPS = (
    "read the ID header",
    "new_request_id()",
    "perf_counter() + time()",
    "OperationTimings()",
    "the mapping",
    "store.enter(mapping)",
    "request[CONTEXT_MAPPING] = mapping",
    "response.prepared + the response header",
)


def lean(without: str = "") -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The default middleware's work, reduced to its steps, less the step ``without``: what a
    request costs without one step is what that step costs in place (cache misses, the fresh
    task context and the allocations included, unlike a step timed on its own)."""
    header, generate, clocks, timings, build, entering, keyed, label = (
        step != without for step in STEPS
    )
    shared: dict[str, Any] = {}

    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request.headers.get(KEY) if header else None
        if request_id is None:
            request_id = aioreqctx.new_request_id() if generate else INCOMING_ID
        start, wall = (perf_counter(), time()) if clocks else (0.0, 0.0)
        operations = OperationTimings() if timings else None
        mapping = {RID: request_id, START: start, WALL: wall, OPS: operations} if build else shared
        if entering:
            enter(mapping)
        if keyed:
            request[CONTEXT_MAPPING] = mapping
        response = await handler(request)
        if label and not response.prepared:
            response.headers[KEY] = request_id
        return response

    return middleware


async def per_request(middleware: Any, prepare: Any, requests: list[web.Request]) -> float:
    """Seconds per request: one task each, as aiohttp runs them, middleware then prepare."""
    loop = asyncio.get_running_loop()

    async def one(request: web.Request) -> None:
        response = await middleware(request, hello)
        if prepare is not None:
            await prepare(request, response)

    started = perf_counter()
    for request in requests:
        await loop.create_task(one(request))
    return (perf_counter() - started) / len(requests)


async def whole(count: int, rounds: int) -> list[tuple[str, float]]:
    """The whole request path of each configuration, best of ``rounds``, in us."""
    filtered(REQUESTS_LOGGER)
    setup_app, full_app = web.Application(), web.Application()
    setup = aioreqctx.setup(setup_app)
    full = aioreqctx.setup(
        full_app, server_timing=True, request_events=True, registry=aioreqctx.InFlightRegistry()
    )
    cases: dict[str, tuple[Any, Any]] = {
        "noop middleware": (noop, None),
        "the default middleware's steps, inline": (lean(), None),
        **{f"  the same without {step}": (lean(step), None) for step in STEPS},
        "request_id_middleware": (aioreqctx.web.request_id_middleware, None),
        "setup(app)": (setup, setup.on_response_prepare),
        "setup(app, server_timing, events@WARNING, registry)": (full, full.on_response_prepare),
    }
    best = {name: float("inf") for name in cases}
    requests = [make_mocked_request("GET", "/") for _ in range(count)]  # slow to make: reused
    for _ in range(rounds):
        for name, (middleware, prepare) in cases.items():
            best[name] = min(best[name], await per_request(middleware, prepare, requests))
    return [(name, seconds * 1e6) for name, seconds in best.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    number, rounds = (200, 2) if args.quick else (args.number, args.rounds)
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n\n"
        f"Python {platform.python_version()}, {number} calls per timing, best of {rounds}.\n"
    )
    totals = asyncio.run(whole(max(number // 10, 50), rounds))
    floor = totals[0][1]
    steps = dict(totals)["the default middleware's steps, inline"]
    rows = [["configuration (one task per request)", "us/request", "over noop, us", "the step, us"]]
    for name, us in totals:
        step = f"{steps - us:+.2f}" if name.startswith("  the same without") else ""
        rows.append([name, f"{us:.2f}", f"{us - floor:+.2f}", step])
    print(render(rows, args.markdown))
    print()
    rows = [["who", "operation", "ns per request"]]
    rows += [
        [who, label, f"{ns:.0f}"] for who, label, ns in asyncio.run(per_operation(number, rounds))
    ]
    print(render(rows, args.markdown))


if __name__ == "__main__":
    main()
