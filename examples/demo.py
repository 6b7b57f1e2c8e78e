"""aioreqctx demo: two aiohttp services and a job worker, one request ID across all of them.

``examples/services.py`` runs a gateway, a backend and an arq worker, each in a process of its
own, logging JSON lines to stdout (structlog; the access log, lifecycle and job events too). The
gateway calls the backend through a ``ClientSession`` that carries the request's ID, and queues
jobs that carry it to the worker. This script starts a private redis-server (on a unix socket
in a temporary directory) and the services, sends one request per scenario (no ID, a valid ID,
an invalid one, a 500, a streaming response, a fan-out into child tasks and an executor thread,
a client that hangs up early, a queued job), stops everything, and prints every line of every
service grouped under each request's ID, then a summary. It exits 0 only if every scenario's ID
is in the lines of each service it involves and each scenario behaved as it should; nothing is
left running. Without redis-server it says so and runs the other scenarios.

    python examples/demo.py [--factory task_factory|copying_task_factory|chainmap_task_factory]
                            [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout
from mirakuru import UnixSocketExecutor

SERVICES = Path(__file__).with_name("services.py")
FACTORIES = ["task_factory", "copying_task_factory", "chainmap_task_factory"]
HEADER = "X-Request-ID"
Line = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    sent_id: str | None = None
    expected_status: int | None = 200  # None: the client hangs up before the status matters
    hang_up: bool = False
    services: frozenset[str] = frozenset({"gateway", "backend"})


SCENARIOS = [
    Scenario("no ID sent", "/hello/ana"),
    Scenario("valid ID", "/hello/ben", sent_id="demo-valid-7f3a"),
    Scenario("invalid ID", "/hello/cy", sent_id="bad id; drop table"),
    Scenario("handler fails", "/fail", expected_status=500),
    Scenario("streaming", "/stream"),
    Scenario("fan-out", "/fanout"),
    Scenario("client hangs up", "/slow-stream", expected_status=None, hang_up=True),
]
JOB_SCENARIO = Scenario("job", "/order/book", services=frozenset({"gateway", "backend", "worker"}))


@dataclass
class Outcome:
    scenario: Scenario
    request_id: str
    status: int | None
    duration_ms: float


@dataclass
class Service:
    """A service process and every JSON line it printed (read by a thread as they come)."""

    name: str
    process: subprocess.Popen[str]
    lines: list[Line] = field(default_factory=list)
    port: int | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"event": raw.rstrip(), "unparsed": True}
            line["service"] = self.name
            if line.get("event") == "listening":
                self.port = int(line["port"])
                self.ready.set()
            self.lines.append(line)
        self.ready.set()  # the process ended: stop waiting either way


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A private redis-server on a unix socket; yields its path, or None if not installed.

    mirakuru starts it, waits until the socket accepts connections and stops it afterwards.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="aioreqctx-demo-") as directory:
        path = str(Path(directory, "redis.sock"))
        command = [executable, "--port", "0", "--unixsocket", path, "--dir", directory,
                   "--save", "", "--appendonly", "no", "--logfile", ""]  # fmt: skip
        with UnixSocketExecutor(command, path, timeout=10, stdout=subprocess.DEVNULL):
            yield path


@contextmanager
def service(name: str, *args: str) -> Iterator[Service]:
    """Start ``services.py NAME ARGS``; always stopped (SIGTERM, then SIGKILL after 10 s)."""
    command = [sys.executable, str(SERVICES), name, "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    running = Service(name, process)
    reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        if not running.ready.wait(30) or running.port is None:
            raise RuntimeError(f"{name} did not start: {running.lines[-3:]}")
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)


async def send(base_url: str, scenario: Scenario) -> Outcome:
    """One request as an outside client would send it (no aioreqctx on this side)."""
    headers = {HEADER: scenario.sent_id} if scenario.sent_id else {}
    started = time.perf_counter()
    async with (
        ClientSession(base_url, timeout=ClientTimeout(total=15)) as session,
        session.get(scenario.path, headers=headers) as response,
    ):
        if scenario.hang_up:
            await response.content.readany()  # the first chunk, then close the connection
            response.close()
            status = None
        else:
            await response.read()
            status = response.status
        return Outcome(
            scenario, response.headers[HEADER], status, (time.perf_counter() - started) * 1000
        )


def grouped(services: list[Service]) -> dict[str, list[Line]]:
    by_id: dict[str, list[Line]] = defaultdict(list)
    for line in sorted((line for s in services for line in s.lines), key=lambda x: x.get("t", 0)):
        by_id[str(line.get("request_id", "-"))].append(line)
    return by_id


SHOWN_FIELDS = (
    "method",
    "path",
    "status",
    "job_name",
    "outcome",
    "duration_ms",
    "bytes",
    "reason",
    "during_streaming",
)


def describe(line: Line) -> str:
    def shown(value: Any) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    extras = " ".join(f"{key}={shown(line[key])}" for key in SHOWN_FIELDS if line.get(key))
    source = str(line.get("logger", "")).rpartition(".")[2]  # requests, lifecycle, access, demo
    where = line.get("thread") or line.get("task") or "callback"
    return f"  {line['service']:8} {source:9} {line['event']:20} {extras} [{where}]"


def problems(outcome: Outcome, lines: list[Line]) -> list[str]:
    """What went wrong for this scenario, judged from the response and both services' logs."""
    found = []
    scenario = outcome.scenario
    services = {line["service"] for line in lines}
    if services != scenario.services:
        found.append(f"ID seen only in {sorted(services)}")
    if scenario.expected_status is not None and outcome.status != scenario.expected_status:
        found.append(f"status {outcome.status}, expected {scenario.expected_status}")
    if scenario.name == "valid ID" and outcome.request_id != scenario.sent_id:
        found.append("the valid incoming ID was not kept")
    if scenario.name == "invalid ID" and outcome.request_id == scenario.sent_id:
        found.append("the invalid incoming ID was echoed")
    events = {line["event"] for line in lines}
    if scenario.hang_up and "client_disconnected" not in events:
        found.append("no client_disconnected event")
    if scenario.name == "fan-out" and not any("thread" in line for line in lines):
        found.append("no line from the executor thread")
    if scenario is JOB_SCENARIO and "job_finished" not in events:
        found.append("the worker did not finish the job")
    return found


