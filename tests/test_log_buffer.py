"""Per-request log buffering: a request's DEBUG lines appear only when that request fails."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

import aioreqctx
from aioreqctx.log import LogBuffer, buffering_bound_logger, filter_by_level_or_buffer
from aioreqctx.log.buffer import active_lines, buffering, install_stdlib_hook

from .conftest import LoopFactory, run
from .support.http_helpers import serving
from .support.log_capture import ListHandler, attached

REQUESTS = 1000
KINDS = ("status_500", "raises", "error_line", "slow")  # every 100th request fails, by turns
SLOW_MS = 1000.0  # far above a normal request here, even on a loaded machine

log = logging.getLogger("tests.buffer")
ORIGINAL_ENABLED = logging.Logger.isEnabledFor


def kind_of(number: int) -> str:
    """Request ``number``'s way of failing, or "ok": 1% of the requests fail in each way."""
    if number % 25 != 0:
        return "ok"
    return KINDS[(number // 25) % len(KINDS)]


@contextmanager
def stdlib_at_info() -> Iterator[ListHandler]:
    """``tests.buffer`` at INFO (its handler at NOTSET), stamping each line's request_id."""
    handler = ListHandler("%(levelname)s %(request_id)s %(message)s")
    handler.addFilter(aioreqctx.RequestContextFilter())
    with attached(log.name, handler, logging.INFO):
        yield handler


@contextmanager
def structlog_at_info() -> Iterator[io.StringIO]:
    """structlog's documented JSON set-up, with the buffering wrapper at INFO."""
    stream = io.StringIO()
    structlog.configure(
        processors=[
            aioreqctx.add_request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=buffering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(stream),
    )
    try:
        yield stream
    finally:
        structlog.reset_defaults()


def build_app(
    debug: Callable[[str], None], info: Callable[[str], None], error: Callable[[str], None]
) -> web.Application:
    """Each request writes DEBUG lines from its handler, a child task and an executor thread."""

    async def handle(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        debug("a: in the handler")

        async def child() -> None:
            debug("b: in a child task")

        await asyncio.create_task(child())
        await aioreqctx.run_in_executor(None, debug, "c: in an executor thread")
        info("handled")
        if kind == "status_500":
            return web.Response(status=503)
        if kind == "raises":
            raise RuntimeError("boom")
        if kind == "error_line":
            error("something went wrong")
        if kind == "slow":
            await asyncio.sleep(SLOW_MS * 1.2 / 1000)
        debug("d: after")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{kind}", handle)
    aioreqctx.setup(app, log_buffer=LogBuffer(slow_ms=SLOW_MS))
    return app


async def fire(port: int) -> dict[str, str]:
    """Every request, 50 at a time; the ID each was sent with -> how it fails."""
    kinds = {f"req-{number:04d}": kind_of(number) for number in range(REQUESTS)}
    gate = asyncio.Semaphore(50)
    async with aiohttp.ClientSession() as session:

        async def one(request_id: str, kind: str) -> None:
            async with (
                gate,
                session.get(
                    f"http://127.0.0.1:{port}/{kind}", headers={"X-Request-ID": request_id}
                ) as response,
            ):
                await response.read()
                assert (response.status >= 500) == (kind in ("status_500", "raises"))

        await asyncio.gather(*(one(request_id, kind) for request_id, kind in kinds.items()))
    return kinds


EXPECTED = {
    "status_500": ["a: in the handler", "b: in a child task", "c: in an executor thread"],
    "raises": ["a: in the handler", "b: in a child task", "c: in an executor thread"],
    "error_line": [
        "a: in the handler",
        "b: in a child task",
        "c: in an executor thread",
        "d: after",
    ],
    "slow": ["a: in the handler", "b: in a child task", "c: in an executor thread", "d: after"],
    "ok": [],
}


def test_only_the_failing_requests_debug_lines_appear_stdlib(loop_factory: LoopFactory) -> None:
    async def main() -> None:
        app = build_app(log.debug, log.info, log.error)
        async with serving(app) as port:
            kinds = await fire(port)
        debug: dict[str, list[logging.LogRecord]] = {}
        for record in handler.records:
            if record.levelno == logging.DEBUG:
                debug.setdefault(record.request_id, []).append(record)  # type: ignore[attr-defined]
        for request_id, kind in kinds.items():
            records = debug.get(request_id, [])
            assert [record.getMessage() for record in records] == EXPECTED[kind], request_id
            assert all(record.buffered for record in records)  # type: ignore[attr-defined]
            created = [record.created for record in records]
            assert created == sorted(created)
            if kind == "slow":  # written at the end, stamped when logged
                assert created[-1] - created[0] >= SLOW_MS / 1000
        failing_ids = {rid for rid, kind in kinds.items() if kind != "ok"}
        assert set(debug) == failing_ids
        assert len(failing_ids) == 40
        infos = [record for record in handler.records if record.getMessage() == "handled"]
        assert len(infos) == REQUESTS
        assert not any(hasattr(record, "buffered") for record in infos)
        # the ERROR line comes after the lines the request kept before it
        for request_id in (rid for rid, kind in kinds.items() if kind == "error_line"):
            lines = [r.getMessage() for r in handler.records if r.request_id == request_id]  # type: ignore[attr-defined]
            assert lines.index("c: in an executor thread") < lines.index("something went wrong")
            assert lines.index("something went wrong") < lines.index("d: after")

    with stdlib_at_info() as handler:
        run(loop_factory, main)
    assert logging.Logger.isEnabledFor is ORIGINAL_ENABLED  # undone when the app stopped


def test_only_the_failing_requests_debug_lines_appear_structlog(loop_factory: LoopFactory) -> None:
    slog = structlog.get_logger("tests.buffer")

    def debug(message: str) -> None:
        slog.debug(message)

    def info(message: str) -> None:
        slog.info(message)

    def error(message: str) -> None:
        slog.error(message)

    async def main() -> None:
        async with serving(build_app(debug, info, error)) as port:
            kinds = await fire(port)
        events = [json.loads(line) for line in stream.getvalue().splitlines()]
        debug_lines: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            if event["level"] == "debug":
                debug_lines.setdefault(event["request_id"], []).append(event)
        for request_id, kind in kinds.items():
            lines = debug_lines.get(request_id, [])
            assert [line["event"] for line in lines] == EXPECTED[kind], request_id
            assert all(line["buffered"] is True for line in lines)
            stamps = [line["timestamp"] for line in lines]
            assert stamps == sorted(stamps)
            if kind == "slow":
                assert stamps[-1] - stamps[0] >= SLOW_MS / 1000
        assert set(debug_lines) == {rid for rid, kind in kinds.items() if kind != "ok"}
        assert sum(event["event"] == "handled" for event in events) == REQUESTS

    with structlog_at_info() as stream:
        run(loop_factory, main)


def test_a_flood_of_debug_lines_keeps_memory_flat_and_is_reported_once() -> None:
    lines_logged = 1_000_000
    growth: list[int] = []

    async def flood(request: web.Request) -> web.Response:
        before = rss_bytes()
        for number in range(lines_logged):
            log.debug("line %d of a flood, with some text to make it weigh", number)
        growth.append(rss_bytes() - before)
        raise RuntimeError("the flood ends badly")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/", flood)
        buffer = LogBuffer(max_lines=500)
        aioreqctx.setup(app, log_buffer=buffer)
        async with (
            serving(app) as port,
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert response.status == 500
        assert buffer.dropped_lines == lines_logged - 500
        assert buffer.bytes_held == 0

    with stdlib_at_info() as handler, attached("aioreqctx", reported := ListHandler()):
        asyncio.run(main())
    assert growth[0] < 20 * 1024 * 1024
    reports = [line for line in reported.lines if "buffered lines dropped" in line]
    assert reports == [
        f"{lines_logged - 500} buffered lines dropped (LogBuffer max_lines=500, "
        "max_bytes_total=16777216)"
    ]
    flushed = [record.getMessage() for record in handler.records if record.levelno == logging.DEBUG]
    assert len(flushed) == 500
    assert flushed[-1].startswith("line 499 ")  # the first lines are kept


def rss_bytes() -> int:
    """The process's resident memory now (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def test_the_process_wide_byte_budget_is_shared_between_requests() -> None:
    config = LogBuffer(max_bytes_total=10_000)
    first, second = config.open(), config.open()
    uninstall = install_stdlib_hook()
    try:
        with stdlib_at_info(), buffering(first):
            for number in range(50):
                log.debug("first %d", number)
            held_by_first = config.bytes_held
            with buffering(second):  # the budget is full: second's line is never built
                log.debug("second")
                assert second.dropped == 1
    finally:
        uninstall()
    assert 9_000 < held_by_first <= 10_000
    assert first.dropped > 0
    assert config.dropped_lines == first.dropped + 1
    assert config.bytes_held == 0  # both closed, nothing written


def test_a_job_keeps_its_debug_lines_until_it_fails() -> None:
    propagation = aioreqctx.propagation.JobPropagation(log_buffer=LogBuffer())
    with stdlib_at_info() as handler:
        with propagation.job_scope({}, job_id="ok-1", job_name="tidy"):
            log.debug("tidying quietly")
        with (
            suppress(LookupError),
            propagation.job_scope({}, job_id="bad-1", job_name="tidy"),
        ):
            log.debug("about to fail")
            raise LookupError
    assert [record.getMessage() for record in handler.records] == ["about to fail"]
    assert handler.records[0].buffered  # type: ignore[attr-defined]


def test_structlog_through_stdlib_keeps_lines_until_the_block_fails() -> None:
    """The documented stdlib bridge, with filter_by_level_or_buffer for filter_by_level."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ]
        )
    )
    structlog.configure(
        processors=[
            filter_by_level_or_buffer,
            aioreqctx.add_request_context,
            structlog.stdlib.add_log_level,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    slog = structlog.get_logger("tests.buffer")
    try:
        with aioreqctx.scope({aioreqctx.REQUEST_ID: "quiet"}), buffering(LogBuffer().open()):
            slog.debug("never shown")
        with (
            suppress(LookupError),
            aioreqctx.scope({aioreqctx.REQUEST_ID: "loud"}),
            buffering(LogBuffer().open()),
        ):
            slog.debug("shown", step=1)
            raise LookupError
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == [
        {"step": 1, "event": "shown", "request_id": "loud", "level": "debug", "buffered": True}
    ]


def test_no_debug_record_is_built_outside_a_buffering_request_or_below_its_level() -> None:
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(counting)
    uninstall = install_stdlib_hook()
    try:
        with stdlib_at_info():
            log.debug("outside any request")
            with buffering(LogBuffer(level=logging.WARNING).open()):
                log.debug("below the buffer's level")
    finally:
        uninstall()
        logging.setLogRecordFactory(factory)
    assert made == []
    assert active_lines.get() is None
    assert logging.Logger.isEnabledFor is ORIGINAL_ENABLED


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_lines": 0}, "max_lines must be a positive int"),
        ({"max_bytes_total": "1MB"}, "max_bytes_total must be a positive int"),
        ({"slow_ms": -1}, "slow_ms must be a positive number or None"),
    ],
)
def test_a_bad_log_buffer_option_is_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogBuffer(**options)


def test_setup_refuses_a_log_buffer_that_is_not_one() -> None:
    wrong: Any = {"level": 10}
    with pytest.raises(TypeError, match=r"log_buffer must be an aioreqctx\.log\.LogBuffer"):
        aioreqctx.setup(web.Application(), log_buffer=wrong)
