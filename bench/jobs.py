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

``python bench/jobs.py`` (a few minutes), ``--quick`` for a smoke run, ``--markdown`` for
bench/RESULTS.md. Verdicts against the 3% targets are printed, not turned into an exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from time import perf_counter
from typing import Any

import redis
from arq import Worker, create_pool
from arq.connections import ArqRedis, RedisSettings
from celery import Celery
from taskiq import AsyncBroker, TaskiqMiddleware
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
    """A redis-server for this run only; yields its port."""
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="aioreqctx-bench-") as directory:
        options = ["--bind", "127.0.0.1", "--port", str(port), "--dir", directory, "--save", ""]
        process = subprocess.Popen([executable, *options], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield port
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=10)


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
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"\ntarget: ratio <= {TARGET} for arq and taskiq; Celery's figure is reported only")


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


if __name__ == "__main__":
    main()
