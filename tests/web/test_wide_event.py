"""The wide event: one summary of what a request (or job) used, on its access line, its
``request_finished`` event, its ``Server-Timing`` header and in Prometheus.

Everything is real: PostgreSQL through asyncpg, a second aiohttp app on 127.0.0.1 for the
outgoing calls, taskiq's in-memory broker for the jobs, stdlib logging for the warnings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

import aioreqctx as context
from aioreqctx.events import ResponseCompleted, Used
from aioreqctx.integrations.asyncpg import QueryAccounting
from aioreqctx.integrations.prometheus import PrometheusCollector

from ..conftest import LoopFactory, run
from ..support.http_helpers import serving
from ..support.log_capture import Captured, capture
from ..support.postgres_server import PostgresServer
from ..support.taskiq_app import TaskiqApp, memory_broker, working

ACCESS_LOGGER = "tests.wide.access"
REQUESTS_LOGGER = "tests.wide.requests"
warnings_logger = logging.getLogger("tests.wide.handler")


@dataclass
class Service:
    port: int
    db: asyncpg.Pool
    jobs: TaskiqApp


@asynccontextmanager
async def backend() -> AsyncIterator[int]:
    """The second service the handler calls: ``/ok`` answers 200, ``/down`` 503."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/down", down)
    async with serving(app) as port:
        yield port


@asynccontextmanager
async def service(
    postgres: PostgresServer, *, collector: PrometheusCollector | None = None
) -> AsyncIterator[Service]:
    """``/work/{queries}/{calls}/{jobs}``: that many SQL queries, outgoing calls (the last one
    to ``/down`` when ``?down=1``) and jobs queued, and one warning logged."""
    accounting = QueryAccounting()
    async with AsyncExitStack() as stack:
        backend_port = await stack.enter_async_context(backend())
        db = await asyncpg.create_pool(postgres.dsn, init=accounting.init, min_size=1, max_size=8)
        stack.push_async_callback(db.close)
        client = await stack.enter_async_context(
            aiohttp.ClientSession(middlewares=(context.ClientPropagation(),))
        )
        jobs = TaskiqApp(memory_broker())
        await stack.enter_async_context(working(jobs))

        async def work(request: web.Request) -> web.Response:
            queries, calls, queued = (int(request.match_info[n]) for n in ("q", "c", "j"))
            for i in range(queries):
                assert await db.fetchval("SELECT $1::int", i) == i
            for i in range(calls):
                down = request.query.get("down") == "1" and i == calls - 1
                url = f"http://127.0.0.1:{backend_port}/{'down' if down else 'ok'}"
                async with client.get(url) as response:
                    await response.read()
            for _ in range(queued):
                await jobs.record.kiq(request.path)
            warnings_logger.warning("nearly out of stock")
            return web.Response(text="done")

        app = web.Application()
        context.setup(
            app,
            observers=(accounting,),
            request_events=context.RequestEvents(logger=REQUESTS_LOGGER),
            server_timing=True,
            collector=collector,
        )
        app.router.add_get("/work/{q}/{c}/{j}", work)
        uninstall = context.install_log_record_factory()
        stack.callback(uninstall)
        port = await stack.enter_async_context(
            serving(
                app,
                access_log_class=context.AccessLogger,
                access_log=logging.getLogger(ACCESS_LOGGER),
            )
        )
        yield Service(port, db, jobs)


def by_path(captured: Captured, event: str) -> dict[str, dict[str, object]]:
    return {str(fields["path"]): fields for fields in captured.fields(event)}


def test_a_handler_making_3_queries_2_calls_and_1_job_has_them_on_its_wide_lines(
    postgres_server: PostgresServer, loop_factory: LoopFactory
) -> None:
    async def main() -> str:
        async with service(postgres_server) as served, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{served.port}/work/3/2/1"
            async with session.get(url) as response:
                assert response.status == 200
                return response.headers["Server-Timing"]

    with capture(ACCESS_LOGGER) as access, capture(REQUESTS_LOGGER) as requests:
        server_timing = run(loop_factory, main)
    for captured, event in ((access, "access"), (requests, "request_finished")):
        fields = by_path(captured, event)["/work/3/2/1"]
        assert (fields["db_queries"], fields["http_calls"], fields["jobs"]) == (3, 2, 1)
        assert fields["log_warnings"] == 1
        for timed in ("db_queries", "http_calls"):
            assert 0 < fields[f"{timed}_slowest_ms"] <= fields[f"{timed}_ms"]  # type: ignore[operator]
        assert "http_calls_errors" not in fields
        assert "jobs_ms" not in fields
    line = access.text().splitlines()[-1]
    assert " db_queries=3 db_queries_ms=" in line
    assert " http_calls=2 " in line
    assert " jobs=1 " in line
    assert " log_warnings=1" in line
    assert "db_queries;dur=" in server_timing
    assert "http_calls;dur=" in server_timing


def test_a_request_that_used_nothing_has_nothing_added(
    postgres_server: PostgresServer,
) -> None:
    async def main() -> None:
        async with (
            service(postgres_server) as served,
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{served.port}/work/0/0/0") as response,
        ):
            assert response.status == 200

    with (
        capture(ACCESS_LOGGER) as access,
        capture(REQUESTS_LOGGER) as requests,
        capture(warnings_logger.name, logging.ERROR),  # the handler's warning: filtered out
    ):
        asyncio.run(main())
    (access_fields,) = access.fields("access")
    assert list(access_fields)[-1] == "disconnected"  # nothing after the fixed fields
    (finished,) = requests.fields("request_finished")
    assert list(finished) == ["request_id", "method", "path", "status", "duration_ms"]


