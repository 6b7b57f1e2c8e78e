"""Debug on demand: a trusted request asking with X-Debug-Log is logged at DEBUG, and so are the
downstream service it calls and the arq job it queues."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import structlog
from aiohttp import ClientSession, web
from arq.connections import ArqRedis

import aioreqctx
from aioreqctx.integrations.arq import ArqPropagation
from aioreqctx.log import DebugOnDemand, LogBuffer, buffering_bound_logger
from aioreqctx.log.buffer import buffering

from .conftest import LoopFactory, run
from .integrations.test_arq import drain, pool_for
from .support.http_helpers import serving
from .support.log_capture import ListHandler, attached

log = logging.getLogger("tests.debug")
LOOPBACK = DebugOnDemand(trusted_networks=("127.0.0.0/8", "::1/128"))


@pytest.fixture
def lines() -> Iterator[ListHandler]:
    """``tests.debug`` at INFO; each line as ``LEVEL request_id message``."""
    handler = ListHandler("%(levelname)s %(request_id)s %(message)s")
    handler.addFilter(aioreqctx.RequestContextFilter())
    with attached("tests.debug", handler) as logger:
        logger.setLevel(logging.INFO)
        yield handler


def service(name: str, rule: DebugOnDemand, **calls: Any) -> web.Application:
    """A handler that logs at DEBUG, then calls ``calls["downstream"]`` and queues a job on
    ``calls["pool"]`` if given."""

    async def handle(request: web.Request) -> web.Response:
        log.debug("%s: the details", name)
        if "downstream" in calls:
            async with (
                ClientSession(middlewares=(aioreqctx.ClientPropagation(),)) as session,
                session.get(calls["downstream"]) as response,
            ):
                assert response.status == 200
        if "pool" in calls:
            pool: ArqRedis = calls["pool"]
            await pool.enqueue_job("debug_job")
        log.info("%s: done", name)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", handle)
    aioreqctx.setup(app, debug_on_demand=rule, log_buffer=LogBuffer())
    return app


async def get(port: int, request_id: str, *debug: str) -> None:
    headers = {"X-Request-ID": request_id}
    if debug:
        headers["X-Debug-Log"] = debug[0]
    async with (
        ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/", headers=headers) as response,
    ):
        assert response.status == 200


def test_a_trusted_peer_is_logged_at_debug_and_an_untrusted_one_is_ignored(
    lines: ListHandler, loop_factory: LoopFactory
) -> None:
    elsewhere = DebugOnDemand(trusted_networks=("10.0.0.0/8",))
    trusting = DebugOnDemand(trusted_networks=("127.0.0.0/8",))

    async def main() -> None:
        async with serving(service("here", trusting)) as port:
            await get(port, "asks", "1")
            await get(port, "quiet")
        async with serving(service("there", elsewhere)) as port:
            await get(port, "untrusted", "1")

    run(loop_factory, main)
    assert lines.lines == [
        "DEBUG asks here: the details",
        "INFO asks here: done",
        "INFO quiet here: done",
        "INFO untrusted there: done",
    ]
    assert not hasattr(lines.records[0], "buffered")  # written at once, not kept
    assert (trusting.ignored, elsewhere.ignored) == (0, 1)


KEY = b"shared secret"


def token(expires: int) -> str:
    """The documented HMAC token: ``<expiry>.<hex HMAC-SHA256 of the expiry>``."""
    signature = hmac.new(KEY, str(expires).encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{signature}"


def verify(value: str) -> bool:
    expires = value.partition(".")[0]
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(token(int(expires)), value)


def test_a_verifier_accepts_a_signed_token_and_ignores_a_forged_or_expired_one(
    lines: ListHandler,
) -> None:
    rule = DebugOnDemand(verifier=verify)
    now = int(time.time())

    async def main() -> None:
        async with serving(service("signed", rule)) as port:
            await get(port, "good", token(now + 60))
            await get(port, "forged", f"{now + 60}.{'0' * 64}")
            await get(port, "expired", token(now - 1))

    run(asyncio.new_event_loop, main)
    assert [line for line in lines.lines if line.startswith("DEBUG")] == [
        "DEBUG good signed: the details"
    ]
    assert rule.ignored == 2


async def debug_job(ctx: dict[str, Any]) -> None:
    log.debug("job: the details")
    log.info("job: done")


def test_the_decision_reaches_a_downstream_service_and_an_arq_job(
    lines: ListHandler, redis_url: str, redisdb: redis.Redis, loop_factory: LoopFactory
) -> None:
    redisdb.flushall()
    jobs = ArqPropagation(aioreqctx.JobPropagation(debug_on_demand=LOOPBACK))

    async def main() -> None:
        async with (
            pool_for(redis_url, jobs) as pool,
            serving(service("back", LOOPBACK)) as back,
            serving(
                service("front", LOOPBACK, downstream=f"http://127.0.0.1:{back}/", pool=pool)
            ) as front,
        ):
            await get(front, "asks", "1")
            await get(front, "quiet")

        await drain(redis_url, jobs, [debug_job])

    run(loop_factory, main)
    debug = sorted(line for line in lines.lines if line.startswith("DEBUG"))
    assert debug == [
        "DEBUG asks back: the details",
        "DEBUG asks front: the details",
        "DEBUG asks job: the details",
    ]
    assert sum(line.startswith("INFO quiet") for line in lines.lines) == 3  # front, back, job


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs trusted_networks or a verifier"),
        ({"trusted_networks": "10.0.0.0/8"}, "trusted_networks must be a tuple"),
        ({"verifier": "hmac"}, "verifier must be callable"),
        ({"verifier": verify, "header": "X Debug"}, "not a valid header name"),
    ],
)
def test_a_bad_debug_on_demand_option_is_refused_by_name(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        DebugOnDemand(**options)


def test_structlog_writes_a_trusted_requests_debug_lines_at_once() -> None:
    stream = io.StringIO()
    structlog.configure(
        processors=[aioreqctx.add_request_context, structlog.processors.JSONRenderer()],
        wrapper_class=buffering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(stream),
    )
    try:
        with aioreqctx.scope({aioreqctx.REQUEST_ID: "asks"}), buffering(LOOPBACK.lines()):
            structlog.get_logger().debug("the details")
            assert stream.getvalue() != ""  # written at once, before the block ends
    finally:
        structlog.reset_defaults()
    assert json.loads(stream.getvalue()) == {"event": "the details", "request_id": "asks"}
