"""Every stdlib record carries its request's ID, or the default, whichever way it was logged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
import structlog
from aiohttp import web

import aioreqctx as context
from aioreqctx import keys

from .conftest import LoopFactory, run
from .http_helpers import serving
from .log_capture import ListHandler, attached
from .waiting import until

child = logging.getLogger("tests.app.child")


def log_from_thread(message: str) -> None:
    child.info(message)


async def log_from_task() -> None:
    child.info("task")


async def work(request: web.Request) -> web.Response:
    context.set("user.id", "u-" + context.get(context.REQUEST_ID))
    child.info("handler")
    await asyncio.create_task(log_from_task())
    await context.run_in_executor(None, log_from_thread, "executor")
    with ThreadPoolExecutor(max_workers=1) as pool:
        await asyncio.wrap_future(pool.submit(context.bind_context(log_from_thread), "bound"))
    called = asyncio.get_running_loop().create_future()

    def callback() -> None:
        child.info("callback")
        called.set_result(None)

    asyncio.get_running_loop().call_soon(callback)
    await called
    return web.Response(text="ok")


def configure_app_logging() -> ListHandler:
    """The README's dictConfig: the filter on the handler, none on any logger."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "request": {
                    "()": "aioreqctx.RequestContextFilter",
                    "context_keys": {"user.id": "user_id"},
                }
            },
            "handlers": {
                "capture": {
                    "()": "tests.log_capture.ListHandler",
                    "fmt": "%(request_id)s %(user_id)s %(name)s %(message)s",
                    "filters": ["request"],
                }
            },
            "loggers": {
                "tests.app": {"handlers": ["capture"], "level": "DEBUG", "propagate": False}
            },
        }
    )
    (handler,) = logging.getLogger("tests.app").handlers
    assert isinstance(handler, ListHandler)
    return handler


def test_records_from_everywhere_carry_their_request_id(loop_factory: LoopFactory) -> None:
    handler = configure_app_logging()
    ids = [f"req-{n}" for n in range(3)]

    async def main() -> None:
        child.info("startup")
        app = web.Application()
        context.setup(app)
        app.router.add_get("/work", work)
        access = logging.getLogger("tests.app.access")
        async with (
            serving(app, access_log_class=context.AccessLogger, access_log=access) as port,
            aiohttp.ClientSession() as session,
        ):

            async def call(request_id: str) -> int:
                url = f"http://127.0.0.1:{port}/work"
                async with session.get(url, headers={"X-Request-ID": request_id}) as response:
                    return response.status

            assert await asyncio.gather(*map(call, ids)) == [200] * 3
            await until(
                lambda: sum("access" in line for line in handler.lines) == 3, "3 access lines"
            )

    try:
        run(loop_factory, main)
        worker = threading.Thread(target=log_from_thread, args=("plain thread",))
        worker.start()
        worker.join()
    finally:
        logging.getLogger("tests.app").removeHandler(handler)

    assert handler.errors == []
    lines = set(handler.lines)
    assert "- - tests.app.child startup" in lines
    assert "- - tests.app.child plain thread" in lines
    for rid in ids:
        for where in ("handler", "task", "executor", "bound", "callback"):
            assert f"{rid} u-{rid} tests.app.child {where}" in lines
        prefix = f"{rid} u-{rid} tests.app.access "
        (access_line,) = [line for line in lines if line.startswith(prefix)]
        assert f"access request_id={rid} method=GET path=/work status=200" in access_line
    assert len(handler.lines) == 2 + 6 * len(ids)


def test_fields_become_attributes_without_clobbering_the_record() -> None:
    handler = ListHandler("%(request_id)s %(message)s")
    handler.addFilter(context.RequestContextFilter())
    with attached("tests.fields", handler) as logger:
        mapping = {keys.REQUEST_ID: "R1", keys.METADATA: {"tenant": "t1", "user": "meta"}}
        with context.scope(mapping), context.log_context(user="u1", name="pushed", msg="pushed"):
            logger.info("hello %s", "world")
            logger.info("explicit", extra={"request_id": "mine", "user": "explicit"})
        with context.scope(mapping):
            logger.info("after the block")

    first, explicit, after = handler.records
    assert handler.lines[0] == "R1 hello world"
    assert (first.name, first.getMessage(), first.user, first.tenant) == (  # type: ignore[attr-defined]
        "tests.fields",
        "hello world",
        "u1",  # the pushed field wins over metadata of the same name
        "t1",
    )
    assert (explicit.request_id, explicit.user) == ("mine", "explicit")  # type: ignore[attr-defined]
    assert after.user == "meta"  # type: ignore[attr-defined]


