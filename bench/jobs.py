"""What aioreqctx adds to a job queue: per enqueue, and per job a worker runs.

One private redis-server (127.0.0.1, a free port, no persistence) serves every case. For each
queue the same trivial job goes through a bare set-up and through one with aioreqctx:

* arq: ``ArqRedis.enqueue_job``, and arq's ``Worker`` in burst mode draining the queue; with
  aioreqctx, ``ArqPropagation``'s serializer, deserializer and wrapped function.
* taskiq: ``kiq()`` on taskiq-redis's ``ListQueueBroker``, and taskiq's ``Receiver`` listening
  until it ran every job; with aioreqctx, ``JobContextMiddleware``. A third set-up with a
  middleware whose hooks do nothing shows what any middleware costs taskiq's receiver.
* Celery: ``apply_async`` to its Redis broker; with aioreqctx, ``setup_celery()`` (its signal
  receivers are connected for that case only). Celery's worker is a process of its own, so its
  worker side is measured as ``Task.apply()``: Celery's tracer with the ``task_prerun`` and
  ``task_postrun`` signals, without the broker round trips a worker also makes. That ratio is
  an upper bound of what a real worker adds.

Every enqueue happens inside a request's context (``aioreqctx.scope`` with an ID, for the bare
set-ups too), so the aioreqctx set-ups carry a real carrier. A round runs every case once, in an
order rotated each round, after a discarded warm-up round, with the garbage collector off while
timed; the queue is emptied (FLUSHALL) between cases. A case's figure is the time per job. The
ratio aioreqctx/bare is taken per round (the two ran seconds apart, under the same load), and
the table gives its median with the 10th-90th percentile spread, and the ratio of the minimums.

A second table times aioreqctx's own code per job alone, next to the code it replaces
(arq: its serializer, deserializer and wrapped function against pickle and the bare function;
taskiq: the message with the carrier's labels through taskiq's formatter and the middleware's
hooks against the bare message), and gives the difference as a share of the bare job's best
time above: on a shared machine that difference is steadier than the timed rounds' ratio.

``python bench/jobs.py`` (a few minutes), ``--quick`` for a smoke run, ``--markdown`` for
bench/RESULTS.md. Verdicts against the 3% targets are printed, not turned into an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pickle
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from time import perf_counter
from typing import Any

import port_for
import redis
from arq import Worker, create_pool
from arq.connections import ArqRedis, RedisSettings
from celery import Celery
from mirakuru import TCPExecutor
from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.receiver import Receiver
from taskiq_redis import ListQueueBroker

import aioreqctx
from aioreqctx.integrations.arq import ArqPropagation
from aioreqctx.integrations.celery import setup_celery
from aioreqctx.integrations.taskiq import JobContextMiddleware

REQUEST = {aioreqctx.REQUEST_ID: "0b6f4c1e-9d1a-4a57-8f0e-2c51d6a7b3e9"}
TARGET = 1.03
FLOOR = "do-nothing middleware"
LIBRARIES = ("arq", "taskiq", "taskiq-redis", "celery", "kombu", "redis")
WORKER_CONCURRENCY = 100


@contextmanager
def private_redis() -> Iterator[int]:
    """A redis-server for this run only, on a free port (port-for); mirakuru starts it, waits
    until the port accepts connections and stops it afterwards. Yields its port."""
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server")
    port = port_for.select_random()
    with tempfile.TemporaryDirectory(prefix="aioreqctx-bench-") as directory:
        options = ["--bind", "127.0.0.1", "--port", str(port), "--dir", directory, "--save", ""]
        command = [executable, *options]
        with TCPExecutor(command, "127.0.0.1", port, timeout=10, stdout=subprocess.DEVNULL):
            yield port


async def noop(ctx: dict[str, Any], n: int) -> None:
    """arq's trivial job."""


def trivial(n: int) -> None:
    """Celery's trivial job."""


