"""Real handlers that keep what they wrote, and a wait for lines written after the response."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ListHandler(logging.Handler):
    """Keeps every formatted line and every record; formatting errors are kept too."""

    def __init__(self, fmt: str = "%(message)s") -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.errors: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
            self.records.append(record)
        except ValueError:  # logging's 'Formatting field not found in record'
            self.errors.append(record)


@contextmanager
def attached(logger_name: str, handler: logging.Handler) -> Iterator[logging.Logger]:
    """``handler`` on a non-propagating DEBUG logger for the block, removed afterwards."""
    logger = logging.getLogger(logger_name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)


def stream_lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition()``: the access log is written after the client has its reply."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
