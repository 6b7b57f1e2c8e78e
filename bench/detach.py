"""What work that outlives its request costs (issue 20), next to what it replaces.

In a request-like context holding three immutable values (an X-Request-ID string, two ints):

1. spawn: ``await aioreqctx.detached(noop())`` against ``await loop.create_task(noop())`` under
   ``copying_task_factory``, per task, on the asyncio and the uvloop event loop;
2. hand-off: ``capture()`` then ``with captured.activate(): pass`` against
   ``with aioreqctx.scope(values): pass``, per pair, outside any event loop; and the worker's
   side alone (one capture, activated once per item) against the same scope.

Each case runs once per round in an order rotated each round, after one warm-up round, with the
garbage collector off; the table gives the min and the median over rounds, ratios use the min.
Targets: both ratios at most 1.0 (``detached()`` no dearer than a copying spawn, a hand-off no
dearer than a scope). ``--quick`` is a few-second smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
from collections.abc import Callable
from time import perf_counter
from typing import Any

import uvloop

import aioreqctx
import aioreqctx.log

SEED: dict[str, Any] = {
    aioreqctx.REQUEST_ID: "0b6f4c1e-9d1a-4a57-8f0e-2c51d6a7b3e9",
    "user_id": 4217,
    "attempt": 1,
}
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def noop() -> None:
    pass


async def spawn_copying(count: int) -> float:
    loop = asyncio.get_running_loop()
    with aioreqctx.scope(SEED):
        start = perf_counter()
        for _ in range(count):
            await loop.create_task(noop())
        return perf_counter() - start


async def spawn_detached(count: int) -> float:
    with aioreqctx.scope(SEED):
        start = perf_counter()
        for _ in range(count):
            await aioreqctx.detached(noop())
        return perf_counter() - start


def hand_off(count: int) -> float:
    with aioreqctx.scope(SEED):
        start = perf_counter()
        for _ in range(count):
            with aioreqctx.capture().activate():
                pass
        return perf_counter() - start


def activate_only(count: int) -> float:
    """The worker's side alone: one capture (the enqueuer's), activated once per item."""
    with aioreqctx.scope(SEED):
        captured = aioreqctx.capture()
    start = perf_counter()
    for _ in range(count):
        with captured.activate():
            pass
    return perf_counter() - start


def plain_scope(count: int) -> float:
    start = perf_counter()
    for _ in range(count):
        with aioreqctx.scope(SEED):
            pass
    return perf_counter() - start


def on_loop(loop_name: str, spawn: Callable[[int], Any]) -> Callable[[int], float]:
    def timed(count: int) -> float:
        loop = LOOPS[loop_name]()
        loop.set_task_factory(aioreqctx.copying_task_factory)
        try:
            result: float = loop.run_until_complete(spawn(count))
            return result
        finally:
            loop.close()

    return timed


def measure(
    cases: dict[str, Callable[[int], float]], count: int, rounds: int
) -> dict[str, list[float]]:
    """Per-call times (µs) of every case, one sample per round, order rotated each round."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds + 1):
        order = names[round_number % len(names) :] + names[: round_number % len(names)]
        for name in order:
            gc.disable()
            try:
                elapsed = cases[name](count)
            finally:
                gc.enable()
            if round_number:  # the first round warms up
                samples[name].append(elapsed / count * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    options = parser.parse_args()
    count, rounds = (500, 3) if options.quick else (20_000, 25)
    cases: dict[str, Callable[[int], float]] = {}
    for loop_name in LOOPS:
        cases[f"{loop_name}: create_task, copying_task_factory"] = on_loop(loop_name, spawn_copying)
        cases[f"{loop_name}: detached()"] = on_loop(loop_name, spawn_detached)
    cases["capture() + activate()"] = hand_off
    cases["activate() alone"] = activate_only
    cases["scope(values)"] = plain_scope
    samples = measure(cases, count, rounds)
    print(f"{'case':48} {'min µs':>8} {'median µs':>10}")
    for name, times in samples.items():
        print(f"{name:48} {min(times):8.2f} {statistics.median(times):10.2f}")
    pairs = [
        *(
            (
                f"{loop}: detached() / copying spawn",
                f"{loop}: detached()",
                f"{loop}: create_task, copying_task_factory",
            )
            for loop in LOOPS
        ),
        ("capture() + activate() / scope()", "capture() + activate()", "scope(values)"),
        ("activate() alone / scope()", "activate() alone", "scope(values)"),
    ]
    for label, ours, baseline in pairs:
        ratio = min(samples[ours]) / min(samples[baseline])
        print(f"ratio {label}: {ratio:.2f} ({'PASS' if ratio <= 1.0 else 'FAIL'}: target <= 1.0)")


if __name__ == "__main__":
    main()
