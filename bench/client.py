"""What outgoing-call propagation adds to a ``ClientSession.get``, measured in the client process.

A hello-world aiohttp server runs in a process of its own (``python bench/client.py serve``,
127.0.0.1, a free port, pinned to CPU 0 with ``taskset`` when there is one). This process (pinned
to CPU 1) makes sequential keep-alive GETs through one session per variant, every call inside
``aioreqctx.scope`` with an ID, as a handler's calls would be:

1. ``bare``: ``ClientSession()``, the floor every ratio is taken against;
2. ``noop middleware``: a client middleware that only awaits the handler (a reference: what
   aiohttp charges for having any client middleware at all);
3. ``ClientPropagation``: ``ClientSession(middlewares=(aioreqctx.ClientPropagation(),))``;
4. ``ClientPropagation + deadline``: the same with a deadline in the context (header + timeout);
5. ``trace_config``: ``ClientSession(trace_configs=[ClientPropagation().trace_config()])``.

Each round runs every variant once, in an order rotated each round (round 0 warms up and is
discarded), and measures this process's CPU time (``time.process_time``) and wall time per
request. The table gives, per variant, the median over rounds of each as a ratio to ``bare`` in
the same round, and the min-max of the CPU ratio. Target: ``ClientPropagation`` <= 1.02x.

    python bench/client.py [--rounds 15] [--requests 2000] [--loop asyncio|uvloop] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import uvloop
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientSession, web

import aioreqctx


async def serve() -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await runner.cleanup()


async def noop_middleware(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    return await handler(request)


def variants() -> dict[str, Callable[[], ClientSession]]:
    propagation = aioreqctx.ClientPropagation()
    return {
        "bare": ClientSession,
        "noop middleware": lambda: ClientSession(middlewares=(noop_middleware,)),
        "ClientPropagation": lambda: ClientSession(middlewares=(propagation,)),
        "ClientPropagation + deadline": lambda: ClientSession(middlewares=(propagation,)),
        "trace_config": lambda: ClientSession(trace_configs=[propagation.trace_config()]),
    }


async def one_run(
    session: ClientSession, url: str, requests: int, deadline: bool
) -> tuple[float, float]:
    """CPU and wall seconds per request for ``requests`` sequential GETs."""
    initial: dict[str, Any] = {aioreqctx.REQUEST_ID: "bench-0001"}
    if deadline:
        initial[aioreqctx.keys.DEADLINE] = time.monotonic() + 3600
    with aioreqctx.scope(initial):
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(requests):
            async with session.get(url) as response:
                await response.read()
        return (time.process_time() - cpu) / requests, (time.perf_counter() - wall) / requests


async def measure(url: str, rounds: int, requests: int) -> dict[str, list[tuple[float, float]]]:
    factories = variants()
    sessions = {name: make() for name, make in factories.items()}
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in sessions}
    names = list(sessions)
    try:
        for round_number in range(rounds + 1):
            shift = round_number % len(names)
            results = {}
            for name in names[shift:] + names[:shift]:
                results[name] = await one_run(sessions[name], url, requests, "deadline" in name)
            if round_number == 0:
                continue  # warm-up
            floor_cpu, floor_wall = results["bare"]
            for name, (cpu, wall) in results.items():
                ratios[name].append((cpu / floor_cpu, wall / floor_wall))
    finally:
        for session in sessions.values():
            await session.close()
    return ratios


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() != 1 else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--quick", action="store_true", help="3 rounds x 200 requests (smoke)")
    options = parser.parse_args()
    if options.mode == "serve":
        asyncio.run(serve())
        return
    if options.quick:
        options.rounds, options.requests = 3, 200
    if pinned(1):
        os.sched_setaffinity(0, {1})
    server = subprocess.Popen(
        [*pinned(0), sys.executable, __file__, "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{int(server.stdout.readline())}/"
        loop_factory = uvloop.new_event_loop if options.loop == "uvloop" else None
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            ratios = runner.run(measure(url, options.rounds, options.requests))
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    print(
        f"Python {sys.version.split()[0]}, {options.loop}, {options.rounds} rounds x "
        f"{options.requests} sequential keep-alive GETs per variant, ratios to bare, medians"
    )
    print(f"{'variant':<30} {'CPU ratio':>10} {'CPU min-max':>14} {'wall ratio':>11}")
    for name, values in ratios.items():
        cpu = [value[0] for value in values]
        wall = statistics.median(value[1] for value in values)
        spread = f"{min(cpu):.3f}-{max(cpu):.3f}"
        print(f"{name:<30} {statistics.median(cpu):>9.3f}x {spread:>14} {wall:>10.3f}x")


if __name__ == "__main__":
    main()
