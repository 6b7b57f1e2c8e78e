"""What the in-flight registry and filtered request events add per request, in-process.

wrk (``bench/http_middleware.py``) sees a whole server, where 1-2 us hide in 10-30% noise; this
measures the observers' own calls. One request's observer work is ``request_started`` then
``request_finished`` on an aiohttp request (built with ``aiohttp.test_utils.make_mocked_request``;
the observers read only its method, path and transport) and a context mapping like the
middleware's. Variants, interleaved in one process, each repeated ``--rounds`` times (order
rotated each round), best of the rounds per variant:

* ``no-op observer``: a class whose two methods do nothing (the floor: the calls themselves);
* ``InFlightRegistry``: add and remove under its lock;
* ``RequestEvents@WARNING``: a 200, both events filtered out by the logger's level;
* ``RequestEvents@INFO, NullHandler``: both events formatted and handed to a handler;
* ``2 plain logger.info, NullHandler``: the reference for that one, two ``logger.info("%s %s",
  method, path)`` calls to the same kind of logger.

Run: ``python bench/observers.py`` (``--rounds``, ``--requests``).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Callable
from time import perf_counter, time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import aioreqctx
from aioreqctx import keys


class NoOp:
    def request_started(self, request: web.Request, mapping: aioreqctx.Context) -> None:
        pass

    def request_finished(self, *args: object) -> None:
        pass


class PlainLogging:
    def __init__(self) -> None:
        self.logger = null_logger("plain", logging.INFO)

    def request_started(self, request: web.Request, mapping: aioreqctx.Context) -> None:
        self.logger.info("%s %s", request.method, request.path)

    def request_finished(self, request: web.Request, *args: object) -> None:
        self.logger.info("%s %s", request.method, request.path)


def null_logger(name: str, level: int) -> logging.Logger:
    logger = logging.getLogger(f"bench.observers.{name}")
    logger.setLevel(level)
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


def events_at(level: int) -> aioreqctx.RequestEvents:
    return aioreqctx.RequestEvents(logger=null_logger(logging.getLevelName(level), level))


def per_request(observer: Any, requests: int) -> Callable[[], float]:
    """A timer of ``requests`` start/finish pairs; returns seconds per pair."""
    request = make_mocked_request("GET", "/orders/7")
    response = web.Response(text="ok")
    mappings = [
        {
            keys.REQUEST_ID: aioreqctx.new_request_id(),
            keys.START_MONOTONIC: perf_counter(),
            keys.START_TIME: time(),
            keys.OPERATIONS: aioreqctx.OperationTimings(),
        }
        for _ in range(requests)
    ]

    def timed() -> float:
        started = perf_counter()
        for mapping in mappings:
            observer.request_started(request, mapping)
            observer.request_finished(request, mapping, response, None)
        return (perf_counter() - started) / requests

    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    variants = {
        "no-op observer": per_request(NoOp(), args.requests),
        "InFlightRegistry": per_request(aioreqctx.InFlightRegistry(), args.requests),
        "RequestEvents@WARNING": per_request(events_at(logging.WARNING), args.requests),
        "RequestEvents@INFO, NullHandler": per_request(events_at(logging.INFO), args.requests),
        "2 plain logger.info, NullHandler": per_request(PlainLogging(), args.requests),
    }
    names = list(variants)
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(args.rounds + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = variants[name]()
            if round_:  # round 0 warms up
                best[name] = min(best[name], seconds)
    print(f"Command: `{' '.join([sys.executable, *sys.argv])}`")
    print(f"Python {platform.python_version()}, best of {args.rounds} interleaved rounds\n")
    print("| observer | ns per request (start + finish) | added over no-op |")
    print("|---|---|---|")
    floor = best[names[0]]
    for name in names:
        added = "" if name == names[0] else f"{(best[name] - floor) * 1e9:.0f} ns"
        print(f"| {name} | {best[name] * 1e9:.0f} | {added} |")


if __name__ == "__main__":
    main()
