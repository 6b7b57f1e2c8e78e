"""JobPropagation: what an enqueued job carries, and the fresh context a worker runs it in."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
import structlog
from multidict import CIMultiDict

import aioreqctx as context
from aioreqctx import keys
from aioreqctx._core.deadline import DEADLINE_HEADER, parse_deadline
from aioreqctx.propagation.jobs import (
    CARRIED_CONTEXT_PREFIX,
    CARRIED_DEADLINE,
    CARRIED_PARENT_JOB_ID,
    CARRIED_REQUEST_ID,
    JobEvents,
    JobPropagation,
)

from .conftest import LoopFactory, run
from .log_capture import ListHandler, attached, capture

PROPAGATION = JobPropagation(context_keys=("tenant",), carry_deadline=True)


def test_a_job_enqueued_in_a_request_carries_its_id_deadline_and_context_keys() -> None:
    with context.scope({keys.REQUEST_ID: "req-1", "tenant": "acme", "other": "x"}) as mapping:
        mapping[keys.DEADLINE] = time.monotonic() + 30
        carried = PROPAGATION.carrier()
    assert carried[CARRIED_REQUEST_ID] == "req-1"
    assert carried[CARRIED_CONTEXT_PREFIX + "tenant"] == "acme"
    assert set(carried) == {CARRIED_REQUEST_ID, CARRIED_CONTEXT_PREFIX + "tenant", CARRIED_DEADLINE}
    assert all(isinstance(value, str) for value in carried.values())
    with PROPAGATION.job_scope(carried, job_id="j1", job_name="send"):
        left = context.remaining_time()
        assert left is not None
        assert 28 < left <= 30
        assert context.get("tenant") == "acme"
        assert context.get("other") is None  # only configured keys travel


def test_outside_a_request_a_job_carries_nothing_or_a_new_id() -> None:
    assert PROPAGATION.carrier() == {}
    with context.scope({"unrelated": 1}):
        assert PROPAGATION.carrier() == {}
    generated = JobPropagation(outside_request="generate", generator=lambda: "made-1").carrier()
    assert generated == {CARRIED_REQUEST_ID: "made-1"}
    with capture("aioreqctx") as warnings, PROPAGATION.job_scope({}, job_id="c", job_name="cron"):
        assert len(context.get(keys.REQUEST_ID)) == 36  # a job that carried nothing: a new ID
    assert warnings.records == []  # and no warning: nothing was wrong


def test_a_job_runs_in_a_fresh_context_from_a_worker_thread_and_its_tasks() -> None:
    seen: dict[str, Any] = {}

    def worker_thread() -> None:
        with context.scope({keys.REQUEST_ID: "worker-own", "leak": "no"}):
            with PROPAGATION.job_scope(
                {CARRIED_REQUEST_ID: "req-t", CARRIED_PARENT_JOB_ID: "p-1"},
                job_id="j-t",
                job_name="resize",
                attempt=2,
            ):
                seen["in_job"] = {
                    name: context.get(key)
                    for name, key in {
                        "id": keys.REQUEST_ID,
                        "job": keys.JOB_ID,
                        "name": keys.JOB_NAME,
                        "attempt": keys.JOB_ATTEMPT,
                        "parent": keys.PARENT_JOB_ID,
                        "leak": "leak",
                    }.items()
                }
                seen["nested_enqueue"] = PROPAGATION.carrier()
                seen["task"] = asyncio.run(task_sees())
            seen["after"] = context.get(keys.REQUEST_ID)

    async def task_sees() -> object:
        return await asyncio.create_task(asyncio.sleep(0, context.get(keys.REQUEST_ID)))

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(10)
    assert seen["in_job"] == {
        "id": "req-t",
        "job": "j-t",
        "name": "resize",
        "attempt": 2,
        "parent": "p-1",
        "leak": None,
    }
    assert seen["nested_enqueue"] == {CARRIED_REQUEST_ID: "req-t", CARRIED_PARENT_JOB_ID: "j-t"}
    assert seen["task"] == "req-t"
    assert seen["after"] == "worker-own"


def test_concurrent_jobs_on_one_loop_never_see_each_other(loop_factory: LoopFactory) -> None:
    async def job(n: int) -> tuple[str, object]:
        async with PROPAGATION.job_scope(
            {CARRIED_REQUEST_ID: f"req-{n}"}, job_id=f"job-{n}", job_name="j"
        ):
            await asyncio.sleep(0.001 * (n % 5))
            return context.get(keys.REQUEST_ID), context.get(keys.JOB_ID)

    async def main() -> list[tuple[str, object]]:
        return await asyncio.gather(*(asyncio.create_task(job(n)) for n in range(100)))

    results = run(loop_factory, main)
    assert results == [(f"req-{n}", f"job-{n}") for n in range(100)]


@pytest.mark.parametrize(
    "carried",
    [
        {CARRIED_REQUEST_ID: "bad\r\nFAKE: injected"},
        {CARRIED_REQUEST_ID: "x" * 10_000},
        {CARRIED_REQUEST_ID: "caf\u00e9"},
        {CARRIED_REQUEST_ID: 12345},
        {CARRIED_PARENT_JOB_ID: "p-1"},  # an aioreqctx carrier without its ID
        "not a mapping\n",
    ],
    ids=["crlf", "10kb", "non-ascii", "number", "missing", "not-a-mapping"],
)
def test_invalid_carried_ids_give_a_new_id_and_one_escaped_warning(carried: object) -> None:
    handler = ListHandler("%(levelname)s %(request_id)s %(message)s")
    handler.addFilter(context.RequestContextFilter())
    with attached("aioreqctx", handler), PROPAGATION.job_scope(carried, job_id="j", job_name="n"):
        new_id = context.get(keys.REQUEST_ID)
    assert context.is_valid_request_id(new_id)
    assert len(new_id) == 36
    (line,) = handler.lines
    assert line.startswith(f"WARNING {new_id} job n (id j): invalid carried ")
    assert "\r" not in line
    assert "\n" not in line
    assert len(line) < 400


def test_invalid_extras_are_dropped_in_the_same_single_warning() -> None:
    carried = {
        CARRIED_REQUEST_ID: "ok-1",
        CARRIED_PARENT_JOB_ID: "bad parent\n",
        CARRIED_DEADLINE: "tomorrow",
        CARRIED_CONTEXT_PREFIX + "tenant": "a\x1b[31m",
    }
    with capture("aioreqctx") as warnings, PROPAGATION.job_scope(carried, job_id=7, job_name="n"):
        assert context.get(keys.REQUEST_ID) == "ok-1"
        assert context.get(keys.PARENT_JOB_ID) is None
        assert context.remaining_time() is None
        assert context.get("tenant") is None
        assert context.get(keys.JOB_ID) == "7"
    (record,) = warnings.records
    message = record.getMessage()
    for what in ("parent job ID", "deadline", "context key tenant"):
        assert what in message
    assert "\x1b" not in message
    assert "\n" not in message


def test_log_lines_in_a_job_carry_the_job_fields_stdlib_and_structlog() -> None:
    handler = ListHandler("%(request_id)s %(job_id)s %(job_name)s %(job_attempt)s %(message)s")
    handler.addFilter(context.RequestContextFilter())
    with (
        attached("app", handler) as app_logger,
        structlog.testing.capture_logs(processors=[context.add_request_context]) as logs,
        PROPAGATION.job_scope({CARRIED_REQUEST_ID: "req-l"}, job_id="j-l", job_name="mail"),
    ):
        app_logger.info("sending")
        structlog.get_logger().info("sent")
    assert handler.lines == ["req-l j-l mail 1 sending"]
    (event,) = logs
    assert (event["request_id"], event["job_id"], event["job_name"], event["job_attempt"]) == (
        "req-l",
        "j-l",
        "mail",
        1,
    )


def test_job_events_log_start_and_end_by_outcome() -> None:
    class RetryError(Exception):
        pass

    propagation = JobPropagation(events=JobEvents())
    carried = {CARRIED_REQUEST_ID: "req-e"}
    with capture("aioreqctx.jobs") as captured:
        with propagation.job_scope(carried, job_id="1", job_name="ok"):
            pass
        with (
            pytest.raises(ValueError, match="boom"),
            propagation.job_scope(carried, job_id="2", job_name="bad"),
        ):
            raise ValueError("boom")
        with (
            pytest.raises(RetryError),
            propagation.job_scope(carried, job_id="3", job_name="again", retrying=(RetryError,)),
        ):
            raise RetryError
    assert captured.events() == [
        "job_started",
        "job_finished",
        "job_started",
        "job_failed",
        "job_started",
        "job_failed",
    ]
    levels = [record.levelno for record in captured.records]
    assert levels == [logging.INFO] * 3 + [logging.ERROR, logging.INFO, logging.WARNING]
    finished, failed, retried = captured.fields("job_finished") + captured.fields("job_failed")
    assert finished["outcome"] == "success"
    assert finished["request_id"] == "req-e"
    assert finished["job_name"] == "ok"
    assert finished["attempt"] == 1
    assert isinstance(finished["duration_ms"], float)
    assert (failed["outcome"], failed["error"]) == ("error", "ValueError")
    assert captured.records[3].exc_info is not None
    assert (retried["outcome"], retried["error"]) == ("retry", "RetryError")
    assert captured.records[5].exc_info is None


def test_a_cancelled_job_fails_at_warning(loop_factory: LoopFactory) -> None:
    propagation = JobPropagation(events=JobEvents())

    async def main() -> None:
        started = asyncio.Event()

        async def job() -> None:
            async with propagation.job_scope({}, job_id="c", job_name="slow"):
                started.set()
                await asyncio.sleep(30)

        task = asyncio.create_task(job())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture("aioreqctx.jobs") as captured:
        run(loop_factory, main)
    (failed,) = captured.fields("job_failed")
    assert failed["outcome"] == "cancelled"
    assert captured.records[-1].levelno == logging.WARNING


def test_the_registry_lists_running_jobs() -> None:
    registry = context.InFlightRegistry()
    propagation = JobPropagation(registry=registry)
    with propagation.job_scope({CARRIED_REQUEST_ID: "req-r"}, job_id="j", job_name="reindex"):
        (entry,) = registry.entries()
        assert (entry.request_id, entry.method, entry.path) == ("req-r", "JOB", "reindex")
    assert registry.count() == 0


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"context_keys": "tenant"}, "context_keys"),
        ({"context_keys": ("",)}, "context_keys"),
        ({"outside_request": "always"}, "outside_request"),
        ({"generator": "uuid"}, "generator"),
        ({"validator": None}, "validator"),
        ({"events": True}, "events"),
        ({"registry": {}}, "registry"),
    ],
)
def test_misconfiguration_is_refused_naming_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises((TypeError, ValueError), match=named):
        JobPropagation(**options)
    with pytest.raises(TypeError, match="retry_level"):
        JobEvents(retry_level="WARNING")  # type: ignore[arg-type]


def test_one_scope_opens_once() -> None:
    job = PROPAGATION.job_scope({}, job_id="1", job_name="n")
    with job, pytest.raises(RuntimeError, match="already open"):
        job.__enter__()


def test_job_events_below_the_loggers_level_are_not_written() -> None:
    propagation = JobPropagation(events=JobEvents())
    with capture("aioreqctx.jobs", logging.WARNING) as captured:
        with propagation.job_scope({}, job_id="1", job_name="quiet"):
            pass
        with pytest.raises(KeyError), propagation.job_scope({}, job_id="2", job_name="loud"):
            raise KeyError("missing")
    assert captured.events() == ["job_failed"]
    assert captured.fields("job_failed")[0]["job_name"] == "loud"


def test_a_job_carries_no_deadline_unless_asked_and_never_runs_under_one() -> None:
    """Off by default: a job run after its request's deadline must still make outgoing calls."""
    propagation = JobPropagation()
    with context.scope({keys.REQUEST_ID: "req-d", keys.DEADLINE: time.monotonic() + 0.001}):
        carried = propagation.carrier()
    assert set(carried) == {CARRIED_REQUEST_ID}
    past = {**carried, CARRIED_DEADLINE: "2001-01-01T00:00:00.000Z"}  # from an older enqueuer
    with propagation.job_scope(past, job_id="late", job_name="mail"):
        assert context.remaining_time() is None
        headers: CIMultiDict[str] = CIMultiDict()
        assert context.ClientPropagation().label(headers) is None  # not refused
        assert dict(headers) == {keys.REQUEST_ID: "req-d"}


