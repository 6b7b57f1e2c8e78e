"""What the request fields add to one log call: stdlib and structlog, inside and outside a request.

Cases, each timed per call in one process:

1. stdlib: ``logger.info("handled %s", 42)`` to a ``StreamHandler`` on ``os.devnull`` with the
   same formatter everywhere (``%(levelname)s %(name)s %(message)s``), so only the field work
   differs: no integration (the baseline), ``RequestContextFilter`` on the handler inside a
   request, the same outside one (only the default), and ``install_log_record_factory()``.
2. structlog: ``log.info("handled", n=42)`` through ``add_log_level`` and ``JSONRenderer`` to a
   ``ReturnLogger``, with no context processor (the baseline), ``add_request_context``, and
   ``structlog.contextvars.merge_contextvars`` with the same ``request_id`` bound; both again with
   30 unrelated ContextVars set, as a real application's context has; ours outside a request.
3. the processors alone: ``processor(None, "info", {"event": "handled"})``, and the filter alone
   on a fresh attribute-only object (what it touches of a record), against making the object.

Every case runs once per round, in an order rotated each round, after a discarded warm-up round,
with the garbage collector off while timed. Ratios and deltas use the min over rounds (noise only
adds time); the median is printed next to it. ``--quick`` is a smoke run for the tests.
"""

from __future__ import annotations

import argparse
import contextvars
import gc
import logging
import os
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import structlog

import aioreqctx
from aioreqctx._core.store import current_mapping

REQUEST_ID = "0b6f4c1e-9d1a-4a57-8f0e-2c51d6a7b3e9"
UNRELATED: list[contextvars.ContextVar[int]] = [
    contextvars.ContextVar(f"bench.unrelated{n}") for n in range(30)
]
DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def context_for(*, request: bool, unrelated: int = 0) -> contextvars.Context:
    """A context as a request's task has it (our mapping and structlog's binding), or none."""

    def fill() -> None:
        if request:
            current_mapping.set({aioreqctx.REQUEST_ID: REQUEST_ID})
            structlog.contextvars.bind_contextvars(request_id=REQUEST_ID)
        for var in UNRELATED[:unrelated]:
            var.set(1)

    context = contextvars.Context()
    context.run(fill)
    return context


def stdlib_logger(name: str, log_filter: logging.Filter | None = None) -> logging.Logger:
    handler = logging.StreamHandler(DEVNULL)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    if log_filter is not None:
        handler.addFilter(log_filter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def structlog_logger(
    *processors: structlog.typing.Processor,
) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[
            *processors,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    ).bind()
    return logger


class Bare:
    """Stands in for a fresh LogRecord: the filter touches its ``__dict__`` and ``exc_info``."""

    exc_info = None


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[], object]
    context: contextvars.Context
    baseline: str | None = None  # the case this one is compared with
    around: Callable[[], Callable[[], None]] | None = None  # set up, returns the undo

    def time_per_call(self, number: int) -> float:
        undo = self.around() if self.around is not None else None
        try:
            return self.context.run(timeit.Timer(self.call).timeit, number) / number
        finally:
            if undo is not None:
                undo()


