"""arq: a real arq Worker against a private redis-server runs each job under its enqueuer's ID."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from aiohttp import ClientSession, web
from aiohttp.typedefs import Handler
from arq import Retry, create_pool, cron
from arq.connections import ArqRedis, RedisSettings
from arq.cron import CronJob
from arq.jobs import Job
from arq.typing import StartupShutdown, WorkerCoroutine
from arq.worker import Function, Worker, create_worker, func

import aioreqctx as context
from aioreqctx import keys
from aioreqctx.integrations.arq import CARRIER_FIELD, ArqPropagation
from aioreqctx.propagation.jobs import CARRIED_PARENT_JOB_ID, CARRIED_REQUEST_ID

from ..conftest import LoopFactory, run
from ..support.http_helpers import serving
from ..support.log_capture import ListHandler, attached, capture

WORKER_TIMEOUT = 30.0
LINE_FORMAT = "%(request_id)s %(job_name)s %(job_attempt)s %(message)s"


@pytest.fixture(autouse=True)
def empty_redis(redis_url: str, redisdb: redis.Redis) -> None:
    """Each test starts from an empty Redis (pytest-redis's ``redisdb`` also empties it after)."""
    redisdb.flushall()


@pytest.fixture
def job_lines() -> Iterator[ListHandler]:
    """What the jobs log on ``app.jobs``, formatted with the request's and the job's fields."""
    handler = ListHandler(LINE_FORMAT)
    handler.addFilter(context.RequestContextFilter(default=None))
    with attached("app.jobs", handler):
        yield handler


seen: dict[str, dict[str, Any]] = {}
job_logger = logging.getLogger("app.jobs")


def observed() -> dict[str, Any]:
    return {
        "request_id": context.get(keys.REQUEST_ID),
        "job_id": context.get(keys.JOB_ID),
        "job_name": context.get(keys.JOB_NAME),
        "attempt": context.get(keys.JOB_ATTEMPT),
        "parent": context.get(keys.PARENT_JOB_ID),
        "remaining": context.remaining_time(),
        "tenant": context.get("tenant"),
    }


async def record(ctx: dict[str, Any], label: str) -> str:
    seen[label] = observed()
    job_logger.info("ran %s", label)
    return f"done {label}"


async def enqueue_child(ctx: dict[str, Any], label: str) -> None:
    seen[label] = observed()
    await ctx["redis"].enqueue_job("record", f"{label}/child")


async def flaky(ctx: dict[str, Any], label: str) -> None:
    seen[f"{label}#{ctx['job_try']}"] = observed()
    if ctx["job_try"] == 1:
        raise Retry(defer=0.05)


def settings(redis_url: str) -> RedisSettings:
    return RedisSettings.from_dsn(redis_url)


@asynccontextmanager
async def pool_for(redis_url: str, jobs: ArqPropagation) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(
        settings(redis_url), job_serializer=jobs.serialize, job_deserializer=jobs.deserialize
    )
    try:
        yield pool
    finally:
        await pool.aclose()


async def drain(
    redis_url: str,
    jobs: ArqPropagation,
    job_functions: Sequence[WorkerCoroutine] | None = None,
    **options: Any,
) -> Worker:
    """Run a burst worker until the queue is empty, made from a ``WorkerSettings`` class the
    way ``arq module.WorkerSettings`` makes it (with this module's job functions unless
    ``job_functions`` are given); ``options`` override its settings."""
    run_these = [record, enqueue_child, flaky] if job_functions is None else list(job_functions)

    class WorkerSettings:  # typed as arq's WorkerSettingsBase asks
        functions: Sequence[WorkerCoroutine | Function] = jobs.functions(run_these)
        cron_jobs: Sequence[CronJob] | None = None
        on_startup: StartupShutdown | None = None
        on_shutdown: StartupShutdown | None = None
        job_serializer = jobs.serialize
        job_deserializer = jobs.deserialize

    worker = create_worker(
        WorkerSettings,
        redis_settings=settings(redis_url),
        burst=True,
        poll_delay=0.01,
        handle_signals=False,
        **options,
    )
    try:
        async with asyncio.timeout(WORKER_TIMEOUT):
            await worker.async_run()
    finally:
        await worker.close()
    return worker


def gateway(pool: ArqRedis, *observers: context.RequestObserver) -> web.Application:
    """Handlers that enqueue jobs from the handler, a child task, an executor thread, a job."""

    async def enqueue(request: web.Request) -> web.Response:
        label = request.match_info["label"]
        await pool.enqueue_job("record", label)
        return web.Response(text=label)

    async def everywhere(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        await pool.enqueue_job("record", "handler")
        await asyncio.create_task(pool.enqueue_job("record", "child-task"))

        def from_thread() -> None:
            asyncio.run_coroutine_threadsafe(pool.enqueue_job("record", "thread"), loop).result(10)

        await context.run_in_executor(None, from_thread)
        await pool.enqueue_job("enqueue_child", "job")
        return web.Response(text="queued")

    app = web.Application()
    context.setup(app, observers=observers)
    app.router.add_get("/everywhere", everywhere)
    app.router.add_get("/enqueue/{label}", enqueue)
    return app


async def get_id(session: ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200
        return response.headers["X-Request-ID"]


def test_jobs_enqueued_by_a_handler_its_tasks_threads_and_jobs_carry_its_id(
    redis_url: str, job_lines: ListHandler, loop_factory: LoopFactory
) -> None:
    jobs = ArqPropagation(context.JobPropagation(events=context.JobEvents()))
    seen.clear()

    async def main() -> str:
        async with pool_for(redis_url, jobs) as pool, serving(gateway(pool)) as port:
            async with ClientSession() as session:
                request_id = await get_id(session, f"http://127.0.0.1:{port}/everywhere")
            await drain(redis_url, jobs)
        return request_id

    with capture("aioreqctx.jobs") as events:
        request_id = run(loop_factory, main)
    assert set(seen) == {"handler", "child-task", "thread", "job", "job/child"}
    assert {label: values["request_id"] for label, values in seen.items()} == dict.fromkeys(
        seen, request_id
    )
    assert seen["job/child"]["parent"] == seen["job"]["job_id"]
    assert seen["handler"]["parent"] is None
    assert seen["handler"]["job_name"] == "record"
    assert seen["handler"]["attempt"] == 1
    assert len({values["job_id"] for values in seen.values()}) == 5
    assert sorted(job_lines.lines) == sorted(
        f"{request_id} record 1 ran {label}"
        for label in ("handler", "child-task", "thread", "job/child")
    )
    finished = events.fields("job_finished")
    assert len(finished) == 5
    assert {event["request_id"] for event in finished} == {request_id}
    assert {event["outcome"] for event in finished} == {"success"}


def test_200_concurrent_requests_each_enqueue_a_job_with_zero_cross_talk(
    redis_url: str, job_lines: ListHandler
) -> None:
    jobs = ArqPropagation()
    seen.clear()

    async def main() -> dict[str, str]:
        async with pool_for(redis_url, jobs) as pool, serving(gateway(pool)) as port:
            async with ClientSession() as session:
                ids = await asyncio.gather(
                    *(get_id(session, f"http://127.0.0.1:{port}/enqueue/n{n}") for n in range(200))
                )
            await drain(redis_url, jobs, max_jobs=50)
        return {f"n{n}": request_id for n, request_id in enumerate(ids)}

    expected = asyncio.run(main())
    assert len(set(expected.values())) == 200
    assert {label: values["request_id"] for label, values in seen.items()} == expected
    assert sorted(job_lines.lines) == sorted(
        f"{request_id} record 1 ran {label}" for label, request_id in expected.items()
    )


def test_a_retried_job_keeps_its_id_and_counts_attempts(redis_url: str) -> None:
    jobs = ArqPropagation(context.JobPropagation(events=context.JobEvents()))
    seen.clear()

    async def main() -> None:
        async with pool_for(redis_url, jobs) as pool:
            async with context.unit_of_work("req-retry"):
                await pool.enqueue_job("flaky", "f")
                await pool.enqueue_job("record", "deferred", _defer_by=0.2)
                await pool.enqueue_job("record", "third try", _job_try=3)
            await drain(redis_url, jobs)

    with capture("aioreqctx.jobs") as events:
        asyncio.run(main())
    first, second = seen["f#1"], seen["f#2"]
    assert (first["request_id"], first["attempt"]) == ("req-retry", 1)
    assert (second["request_id"], second["attempt"]) == ("req-retry", 2)
    assert first["job_id"] == second["job_id"]
    assert seen["deferred"]["request_id"] == "req-retry"
    assert (seen["third try"]["request_id"], seen["third try"]["attempt"]) == ("req-retry", 3)
    outcomes = [
        (event["job_name"], event["attempt"], event["outcome"])
        for event in events.fields("job_failed") + events.fields("job_finished")
    ]
    assert sorted(outcomes) == [
        ("flaky", 1, "retry"),
        ("flaky", 2, "success"),
        ("record", 1, "success"),
        ("record", 3, "success"),
    ]
    assert [r.levelno for r in events.records if r.event_fields.get("outcome") == "retry"] == [  # type: ignore[attr-defined]
        logging.WARNING
    ]


def test_results_and_job_info_are_arqs_own(redis_url: str) -> None:
    handed: list[dict[str, Any]] = []

    def recording(data: dict[str, Any]) -> bytes:
        handed.append(data)
        return pickle.dumps(data)

    jobs = ArqPropagation(serializer=recording)

    async def main() -> tuple[Any, Any, Any]:
        async with pool_for(redis_url, jobs) as pool:
            async with context.unit_of_work("req-result"):
                job = await pool.enqueue_job("record", "r", _job_id="fixed-id")
            assert isinstance(job, Job)
            info = await job.info()
            await drain(redis_url, jobs)
            return info, await job.result(timeout=5), await job.result_info()

    info, result, result_info = asyncio.run(main())
    assert result == "done r"
    assert info is not None
    assert info.kwargs == {}
    assert result_info is not None
    assert result_info.kwargs == {}
    assert seen["r"]["job_id"] == "fixed-id"
    # What ArqPropagation relies on and arq does not document: a result's dict has "r", a job's not.
    job_data, result_data = handed
    assert "r" not in job_data
    assert job_data[CARRIER_FIELD][CARRIED_REQUEST_ID] == "req-result"
    assert "r" in result_data
    assert CARRIER_FIELD not in result_data


@pytest.mark.parametrize(
    "carried",
    [
        {CARRIED_REQUEST_ID: "bad\r\nFAKE: injected"},
        {CARRIED_REQUEST_ID: "x" * 10_240},
        {CARRIED_REQUEST_ID: "caf\u00e9-\u2603"},
        {CARRIED_REQUEST_ID: 4242},
        {CARRIED_PARENT_JOB_ID: "p-1"},
        "not a carrier\r\n",
    ],
    ids=["crlf", "10kb", "non-ascii", "number", "missing", "not-a-mapping"],
)
def test_invalid_carried_values_give_a_new_id_one_warning_and_the_worker_goes_on(
    redis_url: str, job_lines: ListHandler, carried: object
) -> None:
    jobs = ArqPropagation()
    seen.clear()

    def forged(data: dict[str, Any]) -> bytes:  # what another producer may have written
        return pickle.dumps({**data, CARRIER_FIELD: carried})

    async def main() -> None:
        async with pool_for(redis_url, jobs) as pool:
            forger = await create_pool(settings(redis_url), job_serializer=forged)
            await forger.enqueue_job("record", "forged")
            await forger.aclose()
            async with context.unit_of_work("req-after"):
                await pool.enqueue_job("record", "after")
            await drain(redis_url, jobs)

    with capture("aioreqctx", logging.WARNING) as warnings:
        asyncio.run(main())
    new_id = seen["forged"]["request_id"]
    assert context.is_valid_request_id(new_id)
    assert len(new_id) == 36
    (warning,) = warnings.records
    text = warnings.text()
    assert "invalid carried" in text
    assert "\r" not in text
    assert text.count("\n") == 1
    assert len(text) < 400
    assert warning.name == "aioreqctx"
    assert seen["after"]["request_id"] == "req-after"  # the worker kept working
    assert f"{new_id} record 1 ran forged" in job_lines.lines


@pytest.mark.parametrize("outside_request", ["skip", "generate"])
def test_outside_a_request_the_configured_behaviour_applies(
    redis_url: str, outside_request: Any
) -> None:
    producer = ArqPropagation(
        context.JobPropagation(outside_request=outside_request, generator=lambda: "made-here")
    )
    seen.clear()

    async def main() -> None:
        async with pool_for(redis_url, producer) as pool:
            await pool.enqueue_job("record", "outside")
            await drain(redis_url, ArqPropagation())

    with capture("aioreqctx", logging.WARNING) as warnings:
        asyncio.run(main())
    request_id = seen["outside"]["request_id"]
    if outside_request == "generate":
        assert request_id == "made-here"
    else:
        assert len(request_id) == 36  # a new ID made by the worker
    assert warnings.records == []


def test_deadline_and_context_keys_are_carried(redis_url: str) -> None:
    jobs = ArqPropagation(context.JobPropagation(context_keys=("tenant",), carry_deadline=True))
    seen.clear()

    async def main() -> None:
        async with pool_for(redis_url, jobs) as pool:
            app = gateway(pool, context.DeadlineObserver(budget=30))

            @web.middleware
            async def tenant(request: web.Request, handler: Handler) -> web.StreamResponse:
                context.set("tenant", "acme")
                return await handler(request)

            app.middlewares.append(tenant)
            async with serving(app) as port, ClientSession() as session:
                await get_id(session, f"http://127.0.0.1:{port}/enqueue/timed")
            await drain(redis_url, jobs)

    asyncio.run(main())
    remaining = seen["timed"]["remaining"]
    assert remaining is not None
    assert 20 < remaining <= 30
    assert seen["timed"]["tenant"] == "acme"


def test_cron_jobs_and_arq_functions_keep_their_names_and_start_with_new_ids(
    redis_url: str,
) -> None:
    jobs = ArqPropagation()
    seen.clear()

    async def tick(ctx: dict[str, Any]) -> None:
        seen["tick"] = observed()

    async def main() -> None:
        async with pool_for(redis_url, jobs) as pool:
            async with context.unit_of_work("req-named"):
                await pool.enqueue_job("named", "named")
            await drain(
                redis_url,
                jobs,
                functions=jobs.functions([func(record, name="named", max_tries=2)]),
                cron_jobs=[cron(jobs.job(tick), name="tick", run_at_startup=True)],
            )

    asyncio.run(main())
    assert (seen["named"]["request_id"], seen["named"]["job_name"]) == ("req-named", "named")
    wrapped = jobs.job(func(record, name="named", max_tries=2, timeout=7))  # arq's settings kept
    assert (wrapped.name, wrapped.max_tries, wrapped.timeout_s) == ("named", 2, 7)
    assert wrapped.coroutine is not record
    assert len(seen["tick"]["request_id"]) == 36
    assert seen["tick"]["job_name"] == tick.__qualname__


pollers: list[asyncio.Task[None]] = []


async def job_poller() -> None:
    """Started plainly by a job: keeps the job's context after the job ends."""
    context.set("owns", "a mapping")  # 3.11 reads only a task that owns a mapping
    await asyncio.Event().wait()


async def detached_job_poller() -> None:
    context.set("owns", "a mapping")
    await asyncio.Event().wait()


async def starts_a_poller(ctx: dict[str, Any]) -> None:
    pollers.append(asyncio.create_task(job_poller()))


async def starts_a_detached_poller(ctx: dict[str, Any]) -> None:
    pollers.append(context.detached(detached_job_poller()))


async def outlasts_its_task(ctx: dict[str, Any]) -> None:
    task = asyncio.create_task(job_poller())
    await asyncio.sleep(0.5)  # the job outlasts the threshold, its task with it
    task.cancel()


def test_a_task_outliving_its_job_is_reported_once_detached_or_in_flight_ones_never(
    redis_url: str, loop_factory: LoopFactory
) -> None:
    jobs = ArqPropagation(context.JobPropagation(warn_outliving_tasks=0.2))
    pollers.clear()

    async def main() -> str:
        async with pool_for(redis_url, jobs) as pool:
            async with context.unit_of_work("req-leaky"):
                leaky = await pool.enqueue_job("starts_a_poller")
                await pool.enqueue_job("starts_a_detached_poller")
                await pool.enqueue_job("outlasts_its_task")
            assert leaky is not None
            await drain(
                redis_url,
                jobs,
                functions=jobs.functions(
                    [starts_a_poller, starts_a_detached_poller, outlasts_its_task]
                ),
            )
            await asyncio.sleep(0.7)
        for poller in pollers:
            poller.cancel()
        return leaky.job_id

    with capture("aioreqctx", logging.WARNING) as logged:
        job_id = run(loop_factory, main)
    assert len(logged.records) == 1, logged.text()
    message = logged.records[0].getMessage()
    assert f"after the job starts_a_poller (id {job_id}, request req-leaky)" in message
    assert f"{__file__}:{job_poller.__code__.co_firstlineno}" in message
    assert "aioreqctx.detached" in message


def test_a_bad_outliving_threshold_is_refused_by_name() -> None:
    with pytest.raises(context.OptionError, match="JobPropagation: warn_outliving_tasks must be"):
        context.JobPropagation(warn_outliving_tasks=0)
