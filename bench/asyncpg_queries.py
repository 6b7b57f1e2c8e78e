"""Per query: asyncpg with ``aioreqctx.integrations.asyncpg`` against plain asyncpg.

A private PostgreSQL (the tests' own, from Debian's packages) on 127.0.0.1; one pool of one
connection per variant; each round runs "requests" of 3 queries (``SELECT $1::int``) inside a
unit of work with a route, in an order of variants rotated each round. Variants:

* plain: asyncpg alone (the floor);
* accounting: ``QueryAccounting`` (its query logger counting and timing each query into the
  request's usage, and the per-route comment, constant per route: the statement cache hits);
* request-ID comment: ``QueryAccounting(request_id_comment=True)``: a comment unique to each
  request, so every request prepares its statements anew.

Per query: the median over rounds (and the min), ratio to plain. ``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import asyncpg

import aioreqctx
from aioreqctx import keys
from aioreqctx.integrations.asyncpg import QueryAccounting

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.postgres_server import _bindir, _start

QUERIES_PER_REQUEST = 3


async def pool_for(dsn: str, accounting: QueryAccounting | None) -> Any:
    if accounting is None:
        return await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=1,
        init=accounting.init,
        connection_class=accounting.connection_class,
    )


def requests_of(pool: Any, requests: int) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        for n in range(requests):
            async with aioreqctx.unit_of_work(f"req-{n}"):
                aioreqctx.set(keys.ROUTE, "/items/{n}")
                async with pool.acquire() as connection:
                    for i in range(QUERIES_PER_REQUEST):
                        await connection.fetchval("SELECT $1::int", i)

    return run


async def measure(dsn: str, rounds: int, requests: int) -> dict[str, list[float]]:
    variants = {
        "plain asyncpg": None,
        "with QueryAccounting": QueryAccounting(slow_ms=10_000),
        "with the request ID in a comment": QueryAccounting(
            slow_ms=10_000, request_id_comment=True
        ),
    }
    pools = {name: await pool_for(dsn, accounting) for name, accounting in variants.items()}
    runs = {name: requests_of(pool, requests) for name, pool in pools.items()}
    per_query: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    try:
        for name in names:  # warm-up: connections, the statement cache
            await runs[name]()
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                start = perf_counter()
                await runs[name]()
                per_query[name].append((perf_counter() - start) / (requests * QUERIES_PER_REQUEST))
    finally:
        for pool in pools.values():
            await pool.close()
    return per_query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    options = parser.parse_args()
    rounds, requests = (3, 20) if options.quick else (15, 200)
    bindir = _bindir()
    if bindir is None:
        sys.exit("PostgreSQL is not installed: apt-get install postgresql (or make postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="aioreqctx-bench-postgres-"))
    process, server = _start(bindir, directory)
    try:
        per_query = asyncio.run(measure(server.dsn, rounds, requests))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    floor = statistics.median(per_query["plain asyncpg"])
    print(f"{sys.version.split()[0]}, {rounds} rounds of {requests} requests x 3 queries")
    print(f"{'variant':<36}{'median µs':>12}{'min µs':>10}{'ratio':>8}")
    for name, samples in per_query.items():
        median = statistics.median(samples)
        print(f"{name:<36}{median * 1e6:>12.1f}{min(samples) * 1e6:>10.1f}{median / floor:>8.2f}")


if __name__ == "__main__":
    main()