def report(outcomes: list[Outcome], services: list[Service]) -> int:
    by_id = grouped(services)
    failures = 0
    rows = []
    for outcome in outcomes:
        lines = by_id.get(outcome.request_id, [])
        print(f"\n== {outcome.scenario.name}: {outcome.request_id}")
        for line in lines:
            print(describe(line))
        found = problems(outcome, lines)
        failures += bool(found)
        for problem in found:
            print(f"  PROBLEM: {problem}")
        touched = ", ".join(sorted({line["service"] for line in lines})) or "-"
        lifecycle = sum(1 for line in lines if line.get("logger") == "aioreqctx.lifecycle")
        status = "hung up" if outcome.status is None else str(outcome.status)
        verdict = "FAIL" if found else "ok"
        row = (outcome.scenario.name, status, f"{outcome.duration_ms:.0f}", touched, len(lines))
        rows.append((*row, lifecycle, verdict))
    print_table(rows)
    exit_codes = {s.name: s.process.returncode for s in services}
    if any(exit_codes.values()):
        print(f"a service did not exit cleanly: {exit_codes}")
        failures += 1
    print("\none ID tied the services' lines together in every scenario" if not failures else "")
    return 1 if failures else 0


def print_table(rows: list[tuple[Any, ...]]) -> None:
    heading = ("scenario", "status", "ms", "services", "lines", "lifecycle", "check")
    widths = [max(len(str(row[i])) for row in [heading, *rows]) for i in range(len(heading))]
    print()
    for row in [heading, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factory", choices=FACTORIES, default="copying_task_factory")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    options = ["--factory", args.factory, "--loop", args.loop]
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        scenarios = [*SCENARIOS, JOB_SCENARIO] if redis else SCENARIOS
        if redis is None:
            print("redis-server is not installed (apt-get install redis-server): no job scenario")
        backend = stack.enter_context(service("backend", *options))
        backend_url = f"http://127.0.0.1:{backend.port}"
        queue = ["--redis", redis] if redis else []
        gateway = stack.enter_context(
            service("gateway", "--backend-url", backend_url, *queue, *options)
        )
        services = [gateway, backend]
        if redis:
            services.append(stack.enter_context(service("worker", *queue, *options)))
        print(f"backend on {backend_url}, gateway on http://127.0.0.1:{gateway.port}")

        async def send_all() -> list[Outcome]:
            return [await send(f"http://127.0.0.1:{gateway.port}", s) for s in scenarios]

        outcomes = asyncio.run(send_all())
        time.sleep(0.5)  # let fire-and-forget work, queued jobs and the last access lines finish
        wait_for_jobs(services[2:], deadline=time.monotonic() + 10)
    return report(outcomes, services)


def wait_for_jobs(workers: list[Service], deadline: float) -> None:
    """Give a worker that has not finished its job yet a little longer."""
    for worker in workers:
        while time.monotonic() < deadline and not any(
            line.get("event") == "job_finished" for line in worker.lines
        ):
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(run())
