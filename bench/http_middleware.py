"""What the request-ID middleware costs a real aiohttp server, measured from outside with wrk.

Every variant is the same hello-world app (``web.Response(text="Hello")``) in a server process
of its own, started by this file (``python bench/http_middleware.py serve --variant NAME``) on
127.0.0.1 and a free port, with ``AppRunner(app, access_log=None)`` + ``TCPSite`` (no
``web.run_app``):

1. ``bare``: no middleware, the floor every ratio is taken against.
2. ``noop middleware``: one middleware that only awaits the handler. A reference, not in the
   issue: with any middleware at all aiohttp runs its middleware chain (and its own
   ``_fix_request_current_app`` middleware) on every request, a cost no middleware can avoid.
3. ``aiotask-context``: aiotask-context 0.6.1's README middleware as a new-style middleware
   (``set`` X-Request-ID from the header, else ``str(uuid.uuid4())``, evaluated on every
   request as in the README; then ``get`` it onto the response), with its ``task_factory`` on
   the loop. It only works on Python 3.11 with asyncio: aiohttp 3.14 on 3.12+ builds request
   tasks with ``asyncio.Task`` directly, bypassing the factory (``AttributeError``), and
   uvloop passes the factory ``context=`` (``TypeError``). There it is skipped, with the error.
4. ``aioreqctx``: ``middlewares=[aioreqctx.request_id_middleware]``, no incoming ID.
5. ``aioreqctx+header``: the same, each request carrying a valid ``X-Request-ID`` (wrk ``-H``).
6. ``aioreqctx setup+server_timing``: ``aioreqctx.setup(app, server_timing=True)``.
7. ``aioreqctx setup``: ``aioreqctx.setup(app)``, the base of the variants below (their ratios
   and targets are to it, not to bare).
8. ``aioreqctx setup+registry``: ``setup(app, observers=(aioreqctx.InFlightRegistry(),))``.
9. ``aioreqctx setup+events@WARNING``: ``setup(app, observers=(RequestEvents(...),))`` with
   its logger at WARNING, so every 200's ``request_started``/``request_finished`` is filtered
   out: what leaving request events on costs when INFO is off.
10. ``setup+NoopCollector`` (``collector=NoopCollector()``, <= 1.03x) and
    ``setup+LoggingCollector@WARNING`` (a ``LoggingCollector`` whose logger is at WARNING, so
    every lifecycle event is filtered out; <= 1.05x).

Method. The servers run on one core (``taskset -c 0``), wrk on the other (``taskset -c 1``,
``-t1 -c16 -d2s --latency``), so the server is the bottleneck and its CPU time is what a
request costs. Each server first answers one probe request, checked for the headers its
variant must add; one that fails is skipped, with the server's last log line. Then every round
runs wrk once against every server, one at a time, in an order rotated each round (round 0
warms up and is discarded), and reads the server's CPU time (the time on CPU of its threads, in
``/proc/<pid>/task/*/schedstat``) before and after. Per variant and round: CPU per request,
requests/s, p50 and p99 latency, each also as a ratio to ``bare`` *in the same round*. The
table gives medians over rounds, and the min-max of the CPU ratio: on a shared machine one
run's CPU per request moves by 10-30%, so read a ratio to within its spread. Targets (PASS/FAIL
on the median CPU ratio): ``aioreqctx`` <= 1.05x and ``aioreqctx setup+server_timing`` <= 1.10x
bare; about 1.38x is expected for aiotask-context. Verdicts are printed, not an exit status.

With ``--together`` every round instead loads all servers at once, each with its own wrk (all
wrk on the one core, all servers on the other), and CPU time comes from each server's
``/proc/<pid>/task/*/schedstat`` (ns). Every server then goes through the same slow and fast
spells of the machine; two identical bare servers read within 2% of each other this way, so
this is the method bench/RESULTS.md reports (latencies are then shared-core latencies, and
only their ratios mean anything).

Run it with ``make bench-http`` (installs wrk if needed, then runs
``python bench/http_middleware.py``: 12 rounds, about 3 minutes), ``--quick`` for a ~20 s smoke
run, ``--loop uvloop`` for the servers' event loop, ``--only NAME ...`` for bare, those variants
and their bases, ``--markdown`` for bench/RESULTS.md. Linux
only (``/proc``, ``taskset``), two cores or more. A server also exits when its stdin closes, so
even a driver killed with SIGKILL leaves none behind. The file is not called ``http.py``: run
as a script, every file in bench/ is importable by its bare name, and an ``http.py`` there would
shadow the standard library's ``http`` (which aiohttp imports) for ``bench/tasks.py`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import logging
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from functools import partial
from importlib.metadata import version
from typing import IO, Any

import aiotask_context
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler
from tasks import Bound, expected, render, target  # bench/tasks.py: a script sees its folder

import aioreqctx

HOST = "127.0.0.1"
KEY = "X-Request-ID"
INCOMING_ID = "7d1f0c52-3a6e-4b8f-9c2d-51e0a4b6f389"
READY = "listening on port"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello")


@web.middleware
async def noop_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What any middleware costs: aiohttp then runs its middleware chain on every request."""
    return await handler(request)