def test_200_concurrent_requests_each_get_their_own_counts(
    postgres_server: PostgresServer, loop_factory: LoopFactory
) -> None:
    paths = [f"/work/{i % 4}/{i % 3}/{i % 2}" for i in range(200)]

    async def main() -> None:
        async with service(postgres_server) as served, aiohttp.ClientSession() as session:

            async def get(path: str) -> None:
                async with session.get(f"http://127.0.0.1:{served.port}{path}") as response:
                    assert response.status == 200

            await asyncio.gather(*(get(path) for path in paths))

    with capture(ACCESS_LOGGER) as access, capture(REQUESTS_LOGGER) as requests:
        run(loop_factory, main)
    for captured, event in ((access, "access"), (requests, "request_finished")):
        lines = captured.fields(event)
        assert len(lines) == 200
        for fields in lines:
            q, c, j = (int(n) for n in str(fields["path"]).split("/")[2:])
            used = (fields.get("db_queries", 0), fields.get("http_calls", 0), fields.get("jobs", 0))
            assert used == (q, c, j), fields


def test_a_failed_call_counts_as_an_error_and_prometheus_adds_up_what_requests_used(
    postgres_server: PostgresServer,
) -> None:
    registry = CollectorRegistry()
    collector = PrometheusCollector(registry=registry)

    async def main() -> None:
        async with (
            service(postgres_server, collector=collector) as served,
            aiohttp.ClientSession() as session,
        ):
            for path in ("/work/2/1/0", "/work/1/2/1?down=1"):
                async with session.get(f"http://127.0.0.1:{served.port}{path}") as response:
                    assert response.status == 200
            await asyncio.sleep(0.05)  # ResponseCompleted: when each request's task is done

    with capture(ACCESS_LOGGER) as access:
        asyncio.run(main())
    assert by_path(access, "access")["/work/1/2/1"]["http_calls_errors"] == 1
    value: Callable[..., float | None] = registry.get_sample_value
    assert value("aioreqctx_dependency_uses_total", {"name": "db_queries"}) == 3
    assert value("aioreqctx_dependency_uses_total", {"name": "http_calls"}) == 3
    assert value("aioreqctx_dependency_uses_total", {"name": "jobs"}) == 1
    assert value("aioreqctx_dependency_errors_total", {"name": "http_calls"}) == 1
    assert value("aioreqctx_dependency_seconds_total", {"name": "db_queries"}) > 0  # type: ignore[operator]
    assert value("aioreqctx_dependency_errors_total", {"name": "db_queries"}) is None


def test_a_jobs_finished_line_carries_what_it_used(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        async with (
            backend() as port,
            aiohttp.ClientSession(middlewares=(context.ClientPropagation(),)) as client,
        ):
            broker = memory_broker(events=context.JobEvents(logger=REQUESTS_LOGGER))

            async def call_twice_and_time() -> None:
                for path in ("/ok", "/down"):
                    async with client.get(f"http://127.0.0.1:{port}{path}") as response:
                        await response.read()
                async with context.timed_operation("render page"):
                    await asyncio.sleep(0)
                logging.getLogger("tests.wide.job").error("the backend is down")

            task = broker.register_task(call_twice_and_time, "call_twice_and_time")
            uninstall = context.install_log_record_factory()
            await broker.startup()
            try:
                await task.kiq()
                await broker.wait_all()
            finally:
                uninstall()
                await broker.shutdown()

    with capture(REQUESTS_LOGGER) as jobs, capture("tests.wide.job"):
        run(loop_factory, main)
    (finished,) = jobs.fields("job_finished")
    assert (finished["http_calls"], finished["http_calls_errors"]) == (2, 1)
    assert finished["log_errors"] == 1
    assert finished["op_render_page_ms"] >= 0  # type: ignore[operator]
    assert "jobs" not in finished


@pytest.mark.parametrize("usage", [True, False])
def test_usage_false_leaves_the_fields_out(usage: bool) -> None:
    async def main() -> None:
        async def handler(request: web.Request) -> web.Response:
            warnings_logger.warning("counted")
            return web.Response()

        app = web.Application()
        context.setup(
            app, request_events=context.RequestEvents(logger=REQUESTS_LOGGER, usage=usage)
        )
        app.router.add_get("/", handler)
        uninstall = context.install_log_record_factory()
        try:
            async with (
                serving(app) as port,
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/") as response,
            ):
                assert response.status == 200
        finally:
            uninstall()

    with capture(REQUESTS_LOGGER) as requests, capture(warnings_logger.name):
        asyncio.run(main())
    (finished,) = requests.fields("request_finished")
    assert ("log_warnings" in finished) is usage


def test_the_logging_collector_puts_the_totals_on_response_completed_as_flat_fields() -> None:
    collector = context.LoggingCollector(logger="tests.wide.lifecycle")
    event = ResponseCompleted(
        connection_id=1,
        worker_id=1,
        request_id="req-9",
        method="GET",
        path="/",
        status=200,
        bytes_sent=10,
        duration_ms=1.0,
        streaming=False,
        usage={"db_queries": Used(3, 4.5, 2.0, 1), "jobs": Used(1, 0.0, 0.0, 0)},
    )
    with capture("tests.wide.lifecycle") as lifecycle:
        collector.record(event)
    (fields,) = lifecycle.fields("response_completed")
    assert {key: fields[key] for key in list(fields)[-5:]} == {
        "db_queries": 3,
        "db_queries_ms": 4.5,
        "db_queries_slowest_ms": 2.0,
        "db_queries_errors": 1,
        "jobs": 1,
    }
    assert "usage" not in fields
