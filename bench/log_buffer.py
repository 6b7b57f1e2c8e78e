"""What a DEBUG call costs with per-request log buffering off and on, against plain logging at INFO.

Cases, each timed per ``log.debug("step %d", 7)`` call in one process, the logger at INFO with a
``StreamHandler`` on ``os.devnull``:

* stdlib: no ``LogBuffer`` anywhere (plain logging at INFO: the baseline); the hook installed
  (a ``LogBuffer`` is configured) but outside a buffering request; inside one while the line is
  kept (the record is built, frozen and stored); inside one whose buffer is full (counted, not
  built); and the logger at DEBUG writing every line (what "set DEBUG and filter later" costs).
* structlog: ``make_filtering_bound_logger(INFO)`` (the baseline), ``buffering_bound_logger(INFO)``
  outside a buffering request, inside one (kept), and inside a full one.

Every case runs once per round, in an order rotated each round, after a discarded warm-up round,
with the garbage collector off while timed; the min over rounds is the figure (noise only adds
time), the median is printed next to it. ``--quick`` is a smoke run for the tests.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib.metadata import version
from typing import Any

import structlog

from aioreqctx.log import LogBuffer, buffering_bound_logger
from aioreqctx.log.buffer import buffering, install_stdlib_hook

DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process

stdlib_log = logging.getLogger("bench.buffer")
stdlib_log.propagate = False
stdlib_log.addHandler(logging.StreamHandler(DEVNULL))


def structlog_logger(wrapper: type[structlog.typing.FilteringBoundLogger]) -> Any:
    return structlog.wrap_logger(
        structlog.PrintLogger(DEVNULL),
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        wrapper_class=wrapper,
    )


@contextmanager
def nothing() -> Iterator[None]:
    yield


@contextmanager
def hooked() -> Iterator[None]:
    uninstall = install_stdlib_hook()
    try:
        yield
    finally:
        uninstall()


@contextmanager
def in_request(calls: int, *, full: bool) -> Iterator[None]:
    """A buffering request with room for every call, or with none left."""
    config = LogBuffer(max_lines=1 if full else calls + 1, max_bytes_total=2**40)
    with buffering(config.open()):
        if full:
            stdlib_log.debug("fills the buffer")
        yield


@contextmanager
def at_debug() -> Iterator[None]:
    stdlib_log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        stdlib_log.setLevel(logging.INFO)


Around = Callable[[int], AbstractContextManager[None]]
Case = tuple[str, Callable[..., object], Around]


def cases() -> list[Case]:
    plain = structlog_logger(structlog.make_filtering_bound_logger(logging.INFO))
    kept = structlog_logger(buffering_bound_logger(logging.INFO))
    return [
        ("stdlib, no LogBuffer (plain logging at INFO)", stdlib_log.debug, lambda _: nothing()),
        ("stdlib, hook installed, outside a request", stdlib_log.debug, lambda _: hooked()),
        ("stdlib, buffering request, line kept", stdlib_log.debug, kept_in),
        ("stdlib, buffering request, buffer full", stdlib_log.debug, full_in),
        ("stdlib, logger at DEBUG, every line written", stdlib_log.debug, lambda _: at_debug()),
        ("structlog, make_filtering_bound_logger(INFO)", plain.debug, lambda _: nothing()),
        ("structlog, buffering_bound_logger, outside", kept.debug, lambda _: nothing()),
        ("structlog, buffering request, line kept", kept.debug, kept_in),
        ("structlog, buffering request, buffer full", kept.debug, full_in),
    ]


@contextmanager
def kept_in(calls: int) -> Iterator[None]:
    with hooked(), in_request(calls, full=False):
        yield


@contextmanager
def full_in(calls: int) -> Iterator[None]:
    with hooked(), in_request(calls, full=True):
        yield


def time_case(call: Callable[..., object], around: Around, calls: int) -> float:
    """Nanoseconds per call, one batch of ``calls`` inside ``around``."""
    with around(calls):
        gc.disable()
        try:
            elapsed = timeit.timeit(lambda: call("step %d", 7), number=calls)
        finally:
            gc.enable()
    return elapsed / calls * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, not a measurement")
    options = parser.parse_args()
    calls, rounds = (200, 2) if options.quick else (20_000, 7)
    stdlib_log.setLevel(logging.INFO)
    table = cases()
    times: dict[str, list[float]] = {name: [] for name, _, _ in table}
    for round_number in range(rounds + 1):
        shift = round_number % len(table)
        for name, call, around in table[shift:] + table[:shift]:
            figure = time_case(call, around, calls)
            if round_number:  # round 0 warms up
                times[name].append(figure)
    print(
        f"Python {platform.python_version()} ({sys.implementation.name}), "
        f"structlog {version('structlog')}; {calls} calls x {rounds} rounds\n"
    )
    print("| case | ns per debug call, min | median |")
    print("|---|---:|---:|")
    for name, figures in times.items():
        print(f"| {name} | {min(figures):,.0f} | {statistics.median(figures):,.0f} |")


if __name__ == "__main__":
    main()