def test_a_carried_deadline_is_capped_on_both_sides_and_never_crashes() -> None:
    propagation = JobPropagation(carry_deadline=True, max_budget=60)
    far = {keys.REQUEST_ID: "req-far", keys.DEADLINE: time.monotonic() + 1e12}
    with context.scope(far):
        carried = propagation.carrier()  # a deadline past year 9999: capped, no ValueError
        assert context.ClientPropagation().label(CIMultiDict()) is not None
    left = parse_deadline(carried[CARRIED_DEADLINE])
    assert left is not None
    assert 55 < left <= 60
    forged = {CARRIED_REQUEST_ID: "req-far", CARRIED_DEADLINE: "9999-12-31T23:59:59.999Z"}
    with propagation.job_scope(forged, job_id="j", job_name="n"):
        remaining = context.remaining_time()
        assert remaining is not None
        assert 55 < remaining <= 60  # the worker caps what the queue says
        again = propagation.carrier()
        headers: CIMultiDict[str] = CIMultiDict()
        assert context.ClientPropagation().label(headers) is not None
    assert set(again) == {CARRIED_REQUEST_ID, CARRIED_PARENT_JOB_ID, CARRIED_DEADLINE}
    assert headers[DEADLINE_HEADER].endswith("Z")


@pytest.mark.parametrize(
    ("options", "named"),
    [({"carry_deadline": "yes"}, "carry_deadline"), ({"max_budget": 0}, "max_budget")],
)
def test_deadline_options_are_checked(options: dict[str, Any], named: str) -> None:
    with pytest.raises((TypeError, ValueError), match=named):
        JobPropagation(**options)