@web.middleware
async def aiotask_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiotask-context's README middleware, new-style; as there, ``uuid4`` runs on every request."""
    aiotask_context.set(KEY, request.headers.get(KEY, str(uuid.uuid4())))
    response = await handler(request)
    response.headers[KEY] = aiotask_context.get(KEY)
    return response


def hello_app(*middlewares: Any) -> web.Application:
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/", hello)
    return app


def hello_app_with_setup(**options: Any) -> web.Application:
    app = hello_app()
    aioreqctx.setup(app, **options)
    return app


def hello_app_with_registry() -> web.Application:
    return hello_app_with_setup(observers=(aioreqctx.InFlightRegistry(),))


def hello_app_with_filtered_events() -> web.Application:
    logger = logging.getLogger("bench.request_events")
    logger.setLevel(logging.WARNING)
    return hello_app_with_setup(observers=(aioreqctx.RequestEvents(logger=logger),))


def hello_app_with_filtered_logging() -> web.Application:
    """Lifecycle events go to a LoggingCollector whose logger is at WARNING: all filtered."""
    logging.getLogger("aioreqctx.lifecycle").setLevel(logging.WARNING)
    return hello_app_with_setup(collector=aioreqctx.LoggingCollector())


@dataclass(frozen=True)
class Variant:
    """A server's app (and loop task factory), what wrk sends it, what its responses must carry.

    ``expect`` maps response headers to their required value, or to None for "any value".
    """

    name: str
    app: Callable[[], web.Application]
    send: tuple[tuple[str, str], ...] = ()
    expect: tuple[tuple[str, str | None], ...] = ()
    task_factory: Callable[..., Any] | None = None
    bound: Bound | None = None  # for its CPU per request relative to ``base``
    base: str = "bare"  # another variant's name: the bound is then judged against it
    known_failure: str = ""  # why its probe may fail, shown with the failure


BARE = Variant("bare", hello_app)
VARIANTS = (
    BARE,
    Variant("noop middleware", partial(hello_app, noop_middleware)),
    Variant(
        "aiotask-context",
        partial(hello_app, aiotask_context_middleware),
        expect=((KEY, None),),
        task_factory=aiotask_context.task_factory,
        bound=expected(1.30, 1.46),
        known_failure="its factory must build every task, but aiohttp 3.14 on Python 3.12+ "
        "bypasses it, and uvloop passes it context=, which it rejects",
    ),
    Variant(
        "aioreqctx",
        partial(hello_app, aioreqctx.request_id_middleware),
        expect=((KEY, None),),
        bound=target(1.05),
    ),
    Variant(
        "aioreqctx+header",
        partial(hello_app, aioreqctx.request_id_middleware),
        send=((KEY, INCOMING_ID),),
        expect=((KEY, INCOMING_ID),),
    ),
    Variant(
        "aioreqctx setup+server_timing",
        partial(hello_app_with_setup, server_timing=True),
        expect=((KEY, None), ("Server-Timing", None)),
        bound=target(1.10),
    ),
    Variant("aioreqctx setup", hello_app_with_setup, expect=((KEY, None),)),
    Variant(
        "aioreqctx setup+registry",
        hello_app_with_registry,
        expect=((KEY, None),),
        base="aioreqctx setup",
    ),
    Variant(
        "aioreqctx setup+events@WARNING",
        hello_app_with_filtered_events,
        expect=((KEY, None),),
        base="aioreqctx setup",
    ),
    Variant(
        "setup+NoopCollector",
        partial(hello_app_with_setup, collector=aioreqctx.NoopCollector()),
        expect=((KEY, None),),
        bound=target(1.03),
        base="aioreqctx setup",
    ),
    Variant(
        "setup+LoggingCollector@WARNING",
        hello_app_with_filtered_logging,
        expect=((KEY, None),),
        bound=target(1.05),
        base="aioreqctx setup",
    ),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}


# The server side: ``python bench/http_middleware.py serve --variant NAME``.


