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
4. ``aioreqctx``: ``middlewares=[aioreqctx.web.request_id_middleware]``, no incoming ID.
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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from functools import partial
from importlib.metadata import version
from typing import IO, Any

import aiohttp_request_id_logging
import aiotask_context
import sentry_sdk
import uvloop
from aiohttp import ClientSession, web
from aiohttp.typedefs import Handler
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from sentry_sdk.integrations.aiohttp import AioHttpIntegration
from sentry_sdk.transport import Transport
from tasks import Bound, expected, render, target  # bench/tasks.py: a script sees its folder

import aioreqctx
from aioreqctx._core.emit import REQUESTS_LOGGER

HOST = "127.0.0.1"
KEY = "X-Request-ID"
INCOMING_ID = "7d1f0c52-3a6e-4b8f-9c2d-51e0a4b6f389"
READY = "listening on port"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


# The handlers: hello world, and what a real service does per request.

HELLO = b"Hello"
HANDLER_LOGGER = "bench.handler"
BACKEND_URL: web.AppKey[str] = web.AppKey("bench.backend_url")
BACKEND_SESSION: web.AppKey[ClientSession] = web.AppKey("bench.backend_session")
REALISTIC_BODY = {"order": 7, "status": "shipped", "items": [{"sku": "A-1", "quantity": 2}]}
log = logging.getLogger(HANDLER_LOGGER)


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=HELLO)


async def realistic(request: web.Request) -> web.Response:
    """A JSON answer after two log lines, a child task and a call to a backend on 127.0.0.1."""
    log.info("order lookup for %s", request.path)
    audit = asyncio.create_task(record_audit(request.path))
    async with request.app[BACKEND_SESSION].get(request.app[BACKEND_URL]) as backend:
        stock = await backend.text()
    await audit
    log.info("order found, backend said %s", stock)
    return web.json_response({**REALISTIC_BODY, "stock": stock})


async def record_audit(path: str) -> str:
    await asyncio.sleep(0)
    return path


HANDLERS: dict[str, Handler] = {"hello": hello, "realistic": realistic}


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


def plain_app(handler: Handler, *middlewares: Any) -> web.Application:
    app = web.Application(middlewares=list(middlewares))  # OpenTelemetry inserts into it
    app.router.add_get("/", handler)
    return app


def app_with_setup(handler: Handler, **options: Any) -> web.Application:
    app = plain_app(handler)
    aioreqctx.setup(app, **options)
    return app


