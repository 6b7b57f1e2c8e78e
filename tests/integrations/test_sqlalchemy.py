"""SQLAlchemy's asyncio engine over asyncpg: accounted and tagged per request, real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

import aioreqctx as context
from aioreqctx.integrations.asyncpg import QueryAccounting

from ..conftest import LoopFactory, run
from ..support.http_helpers import serving
from ..support.log_capture import capture
from ..support.postgres_server import PostgresServer


def engine_for(postgres: PostgresServer) -> AsyncEngine:
    """One connection, so each request meets the previous requests' prepared statements."""
    url = postgres.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    return create_async_engine(url, pool_size=1, max_overflow=0)


@asynccontextmanager
async def served(postgres: PostgresServer, accounting: QueryAccounting) -> AsyncIterator[int]:
    """``/items/{n}`` runs ``n`` queries in an ``AsyncSession``; ``/broken`` one that fails."""
    engine = engine_for(postgres)
    accounting.listen_sqlalchemy(engine)
    marker = MARKER

    async def items(request: web.Request) -> web.Response:
        async with AsyncSession(engine) as session:
            for i in range(int(request.match_info["n"])):
                result = await session.execute(text(f"SELECT :i + 1 AS {marker}"), {"i": i})
                assert result.scalar_one() == i + 1
        view = context.RequestContext.current()
        assert view is not None
        return web.json_response(view.usage)

    async def broken(request: web.Request) -> web.Response:
        async with AsyncSession(engine) as session:
            with pytest.raises(DBAPIError):
                await session.execute(text(f"SELECT no_such_column AS {marker}"))
        view = context.RequestContext.current()
        assert view is not None
        return web.json_response(view.usage)

    app = web.Application()
    context.setup(app, observers=(accounting,))  # notes each request's route
    app.router.add_get("/items/{n}", items)
    app.router.add_get("/broken", broken)
    try:
        async with engine.connect() as warm_up:  # the dialect's first-connect queries
            await warm_up.execute(text("SELECT 1"))
        async with serving(app) as port:
            yield port
    finally:
        await engine.dispose()


MARKER = f"m_{uuid.uuid4().hex}"


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def test_two_queries_in_an_async_session_count_and_carry_the_route_to_postgres(
    postgres_server: PostgresServer, loop_factory: LoopFactory
) -> None:
    async def main() -> list[Any]:
        async with (
            served(postgres_server, QueryAccounting()) as port,
            aiohttp.ClientSession() as session,
        ):
            return [await get_json(session, f"http://127.0.0.1:{port}/items/2") for _ in range(3)]

    usages = run(loop_factory, main)
    assert [usage["db_queries"] for usage in usages] == [2, 2, 2]
    assert all(0 < usage["db_queries_slowest_ms"] <= usage["db_queries_ms"] for usage in usages)
    lines = [line for line in postgres_server.log_text().splitlines() if MARKER in line]
    executed = [line for line in lines if re.search(r"execute [^:]*:", line)]
    parsed = [line for line in lines if re.search(r"parse [^:]*:", line)]
    assert len(executed) >= 6  # this run's 6 queries (and an earlier loop's)
    assert all("/* route='/items/{n}' */ SELECT" in line for line in executed)
    # SQLAlchemy's prepared-statement cache still hits: prepared once per connection and
    # loop run, not once per query.
    assert 0 < len(parsed) < len(executed) / 2


def test_a_failing_query_is_counted_as_an_error_and_logged_when_slow(
    postgres_server: PostgresServer,
) -> None:
    async def main() -> Any:
        async with (
            served(postgres_server, QueryAccounting(slow_ms=0)) as port,
            aiohttp.ClientSession() as session,
        ):
            return await get_json(session, f"http://127.0.0.1:{port}/broken")

    with capture("aioreqctx.sql") as captured:
        usage = asyncio.run(main())
    assert usage["db_queries"] == 1
    assert usage["db_queries_errors"] == 1
    warm_up, slow = captured.fields("slow_query")  # slow_ms=0: every query is "slow"
    assert warm_up["request_id"] is None
    assert slow["error"] == "ProgrammingError"
    assert isinstance(slow["request_id"], str)
    assert "no_such_column" in str(slow["statement"])


def test_listen_sqlalchemy_names_a_wrong_engine() -> None:
    with pytest.raises(TypeError, match="engine must be a SQLAlchemy Engine"):
        QueryAccounting().listen_sqlalchemy("postgresql+asyncpg://localhost/db")
