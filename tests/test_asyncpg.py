"""asyncpg queries counted, timed and tagged per request, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import asyncpg
import pytest
from aiohttp import web

import aioreqctx as context
from aioreqctx.integrations.asyncpg import QueryAccounting

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import capture
from .postgres_server import PostgresServer

ROUTE = "/items/{n}"


@asynccontextmanager
async def app_with_pool(
    postgres: PostgresServer, accounting: QueryAccounting, marker: str, **pool: int
) -> AsyncIterator[tuple[int, asyncpg.Pool]]:
    """A server whose ``/items/{n}`` handler runs ``n`` queries and answers with its usage."""
    db = await asyncpg.create_pool(
        postgres.dsn,
        init=accounting.init,
        setup=accounting.setup,
        connection_class=accounting.connection_class,
        min_size=1,
        **pool,
    )

    async def items(request: web.Request) -> web.Response:
        for i in range(int(request.match_info["n"])):
            assert await db.fetchval(f"SELECT $1::int + 1 AS {marker}", i) == i + 1
        view = context.RequestContext.current()
        assert view is not None
        return web.json_response(view.usage)

    app = web.Application()
    context.setup(app, observers=(accounting,))
    app.router.add_get(ROUTE, items)
    try:
        async with serving(app) as port:
            yield port, db
    finally:
        await db.close()


def marked() -> str:
    return f"m_{uuid.uuid4().hex}"


async def usage_of(session: aiohttp.ClientSession, port: int, n: int) -> dict[str, float]:
    async with session.get(f"http://127.0.0.1:{port}/items/{n}") as response:
        assert response.status == 200
        usage: dict[str, float] = await response.json()
        return usage


def test_a_handler_making_3_queries_has_db_queries_3(
    postgres_server: PostgresServer, loop_factory: LoopFactory
) -> None:
    async def main() -> dict[str, float]:
        async with (
            app_with_pool(postgres_server, QueryAccounting(), marked()) as (port, _),
            aiohttp.ClientSession() as session,
        ):
            return await usage_of(session, port, 3)

    usage = run(loop_factory, main)
    assert usage["db_queries"] == 3
    assert 0 < usage["db_queries_slowest_ms"] <= usage["db_queries_ms"]
    assert "db_queries_errors" not in usage


def test_200_concurrent_requests_each_get_their_own_counts(
    postgres_server: PostgresServer, loop_factory: LoopFactory
) -> None:
    async def main() -> list[dict[str, float]]:
        async with (
            app_with_pool(postgres_server, QueryAccounting(), marked(), max_size=8) as (port, _),
            aiohttp.ClientSession() as session,
        ):
            return await asyncio.gather(*(usage_of(session, port, i % 5) for i in range(200)))

    for i, usage in enumerate(run(loop_factory, main)):
        assert usage.get("db_queries", 0) == i % 5


def prepared_count(statements: list[asyncpg.Record], marker: str) -> int:
    return sum(marker in row["statement"] for row in statements)


@pytest.mark.parametrize("request_id_comment", [False, True])
def test_postgres_logs_the_route_on_every_statement_and_the_cache_still_hits(
    postgres_server: PostgresServer, request_id_comment: bool
) -> None:
    marker = marked()
    accounting = QueryAccounting(request_id_comment=request_id_comment)

    async def main() -> int:
        # One connection: each request's statements meet the previous requests' cache.
        async with (
            app_with_pool(postgres_server, accounting, marker, max_size=1) as (
                port,
                db,
            ),
            aiohttp.ClientSession() as session,
        ):
            for _ in range(5):
                assert (await usage_of(session, port, 2))["db_queries"] == 2
            statements = await db.fetch("SELECT statement FROM pg_prepared_statements")
            return prepared_count(statements, marker)

    prepared = asyncio.run(main())
    lines = [line for line in postgres_server.log_text().splitlines() if marker in line]
    statements = [line for line in lines if re.search(r"(parse|execute) [^:]*:", line)]
    assert len(statements) >= 10  # each of the 10 queries was at least executed
    assert all("/* route='/items/{n}'" in line for line in statements)
    if request_id_comment:
        assert prepared == 5  # one per request: the cache never hits
        assert len({re.search(r"request_id='([\w-]+)'", s)[1] for s in statements}) == 5  # type: ignore[index]
    else:
        assert prepared == 1  # prepared once, then reused by every request


def test_application_name_carries_the_request_id(postgres_server: PostgresServer) -> None:
    accounting = QueryAccounting(application_name=True)

    async def main() -> str:
        db = await asyncpg.create_pool(
            postgres_server.dsn, setup=accounting.setup, min_size=1, max_size=1
        )
        try:
            async with context.unit_of_work(request_id="req-42"), db.acquire() as connection:
                name: str = await connection.fetchval("SHOW application_name")
            async with db.acquire() as connection:  # released: the pool's reset restored it
                assert await connection.fetchval("SHOW application_name") != "req-42"
            return name
        finally:
            await db.close()

    assert asyncio.run(main()) == "req-42"


def test_slow_and_failed_queries_are_logged_with_the_request_id_without_parameters(
    postgres_server: PostgresServer,
) -> None:
    accounting = QueryAccounting(slow_ms=50)

    async def main() -> dict[str, float]:
        connection = await asyncpg.connect(postgres_server.dsn)
        await accounting.init(connection)
        try:
            async with context.unit_of_work(request_id="req-slow"):
                await connection.fetchval("SELECT pg_sleep($1::float)", 0.06)
                await connection.fetchval("SELECT $1::int", 1)  # fast: counted, not logged
                with pytest.raises(asyncpg.PostgresError):
                    await connection.execute("SELECT no_such_column")
                await asyncio.sleep(0)  # the query logger runs from call_soon
                view = context.RequestContext.current()
                assert view is not None
                return view.usage
        finally:
            await connection.close()

    with capture("aioreqctx.sql") as captured:
        usage = asyncio.run(main())
    assert usage["db_queries"] == 3
    assert usage["db_queries_errors"] == 1
    assert usage["db_queries_slowest_ms"] >= 50
    (slow,) = captured.fields("slow_query")
    assert captured.records[0].levelno == logging.WARNING
    assert slow["request_id"] == "req-slow"
    assert slow["statement"] == "SELECT pg_sleep($1::float)"
    assert "args" not in slow
    assert "0.06" not in captured.text()


def test_slow_ms_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="slow_ms"):
        QueryAccounting(slow_ms="fast")  # type: ignore[arg-type]
