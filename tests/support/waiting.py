"""Waiting in tests without depending on speed: poll with a generous deadline, leave on cue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from .http_helpers import get_request


async def until(condition: Callable[[], object], what: str, seconds: float = 20.0) -> None:
    """Return once ``condition()`` is true; fail naming ``what`` after ``seconds``."""
    deadline = perf_counter() + seconds
    while not condition():
        if perf_counter() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def abandon(port: int, path: str, entered: asyncio.Event, *headers: bytes) -> None:
    """GET ``path``, wait until its handler sets ``entered``, then close the connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get_request(path, *headers))
    await asyncio.wait_for(entered.wait(), 10)
    writer.close()