class Queue:
    """One queue library, bare or with aioreqctx: enqueue ``jobs`` jobs, then run them."""

    name: str
    with_aioreqctx: bool

    async def start(self) -> None:
        """Connections made once, before any timing."""

    async def enqueue(self, jobs: int) -> None:
        raise NotImplementedError

    async def work(self, jobs: int) -> float:
        """Run the ``jobs`` queued jobs; the seconds it took, set-up and tear-down left out."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Connections closed at the end."""

    @property
    def label(self) -> str:
        return f"{self.name} {'aioreqctx' if self.with_aioreqctx else 'bare'}"


@dataclass(eq=False)
class ArqQueue(Queue):
    port: int
    with_aioreqctx: bool
    name: str = "arq"
    pool: ArqRedis | None = None
    serialization: dict[str, Any] = field(default_factory=dict)
    functions: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queue_name = f"bench:arq:{self.with_aioreqctx}"
        self.functions = [noop]
        if self.with_aioreqctx:
            jobs = ArqPropagation()
            self.serialization = {
                "job_serializer": jobs.serialize,
                "job_deserializer": jobs.deserialize,
            }
            self.functions = jobs.functions([noop])

    async def _pool(self) -> ArqRedis:
        settings = RedisSettings(port=self.port)
        return await create_pool(settings, default_queue_name=self.queue_name, **self.serialization)

    async def start(self) -> None:
        self.pool = await self._pool()

    async def enqueue(self, jobs: int) -> None:
        assert self.pool is not None
        for n in range(jobs):
            await self.pool.enqueue_job("noop", n)

    async def work(self, jobs: int) -> float:
        worker = Worker(
            functions=self.functions,
            queue_name=self.queue_name,
            redis_pool=await self._pool(),
            burst=True,
            poll_delay=0,
            handle_signals=False,
            max_jobs=WORKER_CONCURRENCY,
            keep_result=0,
            **self.serialization,
        )
        started = perf_counter()
        await worker.main()
        elapsed = perf_counter() - started
        assert worker.jobs_complete == jobs, worker
        await worker.close()
        return elapsed

    async def stop(self) -> None:
        assert self.pool is not None
        await self.pool.aclose()


@dataclass(eq=False)
class TaskiqQueue(Queue):
    port: int
    with_aioreqctx: bool
    name: str = "taskiq"

    def __post_init__(self) -> None:
        broker = ListQueueBroker(
            f"redis://127.0.0.1:{self.port}/0", queue_name=f"bench:taskiq:{self.with_aioreqctx}"
        )
        self.broker: AsyncBroker = broker
        if self.with_aioreqctx:
            self.broker = broker.with_middlewares(JobContextMiddleware())

        async def trivial_task(n: int) -> None:  # taskiq renames it: one function per broker
            """taskiq's trivial job."""

        self.task = self.broker.register_task(trivial_task, "noop")

    async def start(self) -> None:
        await self.broker.startup()

    async def enqueue(self, jobs: int) -> None:
        for n in range(jobs):
            await self.task.kiq(n)

    async def work(self, jobs: int) -> float:
        receiver = Receiver(
            self.broker,
            max_async_tasks=WORKER_CONCURRENCY,
            max_tasks_to_execute=jobs,
            run_startup=False,
        )
        started = perf_counter()
        await receiver.listen(asyncio.Event())
        return perf_counter() - started

    async def stop(self) -> None:
        await self.broker.shutdown()


class DoNothingMiddleware(TaskiqMiddleware):
    """Every hook taskiq's default: what any middleware at all costs taskiq's receiver."""


