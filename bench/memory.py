"""Whether a server's memory stays flat over many requests through ``setup(app)`` with every
observer on (issue 13: 100,000 requests, RSS flat).

The server is ``bench/http_middleware.py``'s "aioreqctx, every observer on" variant in a process
of its own on CPU 0: ``setup(app, server_timing=True, request_events=True, registry=...,
collector=LoggingCollector())``, with request and lifecycle events written (at DEBUG, to
/dev/null), so every per-request object the observers make is made. This driver, on CPU 1,
sends ``--requests`` GETs with 16 connections at a time, half of them carrying an
``X-Request-ID``, and opens new connections for every slice of ``--requests / --samples``
requests (connection objects come and go too). After each slice it reads the server's
``VmRSS`` from ``/proc/<pid>/status``. The first slice warms up (imports, caches, the
allocator's arenas); the verdict compares the last sample with it.

Run: ``python bench/memory.py`` (``--requests``, ``--samples``, ``--quick`` for a smoke run,
``--markdown`` for bench/RESULTS.md). Linux only (``/proc``, ``taskset``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shlex
import sys
from importlib.metadata import version

from aiohttp import ClientSession, TCPConnector
from http_middleware import EVERY_OBSERVER, INCOMING_ID, KEY, running_server
from tasks import render

CONNECTIONS = 16
FLAT_MB = 2.0
"""Growth after warm-up that still counts as flat: allocator arenas and caches settle in steps."""


def rss_kb(pid: int) -> int:
    """The process's resident set size, from ``/proc/<pid>/status`` (``VmRSS``, kB)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


async def send(url: str, count: int) -> None:
    """``count`` GETs over ``CONNECTIONS`` new keep-alive connections, every other one with
    an incoming ID; each answer is read and checked."""
    connector = TCPConnector(limit=CONNECTIONS)
    async with ClientSession(connector=connector) as session:

        async def worker(first: int) -> None:
            for number in range(first, count, CONNECTIONS):
                headers = {KEY: INCOMING_ID} if number % 2 else {}
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    if response.status != 200 or KEY not in response.headers:
                        raise RuntimeError(f"request {number}: {response.status}")

        await asyncio.gather(*(worker(first) for first in range(CONNECTIONS)))


def measure(requests: int, samples: int, server_cpu: int) -> list[tuple[int, int]]:
    """(requests so far, RSS kB) after each slice, starting with the idle server."""
    with running_server(EVERY_OBSERVER, "asyncio", server_cpu) as server:
        pid = server.process.pid
        readings = [(0, rss_kb(pid))]
        per_slice = requests // samples
        for done in range(per_slice, per_slice * samples + 1, per_slice):
            asyncio.run(send(server.url, per_slice))
            readings.append((done, rss_kb(pid)))
            print(f"{done} requests: {readings[-1][1]} kB", file=sys.stderr, flush=True)
    return readings


def report(readings: list[tuple[int, int]], markdown: bool) -> str:
    warm = readings[1][1]
    rows = [["requests", "RSS MB", "since warm-up MB"]]
    rows += [[f"{done}", f"{kb / 1024:.1f}", f"{(kb - warm) / 1024:+.1f}"] for done, kb in readings]
    growth = (readings[-1][1] - warm) / 1024
    peak = (max(kb for _, kb in readings[1:]) - warm) / 1024
    verdict = "flat" if growth <= FLAT_MB else "GROWS"
    return (
        f"{render(rows, markdown)}\n\nAfter the {readings[1][0]} warm-up requests: "
        f"{growth:+.1f} MB at the end, {peak:+.1f} MB at the peak: {verdict} "
        f"(flat: at most +{FLAT_MB:.0f} MB)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20, help="RSS readings after warm-up")
    parser.add_argument("--quick", action="store_true", help="2,000 requests: a smoke run")
    parser.add_argument("--markdown", action="store_true", help="a table for bench/RESULTS.md")
    parser.add_argument("--cpus", type=int, nargs=2, default=(0, 1), help="server and driver core")
    args = parser.parse_args()
    requests, samples = (2_000, 4) if args.quick else (args.requests, args.samples)
    server_cpu, driver_cpu = args.cpus
    os.sched_setaffinity(0, {driver_cpu})
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n\n"
        f"Python {platform.python_version()}, aiohttp {version('aiohttp')}, server "
        f"{EVERY_OBSERVER.name!r} on CPU {server_cpu}, this driver on CPU {driver_cpu}, "
        f"{requests} requests over {CONNECTIONS} connections, new connections every "
        f"{requests // samples}.\n"
    )
    print(report(measure(requests, samples, server_cpu), args.markdown))


if __name__ == "__main__":
    main()
