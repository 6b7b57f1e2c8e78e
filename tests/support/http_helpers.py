"""A real aiohttp server on 127.0.0.1 and a raw-socket HTTP/1.1 client for the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@asynccontextmanager
async def serving(app: web.Application, **runner_options: object) -> AsyncIterator[int]:
    """Serve ``app`` on an ephemeral 127.0.0.1 port; yields the port."""
    runner = web.AppRunner(app, **runner_options)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """One HTTP/1.1 response (Content-Length or chunked) from ``reader``."""
    status_line = await reader.readline()
    response = RawResponse(status=int(status_line.split()[1]))
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        response.headers.append((key.strip(), value.strip()))
    if response.all("Transfer-Encoding") == ["chunked"]:
        while size := int((await reader.readline()).strip(), 16):
            response.body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    elif lengths := response.all("Content-Length"):
        response.body = await reader.readexactly(int(lengths[0]))
    return response


async def raw_exchange(port: int, *requests: bytes) -> list[RawResponse]:
    """Send ``requests`` on one connection in a single write (pipelined); read every reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(requests))
        await writer.drain()
        return [await asyncio.wait_for(read_response(reader), 10) for _ in requests]
    finally:
        writer.close()


def get_request(path: str, *headers: bytes) -> bytes:
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"
