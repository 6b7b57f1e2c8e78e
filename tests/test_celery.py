"""Celery: a real ``celery worker`` subprocess (pools solo, threads, prefork) on a private Redis
runs tasks published by a real aiohttp server, by other tasks, by chains and groups, and logs
under the publisher's request ID; bad carried values give a new ID and one escaped warning."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from aiohttp import ClientSession, web
from celery import chain, chord, group, states
from celery.result import AsyncResult, GroupResult
from celery.signals import after_task_publish

import aioreqctx
from aioreqctx import keys
from aioreqctx.integrations.celery import setup_celery
from aioreqctx.propagation.jobs import CARRIED_PARENT_JOB_ID, CARRIED_REQUEST_ID

from . import celery_app
from .celery_app import fail, flaky, nested, record, spawn, spawn_in_thread
from .http_helpers import serving

ROOT = Path(__file__).resolve().parent.parent
POOLS = ("solo", "threads", "prefork")
START_TIMEOUT = 60.0
RESULT_TIMEOUT = 60.0
STDLIB_LINE = re.compile(
    r"(?P<level>[A-Z]+) \[(?P<request_id>[^\]]*)\] (?P<logger>[\w.]+): (?P<message>.*)"
)


@dataclass
class Worker:
    """A running ``celery worker``: its stderr (Celery's log lines) and its stdout (structlog's
    JSON lines) captured in two files, so that lines of the two streams never interleave."""

    pool: str
    stderr: Path
    stdout: Path
    process: subprocess.Popen[bytes]

    def lines(self) -> list[str]:
        return self.stderr.read_text(errors="replace").splitlines()

    def stdlib(self, message: str, *, prefix: bool = False) -> list[re.Match[str]]:
        """The stdlib lines (Celery's handler and format) whose message is ``message`` (or,
        with ``prefix``, starts with it)."""
        found = (STDLIB_LINE.fullmatch(line) for line in self.lines())
        return [
            match
            for match in found
            if match
            and (match["message"].startswith(message) if prefix else match["message"] == message)
        ]

    def events(self, **fields: Any) -> list[dict[str, Any]]:
        """The structlog JSON lines having every one of ``fields``."""
        found = []
        for line in self.stdout.read_text(errors="replace").splitlines():
            event = json.loads(line) if line.startswith("{") else {}  # or Celery's banner
            if event and all(event.get(name) == value for name, value in fields.items()):
                found.append(event)
        return found

    def wait_for(self, what: str, found: Callable[[], list[Any]]) -> list[Any]:
        """``found()`` once it is not empty; lines written after a result is stored come late."""
        deadline = time.monotonic() + RESULT_TIMEOUT
        while not (result := found()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                tail = "\n".join(self.lines()[-40:])
                raise AssertionError(f"{self.pool} worker: no {what}; its output ends:\n{tail}")
            time.sleep(0.02)
        return result


def start_worker(pool: str, redis_url: str, directory: Path) -> Worker:
    command = [
        *(sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"),
        *("--pool", pool, "--loglevel", "INFO", "--hostname", f"{pool}@aioreqctx-tests"),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        *(() if pool == "solo" else ("--concurrency", "4")),
    ]
    environment = {**os.environ, celery_app.BROKER_ENVIRONMENT: redis_url}
    stderr, stdout = directory / f"{pool}.stderr", directory / f"{pool}.stdout"
    with stderr.open("wb") as errors, stdout.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=errors)
    worker = Worker(pool, stderr, stdout, process)
    worker.wait_for("'ready.' line", lambda: [line for line in worker.lines() if " ready." in line])
    return worker


def stop_worker(worker: Worker) -> None:
    worker.process.send_signal(signal.SIGTERM)  # warm shutdown
    try:
        worker.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()


@pytest.fixture(scope="module")
def celery_redis(redis_url: str) -> str:
    """The publishing side (this process) uses the tests' Redis as broker and result store."""
    celery_app.app.conf.update(broker_url=redis_url, result_backend=redis_url)
    return redis_url