def test_record_factory_chains_the_previous_one_and_can_be_undone() -> None:
    original = logging.getLogRecordFactory()

    def marking(*args: object, **kwargs: object) -> logging.LogRecord:
        record = original(*args, **kwargs)
        record.marker = "kept"
        return record

    logging.setLogRecordFactory(marking)
    handler = ListHandler("%(request_id)s %(user_id)s %(marker)s %(message)s")  # no filter
    try:
        uninstall = context.install_log_record_factory(context_keys={"user.id": "user_id"})
        with attached("tests.factory", handler) as logger:
            logger.info("outside")
            with context.scope({keys.REQUEST_ID: "R2", "user.id": 5}):
                logger.info("inside")
            uninstall()
            assert logging.getLogRecordFactory() is marking
            logger.info("after uninstall")
    finally:
        logging.setLogRecordFactory(original)
    assert handler.lines == ["- - kept outside", "R2 5 kept inside"]
    assert [record.msg for record in handler.errors] == ["after uninstall"]


def test_undoing_under_a_later_factory_keeps_that_factory_chained() -> None:
    original = logging.getLogRecordFactory()
    try:
        uninstall = context.install_log_record_factory(default="none")
        ours = logging.getLogRecordFactory()

        def later(*args: object, **kwargs: object) -> logging.LogRecord:
            return ours(*args, **kwargs)

        logging.setLogRecordFactory(later)
        record = later("n", logging.INFO, "f", 1, "m", None, None)
        assert record.request_id == "none"  # type: ignore[attr-defined]
        uninstall()
        assert logging.getLogRecordFactory() is later
        assert not hasattr(later("n", logging.INFO, "f", 1, "m", None, None), "request_id")
    finally:
        logging.setLogRecordFactory(original)


@pytest.mark.parametrize(
    "context_keys", [{"user.id": "user id"}, {"user.id": "request_id"}, {"user.id": 3}]
)
def test_unusable_field_names_are_refused_with_advice(context_keys: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="context_keys"):
        context.RequestContextFilter(context_keys=context_keys)  # type: ignore[arg-type]


def test_aioreqctx_events_under_every_documented_set_up_combined(loop_factory: LoopFactory) -> None:
    """Record factory, handler filter and the structlog ProcessorFormatter all at once: every
    access line, request event and text lifecycle event arrives, with its request's ID."""
    text = ListHandler("%(request_id)s %(user_id)s %(name)s %(message)s")
    text.addFilter(context.RequestContextFilter(context_keys={"user.id": "user_id"}))
    stream = io.StringIO()
    as_json = logging.StreamHandler(stream)
    as_json.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[context.add_request_context, structlog.stdlib.add_log_level],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    ids = [f"combined-{n}" for n in range(20)]

    async def handler(request: web.Request) -> web.Response:
        context.set("user.id", "u-" + context.get(context.REQUEST_ID))
        logging.getLogger("tests.combined.app").info("handled")
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        context.setup(
            app,
            request_events=context.RequestEvents(logger="tests.combined.requests"),
            collector=context.LoggingCollector(
                log_format="text", logger="tests.combined.lifecycle"
            ),
        )
        app.router.add_get("/", handler)
        access = logging.getLogger("tests.combined.access")
        async with (
            serving(app, access_log_class=context.AccessLogger, access_log=access) as port,
            aiohttp.ClientSession() as session,
        ):
            for rid in ids:
                headers = {"X-Request-ID": rid}
                async with session.get(f"http://127.0.0.1:{port}/", headers=headers) as response:
                    assert response.status == 200
            await until(
                lambda: sum(" access " in line for line in text.lines) == len(ids), "access lines"
            )

    uninstall = context.install_log_record_factory(context_keys={"user.id": "user_id"})
    try:
        with attached("tests.combined", text), attached("tests.combined", as_json):
            run(loop_factory, main)
    finally:
        uninstall()

    assert text.errors == []
    json_lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(json_lines) == len(text.lines)
    for rid in ids:
        mine = [line for line in text.lines if line.startswith(f"{rid} ")]
        for expected in (
            f"tests.combined.requests request_started request_id={rid} method=GET",
            "tests.combined.app handled",
            f"tests.combined.requests request_finished request_id={rid} method=GET",
            f"tests.combined.access access request_id={rid} method=GET path=/ status=200",
            "tests.combined.lifecycle request_started time=",
            "tests.combined.lifecycle response_completed time=",
        ):
            assert sum(expected in line for line in mine) == 1, (expected, mine)
        assert f"{rid} u-{rid} tests.combined.access " in "\n".join(mine)
        assert sum(line["request_id"] == rid for line in json_lines) == len(mine)
