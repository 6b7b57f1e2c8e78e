"""Sentry with the real sentry-sdk and a transport that keeps envelopes in memory (no network)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sentry_sdk
from aiohttp import ClientSession, web
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.aiohttp import AioHttpIntegration
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport
from taskiq import InMemoryBroker

import aioreqctx as context
from aioreqctx.integrations.sentry import AioreqctxIntegration, UnhandledErrorReporter
from aioreqctx.integrations.taskiq import JobContextMiddleware

from .conftest import LoopFactory, run
from .http_helpers import serving

app_logger = logging.getLogger("tests.sentry.app")


class MemoryTransport(Transport):
    """Keeps every event Sentry would have sent."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            with self._lock:
                self.events.append(dict(event))

    def messages(self) -> dict[str, dict[str, str]]:
        """Each event's message (or exception value) and its tags."""
        found = {}
        for event in self.events:
            logentry = event.get("logentry") or {}
            text = event.get("message") or logentry.get("formatted")
            if not text and logentry:  # sentry-sdk 2 sends the format and its arguments
                text = logentry["message"] % tuple(logentry.get("params") or ())
            if not text:
                text = event["exception"]["values"][-1]["value"]
            found[text] = event.get("tags", {})
        return found


@contextmanager
def sentry(
    *integrations: Integration, event_level: int | None = logging.ERROR
) -> Iterator[MemoryTransport]:
    """A Sentry client with the named integrations, logging as docs/jobs.md sets it up, dedupe.

    ``event_level=logging.ERROR`` is sentry-sdk 2's default and what sentry-sdk 3 needs to be
    told; ``None`` is sentry-sdk 3's default (log lines become no events).
    """
    transport = MemoryTransport()
    sentry_sdk.init(
        transport=transport,
        integrations=[
            LoggingIntegration(event_level=event_level),
            DedupeIntegration(),
            *integrations,
        ],
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN, no transport: an inactive client for the tests that follow


@pytest.fixture(params=["without AioHttpIntegration", "with AioHttpIntegration"])
def integrations(request: pytest.FixtureRequest) -> list[Integration]:
    """aioreqctx's integration, and Sentry's aiohttp one or not."""
    extra = [AioHttpIntegration()] if request.param.startswith("with ") else []
    return [AioreqctxIntegration(), *extra]


@pytest.fixture
def transport(integrations: list[Integration]) -> Iterator[MemoryTransport]:
    with sentry(*integrations) as transport:
        yield transport


def report_from_everywhere(tag: str) -> None:
    """Events captured in the handler, a child task, an executor thread and by a log line."""
    sentry_sdk.capture_message(f"handler {tag}")
    app_logger.error("logged %s", tag)


async def everywhere(request: web.Request) -> web.Response:
    tag = request.query["tag"]
    report_from_everywhere(tag)
    await asyncio.create_task(asyncio.to_thread(sentry_sdk.capture_message, f"thread {tag}"))
    await context.run_in_executor(None, sentry_sdk.capture_message, f"executor {tag}")

    async def child() -> None:
        await asyncio.sleep(0.001)
        sentry_sdk.capture_message(f"task {tag}")

    await asyncio.create_task(child())
    return web.Response(text="ok")


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError(f"crash {request.query['tag']}")


def reporting_app() -> web.Application:
    app = web.Application()
    context.setup(app, observers=(UnhandledErrorReporter(),))
    app.router.add_get("/everywhere", everywhere)
    app.router.add_get("/crash", crash)
    return app


async def get_ids(path: str, count: int) -> list[str]:
    """``count`` concurrent GETs of ``path?tag=<n>``; the request ID each response carries."""
    async with serving(reporting_app()) as port, ClientSession() as client:

        async def one(tag: int) -> str:
            async with client.get(f"http://127.0.0.1:{port}{path}?tag={tag}") as response:
                await response.read()
                return response.headers["X-Request-ID"]

        return list(await asyncio.gather(*(one(tag) for tag in range(count))))


def test_every_event_of_a_request_carries_its_id_and_no_other(
    transport: MemoryTransport, loop_factory: LoopFactory
) -> None:
    count = 40
    ids = run(loop_factory, lambda: get_ids("/everywhere", count))
    sentry_sdk.capture_message("after the requests")  # outside any request: no tag may leak here
    report_from_everywhere("outside")
    messages = transport.messages()
    for tag, request_id in enumerate(ids):
        for where in ("handler", "thread", "executor", "task"):
            assert messages[f"{where} {tag}"].get("request_id") == request_id, (where, tag)
        assert messages[f"logged {tag}"].get("request_id") == request_id
    assert len(set(ids)) == count
    for text in ("after the requests", "handler outside", "logged outside"):
        assert "request_id" not in messages[text]
    assert len(transport.events) == count * 5 + 3


@pytest.mark.parametrize("event_level", [logging.ERROR, None], ids=["log events", "no log events"])
def test_unhandled_errors_are_reported_once_with_the_request_id(
    integrations: list[Integration], event_level: int | None, loop_factory: LoopFactory
) -> None:
    with sentry(*integrations, event_level=event_level) as transport:
        ids = run(loop_factory, lambda: get_ids("/crash", 5))
    crashes = [event for event in transport.events if "exception" in event]
    assert len(crashes) == 5
    by_value = {event["exception"]["values"][-1]["value"]: event for event in crashes}
    # Sentry's logging integration reports the line aiohttp.server logs, unless it makes no events
    # or AioHttpIntegration (here or in an earlier test: Sentry's set-up is once per process)
    # silenced that logger; the reporter's copy is then the one, marked unhandled.
    reporter_only = event_level is None or any(
        isinstance(integration, AioHttpIntegration) for integration in integrations
    )
    for tag, request_id in enumerate(ids):
        event = by_value[f"crash {tag}"]
        assert event["tags"]["request_id"] == request_id
        raised = event["exception"]["values"][-1]
        assert raised["type"] == "RuntimeError"
        if reporter_only or event.get("logger") is None:
            assert "logger" not in event
            assert raised["mechanism"]["type"] == "aiohttp"
            assert raised["mechanism"]["handled"] is False


def test_events_of_a_job_carry_its_id_and_the_request_id(
    transport: MemoryTransport, loop_factory: LoopFactory
) -> None:
    broker = InMemoryBroker().with_middlewares(JobContextMiddleware())

    async def failing_job(tag: str) -> None:
        sentry_sdk.capture_message(f"job {tag}")
        raise RuntimeError(f"job crash {tag}")  # taskiq logs it: Sentry's logging integration

    job = broker.register_task(failing_job, "failing_job")
    task_ids: dict[str, str] = {}

    async def kick(request: web.Request) -> web.Response:
        tag = request.query["tag"]
        task_ids[tag] = (await job.kiq(tag)).task_id
        return web.Response(text="ok")

    async def main() -> list[str]:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/kick", kick)
        await broker.startup()
        async with serving(app) as port, ClientSession() as client:
            ids = []
            for tag in range(3):
                async with client.get(f"http://127.0.0.1:{port}/kick?tag={tag}") as response:
                    ids.append(response.headers["X-Request-ID"])
        await broker.wait_all()
        await broker.shutdown()
        return ids

    ids = run(loop_factory, main)
    messages = transport.messages()
    for tag, request_id in enumerate(ids):
        expected = {"request_id": request_id, "job_id": task_ids[str(tag)]}
        assert messages[f"job {tag}"] == expected
        crash = next(
            e
            for e in transport.events
            if e.get("logger") == "taskiq.receiver.receiver"
            and e["exception"]["values"][-1]["value"] == f"job crash {tag}"
        )
        assert crash["tags"] == expected


def test_job_failed_reaches_sentry_with_the_ids(transport: MemoryTransport) -> None:
    jobs = context.JobPropagation(events=context.JobEvents())
    with (
        pytest.raises(RuntimeError),
        jobs.job_scope({"aioreqctx.request_id": "req-9"}, job_id="job-9", job_name="refund"),
    ):
        raise RuntimeError("card expired")
    ((line, tags),) = transport.messages().items()
    assert line.startswith("job_failed request_id=req-9 job_name=refund job_id=job-9 ")
    assert tags == {"request_id": "req-9", "job_id": "job-9"}
    (event,) = transport.events
    assert event["logger"] == "aioreqctx.jobs"
    assert event["exception"]["values"][-1]["value"] == "card expired"


def test_a_tag_the_application_set_wins(transport: MemoryTransport) -> None:
    async def main() -> None:
        with sentry_sdk.new_scope() as scope, context.scope({context.REQUEST_ID: "ours"}):
            scope.set_tag("request_id", "theirs")
            sentry_sdk.capture_message("explicit")
        async with context.scope({context.REQUEST_ID: "ours"}):
            sentry_sdk.capture_message("implicit")

    asyncio.run(main())
    assert transport.messages()["explicit"]["request_id"] == "theirs"
    assert transport.messages()["implicit"]["request_id"] == "ours"


def test_a_client_without_the_integration_adds_nothing() -> None:
    with sentry(AioreqctxIntegration()):  # installs the processor for the process
        pass
    with sentry() as transport, context.scope({context.REQUEST_ID: "quiet"}):  # did not ask
        sentry_sdk.capture_message("plain")
    assert "request_id" not in transport.messages()["plain"]


@pytest.mark.parametrize("option", ["request_id_tag", "job_id_tag"])
@pytest.mark.parametrize("bad", ["", "has space", "x" * 33, 7])
def test_a_bad_tag_name_is_refused_naming_the_option(option: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=option):
        AioreqctxIntegration(**{option: bad})