@dataclass(eq=False)
class TaskiqFloorQueue(TaskiqQueue):
    """taskiq with a do-nothing middleware: the floor under ``JobContextMiddleware``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.broker.add_middlewares(DoNothingMiddleware())

    @property
    def label(self) -> str:
        return f"{self.name} {FLOOR}"


@dataclass(eq=False)
class CeleryQueue(Queue):
    port: int
    with_aioreqctx: bool
    name: str = "celery"

    def __post_init__(self) -> None:
        url = f"redis://127.0.0.1:{self.port}/0"
        self.app = Celery(f"bench-{self.with_aioreqctx}", broker=url, set_as_current=False)
        self.task = self.app.task(name="noop")(trivial)

    @contextmanager
    def installed(self) -> Iterator[None]:
        uninstall = setup_celery() if self.with_aioreqctx else None
        try:
            yield
        finally:
            if uninstall is not None:
                uninstall()

    async def start(self) -> None:
        self.task.apply_async((0,))  # connects the producer pool before any timing

    async def enqueue(self, jobs: int) -> None:
        with self.installed():
            for n in range(jobs):
                self.task.apply_async((n,))

    async def work(self, jobs: int) -> float:
        with self.installed():
            started = perf_counter()
            for n in range(jobs):
                self.task.apply((n,))
            return perf_counter() - started

    async def stop(self) -> None:
        self.app.close()


@dataclass
class Samples:
    """Seconds per job, per case, one entry per timed round."""

    per_job: dict[str, list[float]] = field(default_factory=dict)

    def add(self, case: str, seconds: float, jobs: int) -> None:
        self.per_job.setdefault(case, []).append(seconds / jobs)


async def one_round(
    queues: list[Queue], jobs: int, flush: Callable[[], object], samples: Samples | None
) -> None:
    for queue in queues:
        gc.collect()
        gc.disable()
        try:
            async with aioreqctx.scope(REQUEST):
                started = perf_counter()
                await queue.enqueue(jobs)
                enqueue = perf_counter() - started
            work = await queue.work(jobs)
        finally:
            gc.enable()
        flush()
        if samples is not None:
            samples.add(f"{queue.label} enqueue", enqueue, jobs)
            samples.add(f"{queue.label} worker", work, jobs)


async def measure(port: int, rounds: int, jobs: int, names: list[str]) -> Samples:
    makers = {"arq": ArqQueue, "taskiq": TaskiqQueue, "celery": CeleryQueue}
    queues: list[Queue] = [
        makers[name](port, with_aioreqctx) for name in names for with_aioreqctx in (False, True)
    ]
    if "taskiq" in names:
        queues.append(TaskiqFloorQueue(port, False))
    client = redis.Redis(port=port)
    for queue in queues:
        await queue.start()
    client.flushall()
    samples = Samples()
    try:
        await one_round(queues, jobs, client.flushall, None)  # warm-up
        for round_number in range(rounds):
            shift = round_number % len(queues)
            await one_round(queues[shift:] + queues[:shift], jobs, client.flushall, samples)
    finally:
        for queue in queues:
            await queue.stop()
        client.close()
    return samples


def quantile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


def report(samples: Samples, names: list[str], markdown: bool) -> None:
    per_job = samples.per_job
    rows = []
    cases = [(name, "aioreqctx", side) for name in names for side in ("enqueue", "worker")]
    if "taskiq" in names:
        cases += [("taskiq", FLOOR, side) for side in ("enqueue", "worker")]
    for name, variant, side in cases:
        bare = per_job[f"{name} bare {side}"]
        ours = per_job[f"{name} {variant} {side}"]
        paired = [mine / base for mine, base in zip(ours, bare, strict=True)]
        median = statistics.median(paired)
        judged = name != "celery" and variant == "aioreqctx"
        verdict = "" if not judged else (" PASS" if median <= TARGET else " FAIL")
        rows.append(
            [
                f"{name} {side}" if variant == "aioreqctx" else f"{name} {variant} {side}",
                f"{min(bare) * 1e6:.1f} / {statistics.median(bare) * 1e6:.1f}",
                f"{min(ours) * 1e6:.1f} / {statistics.median(ours) * 1e6:.1f}",
                f"{median:.3f}{verdict}",
                f"{quantile(paired, 0.1):.3f}-{quantile(paired, 0.9):.3f}",
                f"{min(ours) / min(bare):.3f}",
            ]
        )
    header = [
        "per job",
        "bare us (min / median)",
        "with it us (min / median)",
        "ratio, median of rounds",
        "p10-p90",
        "ratio of mins",
    ]
    table_of(header, rows, markdown)
    print(f"\ntarget: ratio <= {TARGET} for arq and taskiq; Celery's figure is reported only")


def table_of(header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def per_call(function: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``function``: the min of 7 timeit repeats (noise only adds)."""
    return min(timeit.repeat(function, number=calls, repeat=7)) / calls


