"""unit_of_work() gives jobs an ID, timing and events, nests, and restores what was before."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog

import aioreqctx as context
from aioreqctx import keys

from .conftest import LoopFactory, run
from .log_capture import capture


def test_jobs_nest_and_restore_the_previous_context(loop_factory: LoopFactory) -> None:
    seen: list[object] = []

    async def main() -> None:
        context.set("outside", "kept")
        async with context.unit_of_work("outer-1", name="import") as outer:
            seen.append(context.get(context.REQUEST_ID))
            assert context.get("outside") is None  # a fresh context, not the caller's
            async with context.unit_of_work() as inner:
                seen.append(context.get(context.REQUEST_ID))
                seen.append(await asyncio.create_task(child()))
                assert inner.request_id != outer.request_id
            seen.append(context.get(context.REQUEST_ID))
        seen.append(context.get(context.REQUEST_ID))
        seen.append(context.get("outside"))

    async def child() -> str | None:
        current = context.RequestContext.current()
        return None if current is None else current.request_id

    run(loop_factory, main)
    outer_id, inner_id, child_id, back, after, outside = seen
    assert outer_id == back == "outer-1"
    assert inner_id == child_id
    assert isinstance(inner_id, str)
    assert len(inner_id) == 36
    assert after is None
    assert outside == "kept"


def test_start_success_and_error_are_logged_with_timing() -> None:
    with capture("aioreqctx.requests") as captured:
        with context.unit_of_work("job-1", name="nightly", metadata={"batch": 7}) as job:
            assert job.metadata == {"batch": 7}
            assert context.get(keys.START_TIME) is not None
        with (
            pytest.raises(ValueError, match="bad row"),
            context.unit_of_work("job-2", name="nightly"),
        ):
            raise ValueError("bad row\nFAKE: line")
    assert captured.events() == [
        "request_start",
        "request_success",
        "request_start",
        "request_error",
    ]
    start, _ = captured.fields("request_start")
    assert start["request_id"] == "job-1"
    assert start["name"] == "nightly"
    assert start["batch"] == 7
    success, error = captured.fields("request_success") + captured.fields("request_error")
    assert isinstance(success["duration_ms"], float)
    assert error["request_id"] == "job-2"
    assert error["error"] == "ValueError"
    assert "exc_info" not in error
    assert captured.records[-1].levelno == logging.ERROR
    assert captured.records[-1].exc_info is not None
    assert "\n" not in captured.records[-1].getMessage()  # the message is escaped on its line
    assert 'error_message="bad row\\nFAKE: line"' in captured.text()
    assert "Traceback" in captured.text()


def test_a_cancelled_job_is_logged_without_a_traceback(loop_factory: LoopFactory) -> None:
    async def job(started: asyncio.Event) -> None:
        async with context.unit_of_work("job-c"):
            started.set()
            await asyncio.sleep(30)

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(job(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture("aioreqctx.requests") as captured:
        run(loop_factory, main)
    (error,) = captured.fields("request_error")
    assert error["error"] == "CancelledError"
    assert captured.records[-1].levelno == logging.WARNING
    assert captured.records[-1].exc_info is None


def test_an_invalid_id_is_replaced_and_kept_escaped() -> None:
    with (
        capture("aioreqctx") as warnings,
        context.unit_of_work("bad id\r\nX: y") as job,
    ):
        assert job.request_id is not None
        assert len(job.request_id) == 36
        assert context.get(keys.REJECTED_REQUEST_ID) == "bad id\\r\\nX: y"
    assert "invalid request_id" in warnings.text()
    assert "\r" not in warnings.text()


def test_a_job_is_in_the_registry_while_it_runs() -> None:
    registry = context.InFlightRegistry()
    with context.unit_of_work("job-r", name="reindex", registry=registry):
        with context.timed_operation("scan"):
            (entry,) = registry.entries()
            assert (entry.request_id, entry.method, entry.path) == ("job-r", None, "reindex")
            assert entry.current_operation() == "scan"
        assert entry.current_operation() is None
    assert registry.count() == 0


def test_a_structlog_logger_gets_the_events() -> None:
    with (
        structlog.testing.capture_logs() as logs,
        context.unit_of_work("job-s", logger=structlog.get_logger()),
    ):
        pass
    assert [(log["event"], log["request_id"]) for log in logs] == [
        ("request_start", "job-s"),
        ("request_success", "job-s"),
    ]


def test_one_object_opens_once() -> None:
    job = context.unit_of_work()
    with job, pytest.raises(RuntimeError, match="already open"):
        job.__enter__()
