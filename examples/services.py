"""The demo's services: a gateway that calls a backend and queues jobs, and an arq worker.

    python examples/services.py backend --port 8081
    python examples/services.py gateway --port 8080 --backend-url http://127.0.0.1:8081 \
        [--redis /path/to/redis.sock]
    python examples/services.py worker --redis /path/to/redis.sock
    python examples/services.py serve --port 8080     # gateway and backend in one process

Each logs JSON lines to stdout through structlog, stdlib records included: the handlers' own
lines, the access log, request, lifecycle and job events. Every line of a request carries its
``request_id``, in every service, because the gateway's ``ClientSession`` sends it along and
the jobs it queues carry it to the worker (``aioreqctx.integrations.arq``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog
from aiohttp import ClientSession, web
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker

import aioreqctx as context
from aioreqctx.integrations.arq import ArqPropagation

log = structlog.get_logger("demo")
FACTORIES = ["task_factory", "copying_task_factory", "chainmap_task_factory"]


def where(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Which task or thread wrote the line: the point of the demo is that it does not matter."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None:
        event.setdefault("task", task.get_name())
    if threading.current_thread() is not threading.main_thread():
        event.setdefault("thread", threading.current_thread().name)
    event.setdefault("t", time.time())
    return event


SERVICE: ContextVar[str] = ContextVar("service")
"""The service a line comes from. ``make serve`` runs both in one process: each server's
connections inherit the value set while it started, so their lines carry its name."""


def configure_logging(service: str) -> None:
    """structlog renders every line as JSON, its own and those of stdlib loggers alike."""

    def service_name(
        logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event["service"] = SERVICE.get(service)  # a thread started without a context: default
        return event

    shared: list[Any] = [
        context.add_request_context,  # request_id, pushed fields, metadata, trace IDs
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        where,
        service_name,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[context.log.add_event_fields, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("aioreqctx.lifecycle").setLevel(logging.DEBUG)  # every lifecycle event
    logging.getLogger("arq").setLevel(logging.WARNING)  # the job events say it all


BACKEND: web.AppKey[ClientSession] = web.AppKey("backend", ClientSession)
QUEUE: web.AppKey[ArqRedis] = web.AppKey("queue", ArqRedis)
JOBS = ArqPropagation(context.JobPropagation(events=context.JobEvents()))
BACKGROUND: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("background", set[asyncio.Task[None]])


# The backend: answers lookups.


async def item(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await asyncio.sleep(0.01)
    log.info("item looked up", item=name)
    return web.json_response({"item": name, "request_id": context.get(context.REQUEST_ID)})


def lifecycle() -> context.LoggingCollector:
    return context.LoggingCollector(log_format="text", slow_request_threshold_ms=500)


def backend_app() -> web.Application:
    app = web.Application()
    context.setup(app, collector=lifecycle())
    app.router.add_get("/items/{name}", item)
    return app


# The gateway: every route calls the backend at least once.


async def fetch(request: web.Request, name: str) -> str:
    async with request.app[BACKEND].get(f"/items/{name}") as response:
        response.raise_for_status()
        found: str = (await response.json())["item"]
        return found


async def hello(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    log.info("greeting", name=name)
    found = await fetch(request, name)
    request_id = context.get(context.REQUEST_ID)
    return web.Response(text=f"Hello, {found}. Your request ID is {request_id}")


async def fail(request: web.Request) -> web.Response:
    await fetch(request, "payment")
    raise RuntimeError("the payment step failed")  # answered with a 500 carrying the ID


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)  # headers go out here, ID included (setup's signal)
    for part in range(3):
        await response.write(f"{await fetch(request, f'chunk-{part}')}\n".encode())
    await response.write_eof()
    return response


def blocking_report(parts: list[str]) -> str:
    log.info("report built in an executor thread", parts=len(parts))
    return ", ".join(parts)


async def audit() -> None:
    await asyncio.sleep(0.1)  # runs on after the response has gone
    log.info("audit written by a fire-and-forget task")


async def fanout(request: web.Request) -> web.Response:
    parts = await asyncio.gather(*(fetch(request, f"part-{n}") for n in range(3)))
    report = await context.run_in_executor(None, blocking_report, list(parts))
    task = asyncio.create_task(audit())
    request.app[BACKGROUND].add(task)
    task.add_done_callback(request.app[BACKGROUND].discard)
    return web.Response(text=report)


async def slow_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for part in range(20):
        await response.write(f"{await fetch(request, f'tick-{part}')}\n".encode())
        await asyncio.sleep(0.1)
    return response


async def order(request: web.Request) -> web.Response:
    found = await fetch(request, request.match_info["item"])
    job = await request.app[QUEUE].enqueue_job("send_receipt", found)
    log.info("receipt queued", job_id=None if job is None else job.job_id)
    return web.Response(text=f"Ordered {found}; the receipt is on its way")


def redis_settings(socket_path: str) -> RedisSettings:
    return RedisSettings(unix_socket_path=socket_path)


def gateway_app(backend_url: str, redis_socket: str = "") -> web.Application:
    app = web.Application()
    context.setup(app, collector=lifecycle(), request_events=True)
    app[BACKGROUND] = set()

    async def backend_session(app: web.Application) -> AsyncIterator[None]:
        # The ID (and a deadline, if the request has one) goes along on every call.
        async with ClientSession(
            backend_url, middlewares=(context.ClientPropagation(),)
        ) as session:
            app[BACKEND] = session
            yield
        await asyncio.gather(*app[BACKGROUND])

    app.cleanup_ctx.append(backend_session)
    if redis_socket:  # the job queue, when the demo could start a redis-server

        async def job_queue(app: web.Application) -> AsyncIterator[None]:
            app[QUEUE] = await create_pool(
                redis_settings(redis_socket),
                job_serializer=JOBS.serialize,
                job_deserializer=JOBS.deserialize,
            )
            yield
            await app[QUEUE].aclose()

        app.cleanup_ctx.append(job_queue)
        app.router.add_get("/order/{item}", order)
    app.router.add_get("/hello/{name}", hello)
    app.router.add_get("/fail", fail)
    app.router.add_get("/stream", stream)
    app.router.add_get("/fanout", fanout)
    app.router.add_get("/slow-stream", slow_stream)
    return app


# The worker: runs the jobs the gateway queues, under the ID of the request that queued them.


async def send_receipt(ctx: dict[str, Any], item: str) -> None:
    await asyncio.sleep(0.01)
    log.info("receipt sent", item=item)


async def work(socket_path: str) -> None:
    """Run an arq worker until SIGTERM or SIGINT."""
    worker = Worker(
        functions=JOBS.functions([send_receipt]),
        redis_settings=redis_settings(socket_path),
        job_serializer=JOBS.serialize,
        job_deserializer=JOBS.deserialize,
        poll_delay=0.05,
        handle_signals=False,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(worker.async_run())
    print(json.dumps({"event": "listening", "service": "worker", "port": 0}), flush=True)
    await stop.wait()
    await worker.close()
    await asyncio.gather(running, return_exceptions=True)  # cancelled by close()


# Running them.


async def serve(apps: list[tuple[str, Callable[[], web.Application], int]]) -> None:
    """Serve each app on 127.0.0.1 until SIGTERM or SIGINT, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runners = []
    try:
        for name, make_app, port in apps:
            access_log = context.web.access_logger_for(structlog.get_logger("aiohttp.access"))
            runner = web.AppRunner(make_app(), access_log_class=access_log)
            named = SERVICE.set(name)
            try:
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, "127.0.0.1", port).start()
            finally:
                SERVICE.reset(named)
            bound = runner.addresses[0][1]
            print(json.dumps({"event": "listening", "service": name, "port": bound}), flush=True)
        await stop.wait()
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("service", choices=["backend", "gateway", "worker", "serve"])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--backend-url", default="")
    parser.add_argument("--redis", default="", help="redis-server's unix socket: queue jobs")
    parser.add_argument("--factory", choices=FACTORIES, default="copying_task_factory")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    configure_logging(args.service)
    factory = getattr(context, args.factory)

    def new_loop() -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop
        if args.loop == "uvloop":
            import uvloop  # noqa: PLC0415 - optional extra

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        loop.set_task_factory(factory)
        return loop

    if args.service == "backend":
        apps = [("backend", backend_app, args.port)]
    elif args.service == "gateway":
        apps = [("gateway", lambda: gateway_app(args.backend_url, args.redis), args.port)]
    else:
        apps = serve_both(args.port)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(work(args.redis) if args.service == "worker" else serve(apps))


def serve_both(port: int) -> list[tuple[str, Callable[[], web.Application], int]]:
    """``make serve``: the backend on a fixed neighbour port, the gateway on ``port``."""
    backend_port = port + 1
    return [
        ("backend", backend_app, backend_port),
        ("gateway", lambda: gateway_app(f"http://127.0.0.1:{backend_port}"), port),
    ]


if __name__ == "__main__":
    main()