def run_job(deserialize: Callable[[bytes], Any], raw: bytes, function: Callable[..., Any]) -> None:
    """arq's worker side of one job, without its loop: deserialize, then run the function."""
    deserialize(raw)
    with suppress(StopIteration):
        function({"job_id": "j"}, 1).send(None)


def hook_costs(calls: int) -> list[tuple[str, float, float]]:
    """What aioreqctx's own code adds per job, each side timed alone, with what it replaces.

    A job's bare time includes the broker round trip and the queue's own bookkeeping, which
    move by tens of percent under load; this code does not touch either, so its cost, timed
    in a tight loop, is what the timed rounds above cannot resolve on a noisy machine.
    """
    arq = ArqPropagation()
    arq_job = {"t": 1, "f": "noop", "a": (1,), "k": {}, "et": 1_700_000_000_000}
    arq_raw = pickle.dumps(arq_job)
    middleware = JobContextMiddleware()
    formatter = ListQueueBroker("redis://127.0.0.1:1/0").formatter

    def message(labels: dict[str, Any]) -> TaskiqMessage:
        return TaskiqMessage(task_id="0" * 32, task_name="noop", labels=labels, args=[1], kwargs={})

    with aioreqctx.scope(REQUEST):
        arq_raw_with = arq.serialize(arq_job)
        carried = message(middleware.pre_send(message({})).labels)
    sent, sent_with = formatter.dumps(message({})).message, formatter.dumps(carried).message
    wrapped = arq.job(noop)
    result = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)

    def taskiq_worker() -> TaskiqMessage:
        received = formatter.loads(sent_with)
        middleware.post_execute(middleware.pre_execute(received), result)
        return received

    pairs: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("arq enqueue", lambda: arq.serialize(arq_job), lambda: pickle.dumps(arq_job)),
        (
            "arq worker",
            partial(run_job, arq.deserialize, arq_raw_with, wrapped),
            partial(run_job, pickle.loads, arq_raw, noop),
        ),
        (
            "taskiq enqueue",
            lambda: formatter.dumps(middleware.pre_send(message({}))),
            lambda: formatter.dumps(message({})),
        ),
        (
            "taskiq worker",
            taskiq_worker,
            lambda: formatter.loads(sent),
        ),
    ]
    costs = []
    with aioreqctx.scope(REQUEST):
        for name, ours, bare in pairs:
            costs.append((name, per_call(ours, calls), per_call(bare, calls)))
    return costs


def report_hooks(costs: list[tuple[str, float, float]], samples: Samples, markdown: bool) -> None:
    header = ["per job", "aioreqctx's code us", "replaced code us", "added us", "of a bare job"]
    rows = []
    for name, ours, bare in costs:
        queue, side = name.split()
        bare_job = min(samples.per_job[f"{queue} bare {side}"])
        added = ours - bare
        rows.append(
            [
                name,
                f"{ours * 1e6:.2f}",
                f"{bare * 1e6:.2f}",
                f"{added * 1e6:.2f}",
                f"{added / bare_job:.1%}",
            ]
        )
    print("\nWhat aioreqctx's own code adds per job (timed alone; the bare job: min above)\n")
    table_of(header, rows, markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=400, help="jobs per case and round")
    parser.add_argument("--queues", default="arq,taskiq,celery")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 20 jobs")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.jobs = 2, 20
    names = args.queues.split(",")
    libraries = ", ".join(f"{lib} {version(lib)}" for lib in LIBRARIES)
    print(f"python {platform.python_version()}, {libraries}")
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"{args.rounds} rounds of {args.jobs} jobs per case, order rotated each round\n")
    with private_redis() as port:
        samples = asyncio.run(measure(port, args.rounds, args.jobs, names))
    report(samples, names, args.markdown)
    if {"arq", "taskiq"} <= set(names):
        report_hooks(hook_costs(2_000 if args.quick else 20_000), samples, args.markdown)


if __name__ == "__main__":
    main()
