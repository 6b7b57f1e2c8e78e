"""Real handlers that keep what they wrote (lines, records, events)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


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
def attached(
    logger_name: str, handler: logging.Handler, level: int = logging.DEBUG
) -> Iterator[logging.Logger]:
    """``handler`` on a non-propagating logger at ``level`` for the block; the logger's level
    and propagation are as before afterwards, so later tests see the logging set-up they expect."""
    logger = logging.getLogger(logger_name)
    previous_level, propagate = logger.level, logger.propagate
    logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = propagate


def stream_lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@dataclass
class Captured:
    records: list[logging.LogRecord] = field(default_factory=list)
    stream: io.StringIO = field(default_factory=io.StringIO)

    def events(self) -> list[str]:
        return [getattr(record, "event", record.getMessage()) for record in self.records]

    def fields(self, event: str) -> list[dict[str, object]]:
        return [r.event_fields for r in self.records if getattr(r, "event", None) == event]  # type: ignore[attr-defined]

    def text(self) -> str:
        return self.stream.getvalue()


@contextmanager
def capture(name: str, level: int = logging.DEBUG) -> Iterator[Captured]:
    """Everything ``name`` logs at ``level`` or above while the block runs (not propagated)."""
    logger = logging.getLogger(name)
    saved = (logger.level, logger.propagate)
    captured = Captured()
    handler = logging.StreamHandler(captured.stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(lambda record: not captured.records.append(record))  # type: ignore[func-returns-value]
    logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield captured
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