def cases() -> list[Case]:
    inside, outside = context_for(request=True), context_for(request=False)
    crowded = context_for(request=True, unrelated=30)
    plain = stdlib_logger("bench.plain")
    filtered = stdlib_logger("bench.filtered", aioreqctx.RequestContextFilter())
    no_processor = structlog_logger()
    ours = structlog_logger(aioreqctx.add_request_context)
    merge = structlog_logger(structlog.contextvars.merge_contextvars)
    add_ours = aioreqctx.add_request_context
    merge_contextvars = structlog.contextvars.merge_contextvars
    bare_filter = aioreqctx.RequestContextFilter()
    return [
        Case("stdlib, no integration", lambda: plain.info("handled %s", 42), inside),
        Case(
            "stdlib, Filter on the handler",
            lambda: filtered.info("handled %s", 42),
            inside,
            "stdlib, no integration",
        ),
        Case(
            "stdlib, Filter, outside a request",
            lambda: filtered.info("handled %s", 42),
            outside,
            "stdlib, no integration",
        ),
        Case(
            "stdlib, record factory",
            lambda: plain.info("handled %s", 42),
            inside,
            "stdlib, no integration",
            around=aioreqctx.install_log_record_factory,
        ),
        Case("structlog, no context processor", lambda: no_processor.info("handled", n=42), inside),
        Case(
            "structlog, add_request_context",
            lambda: ours.info("handled", n=42),
            inside,
            "structlog, no context processor",
        ),
        Case(
            "structlog, merge_contextvars",
            lambda: merge.info("handled", n=42),
            inside,
            "structlog, no context processor",
        ),
        Case(
            "structlog, add_request_context, +30 vars",
            lambda: ours.info("handled", n=42),
            crowded,
            "structlog, no context processor",
        ),
        Case(
            "structlog, merge_contextvars, +30 vars",
            lambda: merge.info("handled", n=42),
            crowded,
            "structlog, no context processor",
        ),
        Case(
            "structlog, add_request_context, outside",
            lambda: ours.info("handled", n=42),
            outside,
            "structlog, no context processor",
        ),
        Case("filter alone: none (object only)", Bare, inside),
        Case(
            "filter alone: RequestContextFilter",
            lambda: bare_filter.filter(Bare()),  # type: ignore[arg-type]
            inside,
            "filter alone: none (object only)",
        ),
        Case(
            "filter alone: RequestContextFilter, outside",
            lambda: bare_filter.filter(Bare()),  # type: ignore[arg-type]
            outside,
            "filter alone: none (object only)",
        ),
        Case("processor alone: none (dict only)", lambda: {"event": "handled"}, inside),
        Case(
            "processor alone: add_request_context",
            lambda: add_ours(None, "info", {"event": "handled"}),
            inside,
            "processor alone: none (dict only)",
        ),
        Case(
            "processor alone: merge_contextvars",
            lambda: merge_contextvars(None, "info", {"event": "handled"}),
            inside,
            "processor alone: none (dict only)",
        ),
        Case(
            "processor alone: merge_contextvars, +30",
            lambda: merge_contextvars(None, "info", {"event": "handled"}),
            crowded,
            "processor alone: none (dict only)",
        ),
    ]


def measure(rounds: int, number: int) -> dict[str, list[float]]:
    all_cases = cases()
    samples: dict[str, list[float]] = {case.name: [] for case in all_cases}
    for round_number in range(rounds + 1):  # round 0 warms up and is discarded
        shift = round_number % len(all_cases)
        order = all_cases[shift:] + all_cases[:shift]
        for case in order:
            gc.disable()
            try:
                per_call = case.time_per_call(number)
            finally:
                gc.enable()
            if round_number:
                samples[case.name].append(per_call)
    return samples


def report(samples: dict[str, list[float]]) -> None:
    baselines = {case.name: case.baseline for case in cases()}
    print(
        f"Python {platform.python_version()}, structlog {version('structlog')}, "
        f"{len(next(iter(samples.values())))} rounds; microseconds per call"
    )
    print(f"| case | min us | median us | ratio (min) | added us (min) |\n|{'---|' * 5}")
    for name, values in samples.items():
        low, middle = min(values) * 1e6, statistics.median(values) * 1e6
        baseline = baselines[name]
        if baseline is None:
            print(f"| {name} | {low:.3f} | {middle:.3f} | 1 | - |")
            continue
        base = min(samples[baseline]) * 1e6
        print(f"| {name} | {low:.3f} | {middle:.3f} | {low / base:.3f} | {low - base:+.3f} |")
    added = {
        name: min(values) - min(samples[baselines[name] or name])
        for name, values in samples.items()
    }
    for scope in ("structlog, ", "processor alone: "):
        ours, theirs = added[f"{scope}add_request_context"], added[f"{scope}merge_contextvars"]
        print(f"{scope}added cost, ours / merge_contextvars: {ours / theirs:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    options = parser.parse_args()
    rounds, number = (2, 200) if options.quick else (25, 5000)
    report(measure(rounds, number))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