def filtered_logger(name: str) -> logging.Logger:
    """``name`` at WARNING: every INFO and DEBUG event it would write is filtered out."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    return logger


def app_with_filtered_events(handler: Handler) -> web.Application:
    logger = filtered_logger("bench.request_events")
    return app_with_setup(handler, observers=(aioreqctx.RequestEvents(logger=logger),))


def app_with_filtered_logging(handler: Handler) -> web.Application:
    """Lifecycle events go to a LoggingCollector whose logger is at WARNING: all filtered."""
    filtered_logger("aioreqctx.lifecycle")
    return app_with_setup(handler, collector=aioreqctx.LoggingCollector())


def app_with_issue_options(handler: Handler) -> web.Application:
    """Issue 13's full configuration: Server-Timing, request events (their logger filtering
    them out) and the in-flight registry."""
    filtered_logger(REQUESTS_LOGGER)
    options = {"server_timing": True, "request_events": True}
    return app_with_setup(handler, **options, registry=aioreqctx.InFlightRegistry())


def app_with_every_observer(handler: Handler) -> web.Application:
    """Every observer on and writing (to /dev/null): what bench/memory.py serves."""
    for name in (REQUESTS_LOGGER, "aioreqctx.lifecycle"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115 - for the process's life
    return app_with_setup(
        handler,
        server_timing=True,
        request_events=True,
        registry=aioreqctx.InFlightRegistry(),
        collector=aioreqctx.LoggingCollector(),
    )


def app_with_aril(handler: Handler, *, sentry_scope: bool = True) -> web.Application:
    """aiohttp-request-id-logging as its README sets it up: the record factory and its
    middleware. With sentry-sdk installed (as here) it opens a Sentry scope per request;
    ``sentry_scope=False`` is the same app as if sentry-sdk were not installed."""
    if not sentry_scope:
        # what its middleware reads when it is made (its docs: "monkeypatched in tests")
        aiohttp_request_id_logging.sentry_sdk = None  # type: ignore[attr-defined,assignment]
    aiohttp_request_id_logging.setup_logging_request_id_prefix()
    return plain_app(handler, aiohttp_request_id_logging.RequestIdMiddleware())


def app_with_opentelemetry(handler: Handler) -> web.Application:
    """OpenTelemetry's aiohttp-server instrumentation as its docs set it up (``instrument()``
    before the app is made), with an SDK tracer provider that has no span processor: every
    request gets a recorded span, exported nowhere."""
    AioHttpServerInstrumentor().instrument(tracer_provider=TracerProvider())
    return plain_app(handler)


def app_with_sentry(handler: Handler) -> web.Application:
    """Sentry's aiohttp integration as its docs set it up, tracing off, and a transport that
    drops every event (nothing leaves 127.0.0.1)."""

    class DroppingTransport(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            pass

    sentry_sdk.init(
        dsn="http://public@127.0.0.1:9/1",
        integrations=[AioHttpIntegration()],
        transport=DroppingTransport,
    )
    return plain_app(handler)


def aioreqctx_log_fields() -> None:
    """aioreqctx's log fields (its README): every record gets the request's ID."""
    aioreqctx.install_log_record_factory()


@dataclass(frozen=True)
class Variant:
    """A server's app (and loop task factory), what wrk sends it, what its responses must carry.

    ``expect`` maps response headers to their required value, or to None for "any value".
    ``logging_setup`` and ``client_middlewares`` are what the library's docs add for the log
    lines and the outgoing call of the realistic handler.
    """

    name: str
    app: Callable[[Handler], web.Application]
    send: tuple[tuple[str, str], ...] = ()
    expect: tuple[tuple[str, str | None], ...] = ()
    task_factory: Callable[..., Any] | None = None
    bound: Bound | None = None  # for its CPU per request relative to ``base``
    base: str = "bare"  # another variant's name: the bound is then judged against it
    known_failure: str = ""  # why its probe may fail, shown with the failure
    logging_setup: Callable[[], None] | None = None
    client_middlewares: tuple[Any, ...] = ()


NOOP = "noop middleware"
SETUP = "aioreqctx setup"
ID_HEADER = ((KEY, None),)
SEND_ID = ((KEY, INCOMING_ID),)


def ours(name: str, app: Callable[[Handler], web.Application], **fields: Any) -> Variant:
    """An aioreqctx variant: with the realistic handler, its log fields and client middleware."""
    client = (aioreqctx.ClientPropagation(),)
    return Variant(
        name, app, logging_setup=aioreqctx_log_fields, client_middlewares=client, **fields
    )


BARE = Variant("bare", plain_app)
BARE_AGAIN = "bare again (noise check)"
VARIANTS = (
    BARE,
    Variant(BARE_AGAIN, plain_app),
    Variant(NOOP, lambda handler: plain_app(handler, noop_middleware)),
    Variant(
        "aiotask-context",
        lambda handler: plain_app(handler, aiotask_context_middleware),
        expect=ID_HEADER,
        task_factory=aiotask_context.task_factory,
        bound=expected(1.30, 1.46),
        known_failure="its factory must build every task, but aiohttp 3.14 on Python 3.12+ "
        "bypasses it, and uvloop passes it context=, which it rejects",
    ),
    Variant(
        "aiohttp-request-id-logging",
        app_with_aril,
        expect=(("X-Request-Id", None),),
    ),
    Variant(
        "aiohttp-request-id-logging, no sentry-sdk",
        partial(app_with_aril, sentry_scope=False),
        expect=(("X-Request-Id", None),),
    ),
    Variant("opentelemetry aiohttp-server", app_with_opentelemetry),
    Variant("sentry AioHttpIntegration", app_with_sentry),
    ours(
        "aioreqctx",
        lambda handler: plain_app(handler, aioreqctx.web.request_id_middleware),
        expect=ID_HEADER,
        bound=target(1.05),
        base=NOOP,
    ),
    ours(
        "aioreqctx+header",
        lambda handler: plain_app(handler, aioreqctx.web.request_id_middleware),
        bound=target(1.05),
        base=NOOP,
        send=SEND_ID,
        expect=SEND_ID,
    ),
    ours(SETUP, app_with_setup, expect=ID_HEADER, bound=target(1.07), base=NOOP),
    ours(
        "aioreqctx setup+header",
        app_with_setup,
        bound=target(1.07),
        base=NOOP,
        send=SEND_ID,
        expect=SEND_ID,
    ),
    ours(
        "setup+server_timing+events@WARNING+registry",
        app_with_issue_options,
        expect=(*ID_HEADER, ("Server-Timing", None)),
        bound=target(1.15),
        base=NOOP,
    ),
    ours(
        "aioreqctx setup+server_timing",
        partial(app_with_setup, server_timing=True),
        expect=(*ID_HEADER, ("Server-Timing", None)),
        base=SETUP,
    ),
    ours(
        "aioreqctx setup+registry",
        lambda handler: app_with_setup(handler, registry=aioreqctx.InFlightRegistry()),
        expect=ID_HEADER,
        base=SETUP,
    ),
    ours(
        "aioreqctx setup+events@WARNING",
        app_with_filtered_events,
        expect=ID_HEADER,
        base=SETUP,
    ),
    ours(
        "setup+NoopCollector",
        partial(app_with_setup, collector=aioreqctx.events.NoopCollector()),
        expect=ID_HEADER,
        bound=target(1.03),
        base=SETUP,
    ),
    ours(
        "setup+LoggingCollector@WARNING",
        app_with_filtered_logging,
        expect=ID_HEADER,
        bound=target(1.05),
        base=SETUP,
    ),
)
EVERY_OBSERVER = ours("aioreqctx, every observer on", app_with_every_observer, expect=ID_HEADER)
"""Not in the table: the server bench/memory.py watches."""
BY_NAME = {variant.name: variant for variant in (*VARIANTS, EVERY_OBSERVER)}


# The server side: ``python bench/http_middleware.py serve --variant NAME``.


def serve(variant: Variant, port: int, loop_kind: str, handler: str, backend: str) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
        runner.run(serve_until_stopped(variant, port, handler, backend))


async def serve_until_stopped(variant: Variant, port: int, handler: str, backend: str) -> None:
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
    app = variant.app(HANDLERS[handler])
    if handler == "realistic":
        prepare_realistic(app, variant, backend)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, port).start()
        print(f"{READY} {runner.addresses[0][1]}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def prepare_realistic(app: web.Application, variant: Variant, backend: str) -> None:
    """The realistic handler's log lines (written, to /dev/null) and its backend session."""
    output = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    output.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(output)
    log.setLevel(logging.INFO)
    if variant.logging_setup is not None:
        variant.logging_setup()
    app[BACKEND_URL] = backend

    async def backend_session(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(middlewares=variant.client_middlewares) as session:
            app[BACKEND_SESSION] = session
            yield

    app.cleanup_ctx.append(backend_session)


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
THOROUGH = Settings(rounds=15, seconds=2, connections=16)


@dataclass(frozen=True)
class Server:
    variant: Variant
    process: subprocess.Popen[str]
    log: IO[str]  # its stderr
    port: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


THIS_PROGRAM = (sys.executable, __file__)
"""What runs ``serve`` by default: this file under this interpreter. bench/layouts.py also runs
another checkout's http_middleware.py, under the venv that has that checkout installed."""


@contextlib.contextmanager
def running_server(
    variant: Variant,
    loop_kind: str,
    cpu: int,
    handler: str = "hello",
    backend: str = "",
    *,
    program: tuple[str, ...] = THIS_PROGRAM,
) -> Iterator[Server]:
    """A server process for ``variant`` pinned to ``cpu``, on a free port; always stopped."""
    command = ["taskset", "-c", str(cpu), *program, "serve"]
    command += ["--variant", variant.name, "--loop", loop_kind, "--port", "0"]
    command += ["--handler", handler, "--backend", backend]
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
    if body != HELLO and not body.startswith(b'{"order": 7'):
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

    The order of runs (one at a time) or of wrk's starts (together) rotates each round,
    spreading whatever one run leaves behind (a warmer cache, a busier neighbour on the shared
    cores) over all variants.
    """
    per_round = []
    for round_ in range(settings.rounds + 1):
        shift = round_ % len(servers)
        order = servers[shift:] + servers[:shift]
        if together:
            rotated = measure_together(order, settings, wrk_cpu)
        else:
            rotated = [measure(server, settings, wrk_cpu) for server in order]
        samples = rotated[len(servers) - shift :] + rotated[: len(servers) - shift]
        if round_:
            per_round.append(samples)
        print(f"round {round_}/{settings.rounds} done", file=sys.stderr, flush=True)
    return per_round


# Reporting.


COLUMNS = (
    *("variant", "CPU us/req", "req/s", "p50 ms", "p99 ms"),
    *("CPU vs bare", "IQR", "min-max", "CPU vs noop", "IQR", "min-max"),
    *("target", "vs its base", "verdict"),
)


def spread(values: list[float]) -> tuple[str, str, str]:
    """Median, interquartile range and min-max of per-round ratios, as table cells."""
    ordered = sorted(values)
    low, high = (ordered[0], ordered[-1])
    q1, _, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else (low, low, low)
    median = statistics.median(ordered)
    return f"{median:.3f}x", f"{q1:.3f}-{q3:.3f}", f"{low:.3f}-{high:.3f}"


def table(
    servers: list[Server], rounds: list[list[Sample]], skipped: dict[str, str], markdown: bool
) -> str:
    """A row per variant: medians over rounds of its values and of its CPU ratios to bare, to
    the noop middleware and to its own base, with their spread.

    Ratios are taken round by round (a slow spell of the machine then weighs on both sides)
    and their median shown, not the ratio of the medians. Skipped variants say why.
    """
    rows = [list(COLUMNS)]
    columns = {server.variant.name: column for column, server in enumerate(servers)}

    def cpu_ratios(column: int, base: str) -> list[float] | None:
        if base not in columns or column == columns[base]:
            return None
        return [samples[column].cpu / samples[columns[base]].cpu for samples in rounds]

    for column, server in enumerate(servers):
        variant = server.variant
        absolute = Sample.median([samples[column] for samples in rounds])
        cells = [variant.name, f"{absolute.cpu * 1e6:.1f}", f"{absolute.rps:.0f}"]
        cells += [f"{absolute.p50 * 1e3:.2f}", f"{absolute.p99 * 1e3:.2f}"]
        for base in (BARE.name, NOOP):
            ratios = cpu_ratios(column, base)
            cells += ["", "", ""] if ratios is None else spread(ratios)
        own = cpu_ratios(column, variant.base)
        if variant.bound is None or own is None:
            goal = f"ratios to {variant.base}" if variant.base not in (BARE.name, NOOP) else ""
            cells += [goal, "" if own is None or not goal else spread(own)[0], ""]
        else:
            median, iqr, _ = spread(own)
            cells += [f"{variant.bound} of {variant.base}", f"{median} [{iqr}]"]
            cells.append(variant.bound.verdict(statistics.median(own)))
        rows.append(cells)
    for name, reason in skipped.items():
        bound = BY_NAME[name].bound
        rows.append([name, "skipped", *[""] * (len(COLUMNS) - 4), str(bound or ""), reason])
    return render(rows, markdown)


def noise_note(rounds: list[list[Sample]], servers: list[Server]) -> str:
    """How much bare moved from round to round, and how far the second bare server read from
    the first: the machine's noise, in one line."""
    cpu = sorted(samples[0].cpu * 1e6 for samples in rounds)
    note = (
        f"bare's CPU per request over the {len(cpu)} rounds: min {cpu[0]:.1f}, "
        f"median {statistics.median(cpu):.1f}, max {cpu[-1]:.1f} us."
    )
    again = [n for n, server in enumerate(servers) if server.variant.name == BARE_AGAIN]
    if again:
        twin = spread([samples[again[0]].cpu / samples[0].cpu for samples in rounds])
        note += f" The second bare server read {twin[0]} of the first (IQR {twin[1]})."
    return note


def run(settings: Settings, args: argparse.Namespace) -> None:
    """Start every server (or bare, ``--only`` and their bases), drop those whose probe fails,
    measure the rest, print the table."""
    only = args.only and {*args.only, NOOP, *(BY_NAME[name].base for name in args.only)}
    variants = [v for v in VARIANTS if not only or v is BARE or v.name in only]
    with contextlib.ExitStack() as stack:
        server_cpu, wrk_cpu = args.cpus
        backend = ""
        if args.handler == "realistic":  # on wrk's core: only the servers' CPU is measured
            backend = stack.enter_context(running_server(BARE, args.loop, wrk_cpu)).url
        started = [
            stack.enter_context(running_server(v, args.loop, server_cpu, args.handler, backend))
            for v in variants
        ]
        failures = {server.variant.name: probe(server) for server in started}
        skipped = {name: reason for name, reason in failures.items() if reason is not None}
        if BARE.name in skipped:
            raise RuntimeError(f"the bare server does not work: {skipped[BARE.name]}")
        servers = [server for server in started if server.variant.name not in skipped]
        assert servers[0].variant is BARE, "ratios are taken against the first column"
        rounds = interleaved(servers, settings, wrk_cpu, args.together)
    method = "all loaded at once" if args.together else "one at a time"
    heading = f"Python {platform.python_version()}, {args.loop} event loop, {method}"
    heading += f", {args.handler} handler"
    print(f"\n### {heading}\n" if args.markdown else f"\n=== {heading} ===\n")
    print(table(servers, rounds, skipped, args.markdown))
    print(f"\n{noise_note(rounds, servers)}", flush=True)


def main() -> None:
    args = parse_args()
    if args.command == "serve":
        serve(BY_NAME[args.variant], args.port, args.loop, args.handler, args.backend)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (make bench-http does it)")
    settings = QUICK if args.quick else THOROUGH
    server_cpu, wrk_cpu = args.cpus
    os.sched_setaffinity(0, {wrk_cpu})  # the driver, mostly idle, stays off the server's core
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n\n"
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"aiohttp {version('aiohttp')}, {peer_versions()}, "
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
    server.add_argument("--backend", default="", help="the realistic handler's backend URL")
    for command in (parser, server):
        command.add_argument("--loop", choices=list(LOOPS), default="asyncio")
        command.add_argument(
            "--handler",
            choices=list(HANDLERS),
            default="hello",
            help="hello world, or a JSON answer after two log lines, a child task and a call "
            "to a local backend",
        )
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


PEERS = (
    "aiotask-context",
    "aiohttp-request-id-logging",
    "opentelemetry-instrumentation-aiohttp-server",
    "opentelemetry-sdk",
    "sentry-sdk",
)


def peer_versions() -> str:
    return ", ".join(f"{name} {version(name)}" for name in PEERS)


def wrk_version() -> str:
    output = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return " ".join((output.stdout or output.stderr).split()[:2])


if __name__ == "__main__":
    main()