def serve(variant: Variant, port: int, loop_kind: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
        runner.run(serve_until_stopped(variant, port))


async def serve_until_stopped(variant: Variant, port: int) -> None:
    """Serve until SIGTERM, SIGINT or EOF on stdin; print the bound port once listening.

    The task factory is installed here, in the running main task, because ``asyncio.Runner``
    passes ``context=`` to the factory for its main task and aiotask-context's rejects it.
    """
    loop = asyncio.get_running_loop()
    loop.set_task_factory(variant.task_factory)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(sys.stdin.fileno(), partial(stop_at_eof, sys.stdin.fileno(), stop))
    runner = web.AppRunner(variant.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
        print(f"{READY} {runner.addresses[0][1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def stop_at_eof(fd: int, stop: asyncio.Event) -> None:
    """Stop when the driver's end of the stdin pipe closes, however the driver ended."""
    if not os.read(fd, 4096):
        asyncio.get_running_loop().remove_reader(fd)
        stop.set()


# The driver side: servers, probes, wrk runs, rounds.


@dataclass(frozen=True)
class Settings:
    rounds: int  # timed rounds, after one warm-up round
    seconds: int  # per wrk run
    connections: int


QUICK = Settings(rounds=2, seconds=1, connections=16)
THOROUGH = Settings(rounds=12, seconds=2, connections=16)


@dataclass(frozen=True)
class Server:
    variant: Variant
    process: subprocess.Popen[str]
    log: IO[str]  # its stderr
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


@contextlib.contextmanager
def running_server(variant: Variant, loop_kind: str, cpu: int) -> Iterator[Server]:
    """A server process for ``variant`` pinned to ``cpu``, on a free port; always stopped."""
    command = ["taskset", "-c", str(cpu), sys.executable, __file__, "serve"]
    command += ["--variant", variant.name, "--loop", loop_kind, "--port", "0"]
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            yield Server(variant, process, log, wait_for_port(variant, process, log))
        finally:
            stop(process)


def wait_for_port(
    variant: Variant, process: subprocess.Popen[str], log: IO[str], timeout: float = 30.0
) -> int:
    """The port from the server's ready line; its last log line if it dies or hangs instead."""
    assert process.stdout is not None
    if select.select([process.stdout], [], [], timeout)[0]:
        line = process.stdout.readline()
        if line.startswith(READY):
            return int(line.split()[-1])
    raise RuntimeError(f"server {variant.name!r} did not start: {last_line(log)}")


def last_line(log: IO[str]) -> str:
    """The last line a server logged, which is where an error's message is."""
    log.seek(0)
    lines = [line.strip() for line in log if line.strip()]
    return lines[-1] if lines else "(no output)"


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the server shuts down cleanly), SIGKILL if that takes more than 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def probe(server: Server) -> str | None:
    """Why the variant cannot be measured (a bad status or header), or None if it works."""
    request = urllib.request.Request(server.url, headers=dict(server.variant.send))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body, headers = response.read(), response.headers
    except urllib.error.HTTPError as error:
        failure = f"HTTP {error.code}"
    except (OSError, http.client.HTTPException) as error:
        failure = f"{type(error).__name__}: {error}"
    else:
        return check_response(server.variant, body, headers)
    note = f" ({server.variant.known_failure})" if server.variant.known_failure else ""
    return f"{failure}; server log: {last_line(server.log)}{note}"


def check_response(variant: Variant, body: bytes, headers: Message) -> str | None:
    if body != b"Hello":
        return f"unexpected body {body[:40]!r}"
    for name, value in variant.expect:
        if headers.get(name) is None or value not in (None, headers[name]):
            return f"response header {name}: {headers.get(name)!r}, expected {value or 'any'}"
    return None


@dataclass(frozen=True)
class Sample:
    """One wrk run against one server: per request CPU seconds, and what wrk saw."""

    cpu: float
    rps: float
    p50: float
    p99: float

    def fields(self) -> tuple[float, float, float, float]:
        return (self.cpu, self.rps, self.p50, self.p99)

    def ratios(self, base: Sample) -> Sample:
        return Sample(*(a / b for a, b in zip(self.fields(), base.fields(), strict=True)))

    @staticmethod
    def median(samples: list[Sample]) -> Sample:
        """Each field's median on its own (so not necessarily one round's sample)."""
        return Sample(*map(statistics.median, zip(*(s.fields() for s in samples), strict=True)))


TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid``: the first field of each /proc/.../schedstat (ns)."""
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(FileNotFoundError),
            open(f"/proc/{pid}/task/{thread}/schedstat") as f,
        ):
            total += int(f.read().split()[0])
    return total / 1e9


def wrk_command(server: Server, settings: Settings, cpu: int) -> list[str]:
    command = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{settings.connections}"]
    command += [f"-d{settings.seconds}s", "--latency"]
    for name, value in server.variant.send:
        command += ["-H", f"{name}: {value}"]
    return [*command, server.url]


def measure(server: Server, settings: Settings, cpu: int) -> Sample:
    """Load ``server`` with wrk on ``cpu`` for one run; its CPU time is read around the run."""
    before = cpu_seconds(server.process.pid)
    command = wrk_command(server, settings, cpu)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return sample_of(server, output, cpu_seconds(server.process.pid) - before)


def measure_together(servers: list[Server], settings: Settings, cpu: int) -> list[Sample]:
    """Load every server at once, each with its own wrk (all on ``cpu``), for one run.

    Every server then lives through the same slow and fast spells of the shared machine, which
    the one-at-a-time runs cannot promise: two identical bare servers read within 2% of each
    other this way, against 0.66-1.96x when run one after the other.
    """
    before = [cpu_seconds(server.process.pid) for server in servers]
    runs = [
        subprocess.Popen(wrk_command(server, settings, cpu), stdout=subprocess.PIPE, text=True)
        for server in servers
    ]
    outputs = [run.communicate()[0] for run in runs]
    used = [cpu_seconds(server.process.pid) - b for server, b in zip(servers, before, strict=True)]
    if any(run.returncode for run in runs):
        raise RuntimeError(f"wrk failed: {[run.returncode for run in runs]}")
    return [sample_of(*args) for args in zip(servers, outputs, used, strict=True)]


def sample_of(server: Server, output: str, cpu_used: float) -> Sample:
    requests = int(wrk_field(output, r"(\d+) requests in"))
    check_errors(server.variant, output)
    return Sample(
        cpu_used / requests,
        float(wrk_field(output, r"Requests/sec:\s+([\d.]+)")),
        wrk_time(output, "50%"),
        wrk_time(output, "99%"),
    )


def wrk_field(output: str, pattern: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"no {pattern!r} in wrk's output:\n{output}")
    return match.group(1)


def wrk_time(output: str, percentile: str) -> float:
    """Seconds for one line of wrk's latency distribution, such as ``99%    2.41ms``."""
    match = re.search(rf"^\s*{percentile}\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {percentile} latency in wrk's output:\n{output}")
    return float(match.group(1)) * TIME_UNITS[match.group(2)]


def check_errors(variant: Variant, output: str) -> None:
    """A run with failed requests measured something else than the variant: refuse it."""
    errors = re.findall(r"(Non-2xx or 3xx responses|Socket errors):\s*(.*)", output)
    if errors:
        raise RuntimeError(f"wrk against {variant.name!r}: {errors}")


def interleaved(
    servers: list[Server], settings: Settings, wrk_cpu: int, together: bool
) -> list[list[Sample]]:
    """Per timed round, one sample per server (in ``servers`` order). Round 0 warms up.

    One at a time, the order of runs rotates each round, spreading whatever one run leaves
    behind (a warmer cache, a busier neighbour on the shared cores) over all variants.
    """
    per_round = []
    for round_ in range(settings.rounds + 1):
        if together:
            samples = measure_together(servers, settings, wrk_cpu)
        else:
            shift = round_ % len(servers)
            order = servers[shift:] + servers[:shift]
            by_name = {server.variant.name: measure(server, settings, wrk_cpu) for server in order}
            samples = [by_name[server.variant.name] for server in servers]
        if round_:
            per_round.append(samples)
        print(f"round {round_}/{settings.rounds} done", file=sys.stderr, flush=True)
    return per_round


# Reporting.


COLUMNS = (
    *("variant", "CPU us/req", "req/s", "p50 ms", "p99 ms", "CPU vs bare", "CPU vs bare min-max"),
    *("req/s vs bare", "p50 vs bare", "p99 vs bare", "target", "verdict"),
)


def table(
    servers: list[Server], rounds: list[list[Sample]], skipped: dict[str, str], markdown: bool
) -> str:
    """A row per variant: medians over rounds of its values and of its ratios to bare.

    Ratios are taken round by round (a slow spell of the machine then weighs on both sides)
    and their median shown, not the ratio of the medians. Skipped variants say why.
    """
    rows = [list(COLUMNS)]
    columns = {server.variant.name: column for column, server in enumerate(servers)}
    for column, server in enumerate(servers):
        own = [samples[column] for samples in rounds]
        base = columns[server.variant.base]
        ratios = [samples[column].ratios(samples[base]) for samples in rounds]
        rows.append(row(server.variant, own, None if server.variant is BARE else ratios))
    for name, reason in skipped.items():
        bound = BY_NAME[name].bound
        rows.append([name, "skipped", *[""] * (len(COLUMNS) - 4), str(bound or ""), reason])
    return render(rows, markdown)


def row(variant: Variant, own: list[Sample], ratios: list[Sample] | None) -> list[str]:
    absolute = Sample.median(own)
    cells = [variant.name, f"{absolute.cpu * 1e6:.1f}", f"{absolute.rps:.0f}"]
    cells += [f"{absolute.p50 * 1e3:.2f}", f"{absolute.p99 * 1e3:.2f}"]
    if ratios is None:
        return cells + [""] * (len(COLUMNS) - len(cells))
    ratio = Sample.median(ratios)
    cpu = [sample.cpu for sample in ratios]
    cells += [f"{ratio.cpu:.3f}x", f"{min(cpu):.3f}-{max(cpu):.3f}x"]
    cells += [f"{value:.3f}x" for value in ratio.fields()[1:]]
    bound = variant.bound
    goal = "" if bound is None else str(bound)
    if variant.base != BARE.name:  # every ratio in this row is to that variant, not to bare
        goal = f"{goal} of {variant.base}" if goal else f"ratios to {variant.base}"
    return [*cells, goal, bound.verdict(ratio.cpu) if bound else ""]


def noise_note(rounds: list[list[Sample]]) -> str:
    """How much bare alone moved from round to round: the machine's noise, in one line."""
    cpu = sorted(samples[0].cpu * 1e6 for samples in rounds)
    return (
        f"bare's CPU per request over the {len(cpu)} rounds: min {cpu[0]:.1f}, "
        f"median {statistics.median(cpu):.1f}, max {cpu[-1]:.1f} us."
    )


def run(settings: Settings, args: argparse.Namespace) -> None:
    """Start every server (or bare, ``--only`` and their bases), drop those whose probe fails,
    measure the rest, print the table."""
    only = args.only and {*args.only, *(BY_NAME[name].base for name in args.only)}
    variants = [v for v in VARIANTS if not only or v is BARE or v.name in only]
    with contextlib.ExitStack() as stack:
        server_cpu, wrk_cpu = args.cpus
        started = [stack.enter_context(running_server(v, args.loop, server_cpu)) for v in variants]
        failures = {server.variant.name: probe(server) for server in started}
        skipped = {name: reason for name, reason in failures.items() if reason is not None}
        if BARE.name in skipped:
            raise RuntimeError(f"the bare server does not work: {skipped[BARE.name]}")
        servers = [server for server in started if server.variant.name not in skipped]
        assert servers[0].variant is BARE, "ratios are taken against the first column"
        rounds = interleaved(servers, settings, wrk_cpu, args.together)
    method = "all loaded at once" if args.together else "one at a time"
    heading = f"Python {platform.python_version()}, {args.loop} event loop, {method}"
    print(f"\n### {heading}\n" if args.markdown else f"\n=== {heading} ===\n")
    print(table(servers, rounds, skipped, args.markdown))
    print(f"\n{noise_note(rounds)}", flush=True)


def main() -> None:
    args = parse_args()
    if args.command == "serve":
        serve(BY_NAME[args.variant], args.port, args.loop)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (make bench-http does it)")
    settings = QUICK if args.quick else THOROUGH
    server_cpu, wrk_cpu = args.cpus
    os.sched_setaffinity(0, {wrk_cpu})  # the driver, mostly idle, stays off the server's core
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n\n"
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"aiohttp {version('aiohttp')}, aiotask-context {version('aiotask-context')}, "
        f"{wrk_version()}, {settings}, server on CPU {server_cpu}, wrk on CPU {wrk_cpu}; "
        "values and ratios to bare (same round) are medians over rounds."
    )
    run(settings, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command")
    server = commands.add_parser("serve", help="run one variant's server (the driver does this)")
    server.add_argument("--variant", choices=list(BY_NAME), required=True)
    server.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    for command in (parser, server):
        command.add_argument("--loop", choices=list(LOOPS), default="asyncio")
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run")
    parser.add_argument("--markdown", action="store_true", help="tables for bench/RESULTS.md")
    parser.add_argument(
        "--together", action="store_true", help="load all servers at once (less noisy)"
    )
    parser.add_argument("--cpus", type=int, nargs=2, default=(0, 1), help="server and wrk core")
    parser.add_argument(
        "--only", nargs="+", choices=list(BY_NAME), help="bare, these variants and their bases"
    )
    return parser.parse_args()


def wrk_version() -> str:
    output = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return " ".join((output.stdout or output.stderr).split()[:2])


if __name__ == "__main__":
    main()