@pytest.fixture(scope="module", params=POOLS)
def worker(
    request: pytest.FixtureRequest,
    celery_redis: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    with redis.Redis.from_url(celery_redis) as client:
        client.flushall()
    worker = start_worker(request.param, celery_redis, tmp_path_factory.mktemp("celery"))
    try:
        yield worker
    finally:
        stop_worker(worker)
    assert worker.process.returncode == 0, "\n".join(worker.lines()[-40:])


def result_of(task_id: str) -> Any:
    """The task's return value (or its exception, raised), polled from the result store.

    Not ``AsyncResult.get()``: its pub/sub consumer can deadlock when the garbage collector
    finalizes another ``AsyncResult`` while it subscribes (seen with 200 results here).
    """
    backend = celery_app.app.backend
    deadline = time.monotonic() + RESULT_TIMEOUT
    while (meta := backend.get_task_meta(task_id))["status"] not in states.READY_STATES:
        assert time.monotonic() < deadline, f"task {task_id} not done in {RESULT_TIMEOUT}s"
        time.sleep(0.01)
    if meta["status"] != states.SUCCESS:
        raise backend.exception_to_python(meta["result"])
    return meta["result"]


def carried_value_warnings(worker: Worker, task_name: str, task_id: str) -> list[re.Match[str]]:
    """The lines saying that what this task carried was invalid."""
    lines = worker.stdlib(f"job {task_name} (id {task_id}): invalid carried", prefix=True)
    return [line for line in lines if line["logger"] == "aioreqctx"]


def check_job_lines(worker: Worker, marker: str, seen: dict[str, Any]) -> None:
    """Every line of the job carries its request ID; the worker thread holds none after it."""
    request_id, job_id = seen["request_id"], seen["job_id"]
    [line] = worker.wait_for(f"stdlib line of {marker}", lambda: worker.stdlib(f"record {marker}"))
    assert line["request_id"] == request_id
    [event] = worker.wait_for(f"structlog line of {marker}", lambda: worker.events(marker=marker))
    assert event["request_id"] == request_id
    assert event["job_id"] == job_id
    assert event["job_attempt"] == seen["attempt"]
    assert event.get("parent_job_id") == seen["parent_job_id"]
    [finished] = worker.wait_for(
        f"job_finished of {marker}",
        lambda: [
            match
            for match in worker.stdlib(f"job_finished request_id={request_id} ", prefix=True)
            if f" job_id={job_id} " in match["message"]
        ],
    )
    assert finished["request_id"] == request_id
    [after] = worker.wait_for(
        f"'after job' of {marker}", lambda: worker.stdlib(f"after job {job_id}")
    )
    assert after["request_id"] == "-"  # nothing left behind in the worker thread
    [succeeded] = worker.wait_for(
        f"Celery's 'succeeded' line of {marker}",
        lambda: worker.stdlib(f"Task {seen['job_name']}[{job_id}] succeeded", prefix=True),
    )
    assert succeeded["request_id"] == request_id  # Celery's own line, written inside the job


async def publish_in_thread(request: web.Request) -> web.Response:
    """The recommended way: Celery's publish blocks, so it runs in an executor thread, which
    ``asyncio.to_thread`` starts with the request's context."""
    aioreqctx.set("tenant", request.query.get("tenant"))
    result = await asyncio.to_thread(record.delay, request.query["marker"])
    return web.json_response({"task_id": result.id})


async def publish_directly(request: web.Request) -> web.Response:
    """Also carries the ID, but blocks the event loop for the publish's round trip."""
    result = record.delay(request.query["marker"])
    return web.json_response({"task_id": result.id})


def web_app() -> web.Application:
    app = web.Application()
    aioreqctx.setup(app)
    app.router.add_get("/thread", publish_in_thread)
    app.router.add_get("/direct", publish_directly)
    return app


async def get_published(session: ClientSession, url: str, **headers: str) -> tuple[str, str]:
    """GET ``url``; the request ID the server used and the ID of the task it published."""
    async with session.get(url, headers=headers) as response:
        assert response.status == 200, await response.text()
        task_id: str = (await response.json())["task_id"]
        return response.headers["X-Request-ID"], task_id


def test_a_task_published_by_a_handler_logs_under_its_request_id(worker: Worker) -> None:
    async def main() -> list[tuple[str, str]]:
        async with serving(web_app()) as port, ClientSession() as session:
            base = f"http://127.0.0.1:{port}"
            return [
                await get_published(
                    session,
                    f"{base}/thread?marker={worker.pool}-h1&tenant=acme",
                    **{"X-Request-ID": f"handler-{worker.pool}-1"},
                ),
                await get_published(session, f"{base}/direct?marker={worker.pool}-h2"),
            ]

    (request_1, task_1), (request_2, task_2) = asyncio.run(main())
    assert request_1 == f"handler-{worker.pool}-1"
    assert aioreqctx.is_valid_request_id(request_2)
    seen_1, seen_2 = result_of(task_1), result_of(task_2)
    assert seen_1 == {
        "request_id": request_1,
        "job_id": task_1,
        "job_name": "tests.celery_app.record",
        "attempt": 1,
        "parent_job_id": None,
        "tenant": "acme",
        "remaining": None,
    }
    assert (seen_2["request_id"], seen_2["job_id"], seen_2["tenant"]) == (request_2, task_2, None)
    check_job_lines(worker, f"{worker.pool}-h1", seen_1)
    check_job_lines(worker, f"{worker.pool}-h2", seen_2)


def test_tasks_published_by_tasks_and_their_threads_carry_the_id_and_parent(
    worker: Worker,
) -> None:
    request_id = f"lineage-{worker.pool}"
    with aioreqctx.scope({keys.REQUEST_ID: request_id, keys.DEADLINE: time.monotonic() + 300}):
        parent_1 = spawn.delay(f"{worker.pool}-child-1").id
        parent_2 = spawn_in_thread.delay(f"{worker.pool}-child-2").id
    for parent, marker in ((parent_1, "child-1"), (parent_2, "child-2")):
        child = result_of(parent)
        seen = result_of(child)
        assert (seen["request_id"], seen["job_id"], seen["parent_job_id"]) == (
            request_id,
            child,
            parent,
        )
        assert 0 < seen["remaining"] <= 300  # the request's deadline came along
        check_job_lines(worker, f"{worker.pool}-{marker}", seen)


def test_each_task_of_a_chain_a_group_and_a_chord_carries_the_id(worker: Worker) -> None:
    request_id = f"canvas-{worker.pool}"
    markers = [f"{worker.pool}-canvas-{n}" for n in range(7)]
    with aioreqctx.scope({keys.REQUEST_ID: request_id}):
        chorded = chord([record.si(markers[4]), record.si(markers[5])])(record.si(markers[6]))
        chained = chain(record.si(markers[0]), record.si(markers[1])).apply_async()
        grouped = cast(  # celery-types says AsyncResult; a group's is a GroupResult
            GroupResult, group(record.si(markers[2]), record.si(markers[3])).apply_async()
        )
    assert isinstance(chained.parent, AsyncResult)
    second, first = result_of(chained.id), result_of(chained.parent.id)
    assert first["parent_job_id"] is None  # published by this process
    assert second["parent_job_id"] == first["job_id"]  # published by the worker, after the first
    members = [result_of(member.id) for member in grouped.results or ()]
    assert [seen["parent_job_id"] for seen in members] == [None, None]
    assert isinstance(chorded.parent, GroupResult)
    header = [result_of(member.id) for member in chorded.parent.results or ()]
    body = result_of(chorded.id)  # published by the worker, after the last of the header
    assert body["parent_job_id"] in {seen["job_id"] for seen in header}
    for marker, seen in zip(markers, [first, second, *members, *header, body], strict=True):
        assert seen["request_id"] == request_id
        check_job_lines(worker, marker, seen)


def test_200_concurrent_requests_each_publishing_have_no_cross_talk(worker: Worker) -> None:
    async def main() -> list[tuple[str, str]]:
        async with serving(web_app()) as port, ClientSession() as session:
            url = f"http://127.0.0.1:{port}/thread?marker={worker.pool}-many-"
            return await asyncio.gather(
                *(get_published(session, f"{url}{n}&tenant=t{n}") for n in range(200))
            )

    published = asyncio.run(main())
    assert len({request_id for request_id, _ in published}) == 200
    for n, (request_id, task_id) in enumerate(published):
        seen = result_of(task_id)
        assert (seen["request_id"], seen["job_id"], seen["tenant"]) == (
            request_id,
            task_id,
            f"t{n}",
        )
    for n, (request_id, _) in enumerate(published):
        [line] = worker.stdlib(f"record {worker.pool}-many-{n}")
        assert line["request_id"] == request_id
        [event] = worker.events(marker=f"{worker.pool}-many-{n}")
        assert event["request_id"] == request_id


def test_a_retried_task_keeps_its_id_with_attempt_2(worker: Worker) -> None:
    request_id = f"retry-{worker.pool}"
    with aioreqctx.scope({keys.REQUEST_ID: request_id}):
        task_id = flaky.delay(f"{worker.pool}-retried").id
    seen = result_of(task_id)
    assert (seen["request_id"], seen["job_id"], seen["attempt"], seen["parent_job_id"]) == (
        request_id,
        task_id,
        2,
        None,
    )
    check_attempt_lines(worker, f"{worker.pool}-retried", request_id)
    [retry] = worker.wait_for(
        "job_failed outcome=retry",
        lambda: worker.stdlib(f"job_failed request_id={request_id} ", prefix=True),
    )
    assert retry["level"] == "WARNING"
    assert "attempt=1 " in retry["message"]
    assert "outcome=retry" in retry["message"]


def test_a_retry_keeps_the_id_the_first_attempt_was_given(worker: Worker) -> None:
    """Carried nothing (published outside a request) or an invalid ID: the first attempt gets a
    new ID, and the retry it publishes carries that one, not the message's original headers."""
    for case, headers in (("none", {}), ("invalid", {CARRIED_REQUEST_ID: "bad\r\nid"})):
        marker = f"{worker.pool}-retried-{case}"
        task_id = flaky.apply_async((marker,), headers=headers).id
        seen = result_of(task_id)
        assert (seen["attempt"], seen["parent_job_id"]) == (2, None)  # not its own parent
        assert aioreqctx.is_valid_request_id(seen["request_id"])
        check_attempt_lines(worker, marker, seen["request_id"])
        warnings = carried_value_warnings(worker, "tests.celery_app.flaky", task_id)
        assert len(warnings) == (1 if headers else 0), case


def check_attempt_lines(worker: Worker, marker: str, request_id: str) -> None:
    for attempt in (1, 2):
        [line] = worker.wait_for(
            f"attempt {attempt} of {marker}",
            lambda a=attempt: worker.stdlib(f"flaky {marker} attempt {a}"),  # type: ignore[misc]
        )
        assert line["request_id"] == request_id, (marker, attempt)


BAD_CARRIED_IDS: dict[str, dict[str, object]] = {
    "crlf": {CARRIED_REQUEST_ID: "abc\r\nINFO [forged] tests: INJECTED"},
    "10kb": {CARRIED_REQUEST_ID: "a" * 10240},
    "non-ascii": {CARRIED_REQUEST_ID: "réquête-ü"},
    "number": {CARRIED_REQUEST_ID: 42},
    "missing": {CARRIED_PARENT_JOB_ID: "parent-1"},
}


def test_invalid_carried_values_give_a_new_id_and_one_escaped_warning(worker: Worker) -> None:
    for case, headers in BAD_CARRIED_IDS.items():
        marker = f"{worker.pool}-bad-{case}"
        task_id = record.apply_async((marker,), headers=headers).id  # type: ignore[arg-type]
        seen = result_of(task_id)
        assert aioreqctx.is_valid_request_id(seen["request_id"]), case
        assert seen["request_id"] not in (headers.get(CARRIED_REQUEST_ID), "-"), case
        check_job_lines(worker, marker, seen)
        [warning] = carried_value_warnings(worker, "tests.celery_app.record", task_id)
        assert warning["level"] == "WARNING"
        assert warning["request_id"] == seen["request_id"]
        assert len(warning[0]) < 400, case  # escaped and truncated
    assert not [line for line in worker.lines() if line.startswith("INFO [forged]")]
    with pytest.raises(ValueError, match="fail boom"):
        result_of(fail.delay("boom").id)
    seen = result_of(record.delay(f"{worker.pool}-still-working").id)  # the worker goes on
    check_job_lines(worker, f"{worker.pool}-still-working", seen)


@contextmanager
def published_headers() -> Iterator[dict[str, dict[str, Any]]]:
    """The headers of every message this process publishes, by task ID (Celery's signal)."""
    sent: dict[str, dict[str, Any]] = {}

    def keep(headers: dict[str, Any], **_: Any) -> None:
        sent[headers["id"]] = dict(headers)

    after_task_publish.connect(keep, weak=False, dispatch_uid="tests.published_headers")
    try:
        yield sent
    finally:
        after_task_publish.disconnect(dispatch_uid="tests.published_headers")


@contextmanager
def publishing_with(propagation: aioreqctx.JobPropagation) -> Iterator[None]:
    """This process publishes with ``propagation`` for the block (the worker is unchanged)."""
    celery_app.uninstall()
    undo = setup_celery(propagation)
    try:
        yield
    finally:
        undo()
        celery_app.uninstall = setup_celery(celery_app.propagation)


def test_publishing_outside_a_request_follows_outside_request(worker: Worker) -> None:
    with published_headers() as sent:
        skipped = record.delay(f"{worker.pool}-outside-skip").id
        with publishing_with(aioreqctx.JobPropagation(outside_request="generate")):
            generated = record.delay(f"{worker.pool}-outside-generate").id
    assert CARRIED_REQUEST_ID not in sent[skipped]
    carried = sent[generated][CARRIED_REQUEST_ID]
    assert aioreqctx.is_valid_request_id(carried)
    seen_skipped, seen_generated = result_of(skipped), result_of(generated)
    assert aioreqctx.is_valid_request_id(seen_skipped["request_id"])
    assert seen_generated["request_id"] == carried
    for marker, seen in (("skip", seen_skipped), ("generate", seen_generated)):
        check_job_lines(worker, f"{worker.pool}-outside-{marker}", seen)
        assert not carried_value_warnings(worker, "tests.celery_app.record", seen["job_id"])


def test_an_eager_apply_runs_in_a_job_seeded_from_the_callers_context() -> None:
    with aioreqctx.scope({keys.REQUEST_ID: "eager-1", "tenant": "acme"}):
        seen = record.apply(("eager",)).get()
        assert aioreqctx.get(keys.REQUEST_ID) == "eager-1"  # the caller's context is back
        assert aioreqctx.get(keys.JOB_ID) is None
    assert (seen["request_id"], seen["tenant"], seen["attempt"]) == ("eager-1", "acme", 1)
    assert seen["job_id"] is not None


def test_an_eager_apply_inside_a_task_is_a_child_job_and_gives_the_task_its_context_back() -> None:
    with aioreqctx.scope({keys.REQUEST_ID: "eager-2"}):
        views = nested.apply(("eager-nested",)).get()
        assert aioreqctx.get(keys.JOB_ID) is None
    inner, outer = views["inner"], views["outer_after"]
    assert inner["request_id"] == outer["request_id"] == "eager-2"
    assert inner["parent_job_id"] == outer["job_id"] != inner["job_id"]
    assert outer["parent_job_id"] is None


def test_set_up_is_once_per_process_and_checks_its_argument() -> None:
    with pytest.raises(RuntimeError, match="setup_celery"):
        setup_celery()
    with pytest.raises(TypeError, match="propagation must be a JobPropagation"):
        setup_celery({"outside_request": "generate"})  # type: ignore[arg-type]
    with publishing_with(aioreqctx.JobPropagation()):
        pass
    celery_app.uninstall()
    celery_app.uninstall()  # undoing twice is harmless
    celery_app.uninstall = setup_celery(celery_app.propagation)


def test_importing_without_celery_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "celery", None)
    monkeypatch.delitem(sys.modules, "aioreqctx.integrations.celery")
    with pytest.raises(ImportError, match=re.escape("pip install 'aioreqctx[celery]'")):
        importlib.import_module("aioreqctx.integrations.celery")


def test_an_id_the_publisher_put_in_the_headers_is_kept(worker: Worker) -> None:
    marker = f"{worker.pool}-explicit"
    with aioreqctx.scope({keys.REQUEST_ID: "from-context"}):
        task_id = record.apply_async((marker,), headers={CARRIED_REQUEST_ID: "explicit-1"}).id
    seen = result_of(task_id)
    assert seen["request_id"] == "explicit-1"
    check_job_lines(worker, marker, seen)