def test_a_job_that_clears_its_context_still_ends_with_its_own_id_and_duration() -> None:
    propagation = JobPropagation(events=JobEvents())
    with (
        capture("aioreqctx.jobs") as captured,
        propagation.job_scope({CARRIED_REQUEST_ID: "req-c"}, job_id="1", job_name="wipe"),
    ):
        context.clear()  # aiotask-context API
    (finished,) = captured.fields("job_finished")
    assert (finished["request_id"], finished["job_id"], finished["outcome"]) == (
        "req-c",
        "1",
        "success",
    )
    assert isinstance(finished["duration_ms"], float)


class FailingSink(logging.Filter):
    """A logging filter that raises, as a buggy user filter or structlog processor does."""

    def filter(self, record: logging.LogRecord) -> bool:
        raise RuntimeError("log sink down")


@pytest.mark.parametrize("opener", ["job_scope", "unit_of_work"])
@pytest.mark.parametrize("where", ["thread", "task"])
def test_a_scope_whose_start_line_fails_reports_it_once_and_closes_when_the_report_fails(
    loop_factory: LoopFactory, opener: str, where: str
) -> None:
    registry = context.InFlightRegistry()
    propagation = JobPropagation(events=JobEvents(), registry=registry)

    def open_one() -> Any:
        if opener == "job_scope":
            return propagation.job_scope({CARRIED_REQUEST_ID: "job-req"}, job_id="j", job_name="n")
        return context.unit_of_work("job-req", registry=registry, logger="aioreqctx.jobs")

    def attempt() -> list[Any]:
        outcomes: list[Any] = []
        with context.scope({keys.REQUEST_ID: "outer"}):
            with open_one():  # the start line fails, the report goes through: the job runs
                outcomes.append(context.get(keys.REQUEST_ID))
            outcomes.append((context.get(keys.REQUEST_ID), registry.count()))
            reporter.addFilter(failing)  # now the report fails as well
            try:
                with open_one():
                    outcomes.append("ran")
            except RuntimeError as error:
                outcomes.append(str(error))
            reporter.removeFilter(failing)
            outcomes.append((context.get(keys.REQUEST_ID), registry.count()))
        return outcomes

    async def main() -> list[Any]:
        return await asyncio.to_thread(attempt) if where == "thread" else attempt()

    failing, reporter = FailingSink(), logging.getLogger("aioreqctx")
    jobs_logger = logging.getLogger("aioreqctx.jobs")
    jobs_logger.addFilter(failing)
    try:
        with capture("aioreqctx") as reports:
            outcomes = run(loop_factory, main)
    finally:
        jobs_logger.removeFilter(failing)
    assert outcomes == ["job-req", ("outer", 0), "log sink down", ("outer", 0)]
    name = "n" if opener == "job_scope" else "job"
    assert [record.getMessage() for record in reports.records] == [
        f"logging the start of {'job ' * (opener == 'job_scope')}{name} failed",
        f"logging the end of {'job ' * (opener == 'job_scope')}{name} failed",
    ]
    assert all(record.exc_info is not None for record in reports.records)
