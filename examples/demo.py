"""aioreqctx demo: a real aiohttp service on 127.0.0.1, request IDs in every task, thread and log.

The service is the aiotask-context README's X-Request-ID example with ``import aioreqctx as
context`` and ``context.setup(app)`` in place of its hand-written middleware. A scripted
client sends concurrent requests, with and without an ``X-Request-ID``, over keep-alive
connections; each handler fans out into child tasks, a fire-and-forget task and an executor
thread, and logs from all of them. The demo checks that every line of a request carries that
request's ID, prints a summary, and exits 0 (1 if any ID leaked or went missing).

    python examples/demo.py [--factory task_factory|copying_task_factory|chainmap_task_factory]
                            [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections import defaultdict

from aiohttp import ClientSession, web

import aioreqctx as context

log = logging.getLogger("demo")
FACTORIES = ["task_factory", "copying_task_factory", "chainmap_task_factory"]


class RequestIdFilter(logging.Filter):
    """Put the current request's ID on every record (attached to the handler, not a logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = context.get("X-Request-ID", "-")
        return True


class Recorder(logging.Handler):
    """Keeps (request ID, message) pairs so the demo can check them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, list[str]] = defaultdict(list)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines[getattr(record, "request_id", "-")].append(record.getMessage())


def blocking_lookup(user: str) -> str:
    log.info("executor thread: looking up %s", user)
    return user.upper()


async def child(step: str) -> None:
    await asyncio.sleep(0.01)
    log.info("child task: %s", step)


async def fire_and_forget(done: asyncio.Event) -> None:
    await asyncio.sleep(0.05)  # runs on after the response has gone
    log.info("background task: audit written")
    done.set()


async def handle(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    log.info("handler: hello %s", name)
    await asyncio.gather(child("fetch profile"), child("fetch orders"))
    shown = await context.run_in_executor(None, blocking_lookup, name)
    done = asyncio.Event()
    request.app[BACKGROUND].add(asyncio.create_task(fire_and_forget(done)))
    return web.Response(text=f"Hello, {shown}. Your request id is {context.get('X-Request-ID')}.")


BACKGROUND = web.AppKey("background", set[asyncio.Task[None]])
LINES_PER_REQUEST = 5  # handler, two child tasks, the executor thread, the background task


async def main(recorder: Recorder) -> int:
    app = web.Application()
    context.setup(app)  # the middleware, plus the response header on every path
    app[BACKGROUND] = set()
    app.router.add_get("/{name}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"service listening on http://127.0.0.1:{port}\n")
    concurrent = [("ana", "demo-given-1"), ("ben", None), ("cy", "demo-given-2"), ("dee", None)]
    keep_alive = [("eve", None), ("fay", "demo-given-3")]
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as session:

            async def call(name: str, rid: str | None) -> tuple[str, str]:
                headers = {"X-Request-ID": rid} if rid else {}
                async with session.get(f"/{name}", headers=headers) as response:
                    return response.headers["X-Request-ID"], await response.text()

            replies = await asyncio.gather(*(call(name, rid) for name, rid in concurrent))
            # One after the other: these reuse the pooled keep-alive connections.
            replies += [await call(name, rid) for name, rid in keep_alive]
            await asyncio.gather(*app[BACKGROUND])
    finally:
        await runner.cleanup()
    return report(concurrent + keep_alive, replies, recorder)


def report(
    sent: list[tuple[str, str | None]], replies: list[tuple[str, str]], recorder: Recorder
) -> int:
    print(f"\n{'request ID':38} {'sent ID?':9} {'lines':>5}  sources that logged it")
    healthy = True
    for (_name, given), (rid, text) in zip(sent, replies, strict=True):
        lines = recorder.lines.get(rid, [])
        sources = sorted({line.split(":")[0] for line in lines})
        complete = (
            len(lines) == LINES_PER_REQUEST and rid in text and (given is None or rid == given)
        )
        healthy &= complete
        flag = "ok" if complete else "MISSING OR LEAKED"
        print(f"{rid:38} {'yes' if given else 'no':9} {len(lines):>5}  {', '.join(sources)} {flag}")
    stray = recorder.lines.get("-", [])
    healthy &= not stray
    print(f"\nlog lines without a request ID: {len(stray)}")
    print("every request's lines carried its own ID" if healthy else "FAILED")
    return 0 if healthy else 1


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factory", choices=FACTORIES, default="copying_task_factory")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    recorder = Recorder()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(request_id)-36s | %(threadName)-22s | %(message)s"))
    for handler in (console, recorder):
        handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=logging.INFO, handlers=[console, recorder])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    def new_loop() -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop
        if args.loop == "uvloop":
            import uvloop  # noqa: PLC0415 - optional extra

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        loop.set_task_factory(getattr(context, args.factory))
        return loop

    print(f"aioreqctx demo: {args.factory} on {args.loop}, Python {sys.version.split()[0]}")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main(recorder))


if __name__ == "__main__":
    sys.exit(run())
