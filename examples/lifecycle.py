"""Lifecycle events from a real server: two keep-alive requests, then a client that hangs up.

Run it with ``python examples/lifecycle.py``; it prints the LoggingCollector's JSON lines.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web

import aioreqctx


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def ticker(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(100):
        await response.write(b"tick\n")
        await asyncio.sleep(0.05)
    return response


async def main() -> None:
    app = web.Application()
    aioreqctx.setup(app, collector=aioreqctx.LoggingCollector(slow_request_threshold_ms=500))
    app.router.add_get("/", hello)
    app.router.add_get("/ticker", ticker)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-ID: first\r\n\r\n")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await reader.read()
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /ticker HTTP/1.1\r\nHost: x\r\nX-Request-ID: impatient\r\n\r\n")
        await reader.readuntil(b"tick")
        writer.close()  # hangs up mid-stream
        await asyncio.sleep(0.2)
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
    logging.getLogger("aioreqctx.lifecycle").setLevel(logging.DEBUG)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # its traceback for the hang-up
    logging.getLogger("aioreqctx").setLevel(logging.CRITICAL)
    asyncio.run(main())
