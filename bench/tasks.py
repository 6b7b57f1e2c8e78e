"""What aioreqctx's task factories and get/set cost, next to no factory and to aiotask-context.

Measured in one process, on the asyncio and the uvloop event loop, with a context holding three
immutable values (an X-Request-ID string and two ints), which is the common case:

0. objects per task: how many objects the garbage collector tracks per task, counted with
   ``gc.get_objects()`` over 5,000 trivial tasks created at once and not yet run, for the same
   variants. Deterministic (no clock involved): the figure a noisy machine cannot move, and the
   one that decides how often the collector runs, and how long it walks, during a fan-out.
1. spawn: ``await loop.create_task(noop())`` one task at a time (a handler awaiting a helper),
   per task, for no factory (the floor), a Python factory that only builds the task (the least
   any factory costs: under uvloop the floor builds tasks in C), aioreqctx's ``task_factory``,
   ``copying_task_factory`` and ``chainmap_task_factory``, and aiotask-context 0.6.1's three
   factories; ratio to the floor.
2. fan-out: 20,000 trivial tasks created at once and then gathered (a handler gathering many
   calls), per task; same variants, ratio to the floor. Timed with the garbage collector on, as
   servers run (the headline), then again with it off.
3. chain: each task spawns one child and awaits it, 10 levels deep, per spawned task; same
   variants, ratio to the floor. For the ChainMap factories this grows the chain to 10 layers.
4. get/set: ``aioreqctx.get``/``set`` and aiotask-context's ``get`` against a raw
   ``ContextVar.get``/``set``, a pure-Python floor of a get (one function call doing the
   ContextVar and dict lookups), and ``aioreqctx.get`` in the innermost of 10 nested
   ``chainmap_task_factory`` tasks against the same get in a flat context.

Every case runs once per round, in an order rotated each round (after one discarded warm-up
round), with the garbage collector off while it is timed (but for the first fan-out table).
Rounds are many (25) and short (tens of ms): other machines' load on the shared cores comes in
spells longer than that, and many short samples let every case catch quiet windows. The tables
give the min and the median over rounds; ratios and PASS/FAIL use the min, since noise only
ever adds time.

Run it with ``make bench`` (``python bench/tasks.py``, under a minute), ``--quick`` for a
few-second smoke run, ``--objects`` for the object counts alone (about a second), ``--loop
asyncio|uvloop|both``, ``--markdown`` for bench/RESULTS.md. The verdicts are printed, not
turned into an exit status. aiotask-context's factories accept ``(loop, coro)`` only and uvloop
always passes ``context=``, so there they fail, and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import shlex
import statistics
import sys
import timeit
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from time import perf_counter
from typing import Any

import aiotask_context
import uvloop

import aioreqctx

KEY = "X-Request-ID"
SEED: dict[str, Any] = {KEY: "0b6f4c1e-9d1a-4a57-8f0e-2c51d6a7b3e9", "user_id": 4217, "attempt": 1}
CHAIN_DEPTH = 10
UNROLL = 10  # statements per pass of timeit's loop, so the loop itself adds little per call

raw_var: ContextVar[str] = ContextVar("bench.raw")

Factory = Callable[..., asyncio.Future[Any]]


@dataclass(frozen=True)
class Bound:
    """A ratio the variant should stay under (a target) or is expected to land in (a reference)."""

    low: float
    high: float
    target: bool

    def __str__(self) -> str:
        return f"<= {self.high:.2f}x" if self.target else f"{self.low:.2f}-{self.high:.2f}x exp."

    def verdict(self, ratio: float) -> str:
        if self.target:
            return "PASS" if ratio <= self.high else "FAIL"
        return "in range" if self.low <= ratio <= self.high else "outside"


@dataclass(frozen=True)
class Variant:
    """How a task is made (the factory, None for none) and seeded (that library's ``set``)."""

    name: str
    factory: Factory | None
    set: Callable[[str, Any], None]
    bound: Bound | None = None  # for its spawn cost relative to the floor, on asyncio


# Issue 13's targets where they differ from the asyncio ones in each Variant: under uvloop, and
# for a fan-out (many tasks alive at once, gathered), by (section kind, loop) and variant name.
TARGET_OVERRIDES: dict[tuple[str, str], dict[str, float]] = {
    ("fan-out", "asyncio"): {
        "aioreqctx copying_task_factory": 1.20,
        "aioreqctx chainmap_task_factory": 1.20,
    },
    **{
        (kind, "uvloop"): {
            "aioreqctx task_factory": 1.10,
            "aioreqctx copying_task_factory": 1.25,
            "aioreqctx chainmap_task_factory": 1.25,
        }
        for kind in ("one", "fan-out")
    },
}


def target(high: float) -> Bound:
    return Bound(0, high, target=True)


def expected(low: float, high: float) -> Bound:
    return Bound(low, high, target=False)


FLOOR = Variant("floor (no factory)", None, aioreqctx.set)


def bare_factory(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], /, **kwargs: Any
) -> asyncio.Future[Any]:
    """The least a task factory written in Python costs: it builds the task, nothing else."""
    return asyncio.Task(coro, loop=loop, context=kwargs.get("context"))


BARE = Variant("any Python factory (builds the task only)", bare_factory, aioreqctx.set)
SHARE = Variant("aioreqctx task_factory", aioreqctx.task_factory, aioreqctx.set, target(1.05))
COPY = Variant(
    "aioreqctx copying_task_factory", aioreqctx.copying_task_factory, aioreqctx.set, target(1.15)
)
CHAIN = Variant(
    "aioreqctx chainmap_task_factory", aioreqctx.chainmap_task_factory, aioreqctx.set, target(1.15)
)
ATC = Variant(
    "aiotask-context task_factory",
    aiotask_context.task_factory,
    aiotask_context.set,
    expected(1.16, 1.40),
)
ATC_COPY = Variant(
    "aiotask-context copying_task_factory",
    aiotask_context.copying_task_factory,
    aiotask_context.set,
    expected(1.57, 1.90),
)
ATC_CHAIN = Variant(
    "aiotask-context chainmap_task_factory",
    aiotask_context.chainmap_task_factory,
    aiotask_context.set,
    expected(1.50, 1.90),
)


@dataclass(frozen=True)
class Settings:
    rounds: int
    tasks: int  # spawns per round, one at a time
    chains: int  # chains of CHAIN_DEPTH spawns per round
    calls: int  # passes of timeit's loop per round, UNROLL calls each
    fan_out: int  # tasks created at once, then gathered


QUICK = Settings(rounds=3, tasks=500, chains=50, calls=3_000, fan_out=2_000)
THOROUGH = Settings(rounds=25, tasks=6_000, chains=600, calls=12_000, fan_out=20_000)


@dataclass(frozen=True)
class Case:
    """One timed thing (``run`` returns seconds per operation) and what its ratio is held to."""

    name: str
    run: Callable[[], Awaitable[float]]
    baseline: str | None = None
    bound: Bound | None = None


@dataclass(frozen=True)
class Section:
    title: str
    unit: str
    scale: float  # seconds to ``unit``
    cases: list[Case]
    collector_on: bool = False  # timed as servers run, collections included


def create(coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    """``loop.create_task`` that closes ``coro`` when the factory rejects it (no RuntimeWarning)."""
    try:
        return asyncio.get_running_loop().create_task(coro)
    except BaseException:
        coro.close()
        raise


async def inside(variant: Variant, depth: int, body: Callable[[], Awaitable[float]]) -> float:
    """Run ``body`` in a task that ``variant``'s factory made and seeded, ``depth`` spawns down.

    The factory is installed here, once the main task runs, not before ``asyncio.run``: the
    Runner passes ``context=`` to the factory, which aiotask-context's ``(loop, coro)`` factories
    reject. And its get/set need ``current_task().context``, which only its factory creates, so
    the measured code always runs in a task the factory made.
    """
    loop = asyncio.get_running_loop()
    loop.set_task_factory(variant.factory)
    try:
        return float(await create(seeded(variant, depth, body)))
    finally:
        loop.set_task_factory(None)


async def seeded(variant: Variant, depth: int, body: Callable[[], Awaitable[float]]) -> float:
    """Set the values with the variant's own ``set``, as an application would; and the raw var."""
    for key, value in SEED.items():
        variant.set(key, value)
    raw_var.set(SEED[KEY])
    floor_var.set(dict(SEED))
    return await descend(depth, body)


async def descend(depth: int, body: Callable[[], Awaitable[float]]) -> float:
    """Spawn ``depth`` nested tasks through the installed factory, run ``body`` in the last."""
    if depth == 0:
        return await body()
    return float(await create(descend(depth - 1, body)))


async def noop() -> None:
    pass


async def spawn_one_at_a_time(n: int) -> float:
    """Seconds per ``await loop.create_task(noop())``: a handler awaiting helpers one by one."""
    create_task = asyncio.get_running_loop().create_task
    start = perf_counter()
    for _ in range(n):
        await create_task(noop())
    return (perf_counter() - start) / n


async def spawn_fan_out(n: int) -> float:
    """Seconds per task when ``n`` tasks are created at once and gathered: a handler fanning out."""
    create_task = asyncio.get_running_loop().create_task
    start = perf_counter()
    await asyncio.gather(*[create_task(noop()) for _ in range(n)])
    return (perf_counter() - start) / n


async def spawn_chains(n: int) -> float:
    """Seconds per spawn in chains of tasks that each spawn one child and await it."""
    create_task = asyncio.get_running_loop().create_task

    async def chain(levels: int) -> None:
        if levels:
            await create_task(chain(levels - 1))

    start = perf_counter()
    for _ in range(n):
        await chain(CHAIN_DEPTH)
    return (perf_counter() - start) / (n * CHAIN_DEPTH)


OBJECT_TASKS = 5_000


async def tracked_per_task() -> float:
    """Objects the garbage collector tracks per task, over ``OBJECT_TASKS`` trivial tasks created
    from the running task and not yet run (their coroutines, Contexts, mappings...)."""
    create_task = asyncio.get_running_loop().create_task
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        tasks = [create_task(noop()) for _ in range(OBJECT_TASKS)]
        tracked = len(gc.get_objects()) - before - 1  # the list holding them
    finally:
        gc.enable()
    await asyncio.gather(*tasks)
    return tracked / OBJECT_TASKS


SPAWN_VARIANTS = (FLOOR, BARE, SHARE, COPY, CHAIN, ATC, ATC_COPY, ATC_CHAIN)


async def object_counts() -> dict[str, float | str]:
    """Tracked objects per task for every variant, in tasks its own factory made and seeded."""
    counts: dict[str, float | str] = {}
    for variant in SPAWN_VARIANTS:
        try:
            counts[variant.name] = await inside(variant, 0, tracked_per_task)
        except TypeError as error:  # aiotask-context's factories under uvloop
            counts[variant.name] = f"TypeError: {error}"
    return counts


def object_table(counts: dict[str, float | str], loop: str) -> list[list[str]]:
    rows = [["case", "tracked objects per task", "vs floor"]]
    floor = counts[FLOOR.name]
    for name, count in counts.items():
        if isinstance(count, str):
            rows.append([name, f"fails under {loop}", count])
        else:
            extra = "" if name == FLOOR.name else f"+{count - float(floor):.2f}"
            rows.append([name, f"{count:.2f}", extra])
    return rows


def python_floor_get(key: str, default: Any = None) -> Any:
    """The least a pure-Python ``get`` of one ContextVar-held mapping can do: one call, two
    lookups. What ``aioreqctx.get`` adds on top is its own work."""
    return floor_var.get(EMPTY).get(key, default)


floor_var: ContextVar[dict[str, Any]] = ContextVar("bench.floor")
EMPTY: dict[str, Any] = {}

CALL_NAMESPACE: dict[str, Any] = {
    "floor_get": python_floor_get,
    "KEY": KEY,
    "VALUE": SEED[KEY],
    "raw_get": raw_var.get,
    "raw_set": raw_var.set,
    "get": aioreqctx.get,
    "set": aioreqctx.set,
    "atc_get": aiotask_context.get,
    "urandom": os.urandom,
    "uuid4": uuid.uuid4,
    "new_request_id": aioreqctx.new_request_id,
}


def per_call(stmt: str, calls: int) -> Callable[[], Awaitable[float]]:
    """Seconds per ``stmt`` run by timeit, its names bound as globals as in user code."""
    timer = timeit.Timer("\n".join([stmt] * UNROLL), globals=CALL_NAMESPACE)

    async def body() -> float:
        return timer.timeit(calls) / (calls * UNROLL)

    return body


def sections(settings: Settings, loop_kind: str) -> Iterator[Section]:
    """The four measurements, each a set of cases timed together and the ratios reported."""

    def spawns(
        title: str,
        measure: Callable[[int], Awaitable[float]],
        n: int,
        kind: str = "one",
        *,
        collector_on: bool = False,
    ) -> Section:
        variants = SPAWN_VARIANTS
        overrides = TARGET_OVERRIDES.get((kind, loop_kind), {})
        return Section(
            title,
            "us/task",
            1e6,
            [
                Case(
                    v.name,
                    partial(inside, v, 0, partial(measure, n)),
                    None if v is FLOOR else FLOOR.name,
                    target(overrides[v.name]) if v.name in overrides else v.bound,
                )
                for v in variants
            ],
            collector_on,
        )

    def call(
        name: str,
        variant: Variant,
        stmt: str,
        *,
        baseline: str | None = None,
        bound: Bound | None = None,
        depth: int = 0,
    ) -> Case:
        body = per_call(stmt, settings.calls)
        return Case(name, partial(inside, variant, depth, body), baseline, bound)

    yield spawns(
        "1. create + await one trivial task at a time", spawn_one_at_a_time, settings.tasks
    )
    fan_out = f"{settings.fan_out:,} trivial tasks created at once, then gathered"
    yield spawns(
        f"2. fan-out, collector on (as servers run): {fan_out}",
        spawn_fan_out,
        settings.fan_out,
        "fan-out",
        collector_on=True,
    )
    yield spawns(
        f"2b. fan-out, collector off: {fan_out}", spawn_fan_out, settings.fan_out, "fan-out"
    )
    yield spawns(
        f"3. chains of {CHAIN_DEPTH} nested spawns (each task awaits its one child)",
        spawn_chains,
        settings.chains,
    )
    raw_get, flat_get, raw_set = "ContextVar.get (raw)", "aioreqctx.get", "ContextVar.set (raw)"
    urandom_hex = "os.urandom(16).hex()"
    yield Section(
        "4. get/set and a new request ID per call",
        "ns/call",
        1e9,
        [
            call(raw_get, SHARE, "raw_get()"),
            call(flat_get, SHARE, "get(KEY)", baseline=raw_get, bound=target(3)),
            call("pure-Python floor of a get", SHARE, "floor_get(KEY)", baseline=raw_get),
            call(
                "aiotask_context.get",
                ATC,
                "atc_get(KEY)",
                baseline=raw_get,
                bound=expected(18, 33),
            ),
            call(raw_set, SHARE, "raw_set(VALUE)"),
            call("aioreqctx.set", SHARE, "set(KEY, VALUE)", baseline=raw_set, bound=target(3)),
            call(
                f"aioreqctx.get, {CHAIN_DEPTH}-level chainmap",
                CHAIN,
                "get(KEY)",
                baseline=flat_get,
                bound=target(3),
                depth=CHAIN_DEPTH,
            ),
            call(urandom_hex, SHARE, "urandom(16).hex()"),
            call("str(uuid.uuid4())", SHARE, "str(uuid4())", baseline=urandom_hex),
            call(
                "aioreqctx.new_request_id",
                SHARE,
                "new_request_id()",
                baseline=urandom_hex,
                bound=target(1),
            ),
        ],
    )


async def interleaved(section: Section, rounds: int) -> dict[str, list[float] | str]:
    """Time every case once per round, starting one case later each round.

    Rotating the order spreads the slow spells of the shared cores, and whatever one case leaves
    behind for the next, over all cases instead of always hitting the same one. Round 0 warms
    up and is discarded. A case whose factory raises TypeError (aiotask-context's under uvloop)
    gets the error instead of samples and is not run again. The collector is off while a case
    is timed unless the section says otherwise; either way each case starts after a collection.
    """
    cases = section.cases
    results: dict[str, list[float] | str] = {case.name: [] for case in cases}
    for round_ in range(rounds + 1):
        shift = round_ % len(cases)
        for case in cases[shift:] + cases[:shift]:
            samples = results[case.name]
            if isinstance(samples, str):
                continue
            gc.collect()
            if not section.collector_on:
                gc.disable()
            try:
                elapsed = await case.run()
            except TypeError as error:
                results[case.name] = f"TypeError: {error}"
                continue
            finally:
                gc.enable()
            if round_:
                samples.append(elapsed)
    return results


def table(section: Section, results: dict[str, list[float] | str], loop: str) -> list[list[str]]:
    """Rows of cells: each case's min and median time, and its ratios to its baseline's."""
    header = ["case", f"min {section.unit}", f"median {section.unit}", "vs"]
    rows = [[*header, "ratio (min)", "ratio (median)", "target", "verdict"]]
    for case in section.cases:
        samples = results[case.name]
        base = results[case.baseline] if case.baseline else None
        bound = [str(case.bound or "")]
        if isinstance(samples, str):
            rows.append([case.name, f"fails under {loop}", "", "", "", "", *bound, samples])
            continue
        cells = [case.name]
        cells += [f"{stat(samples) * section.scale:.3f}" for stat in (min, statistics.median)]
        if not isinstance(base, list):
            rows.append([*cells, "", "", "", "", ""])
            continue
        ratio = min(samples) / min(base)
        median_ratio = statistics.median(samples) / statistics.median(base)
        cells += [str(case.baseline), f"{ratio:.3f}x", f"{median_ratio:.3f}x", *bound]
        rows.append([*cells, case.bound.verdict(ratio) if case.bound else ""])
    return rows


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(cells) + " |" for cells in rows]
        lines.insert(1, "|" + "---|" * len(rows[0]))
        return "\n".join(lines)
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        for cells in rows
    )


def run(loop_kind: str, settings: Settings, markdown: bool, objects_only: bool = False) -> None:
    new_loop = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    heading = f"Python {platform.python_version()}, {loop_kind} event loop"
    print(f"\n### {heading}\n" if markdown else f"\n=== {heading} ===")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        counts = runner.run(object_counts())
        title = f"0. objects the collector tracks per task ({OBJECT_TASKS:,} created, not yet run)"
        print(f"\n#### {title}\n" if markdown else f"\n{title}")
        print(render(object_table(counts, loop_kind), markdown), flush=True)
        if objects_only:
            return
        for section in sections(settings, loop_kind):
            results = runner.run(interleaved(section, settings.rounds))
            print(f"\n#### {section.title}\n" if markdown else f"\n{section.title}")
            print(render(table(section, results, loop_kind), markdown), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument("--markdown", action="store_true", help="tables for bench/RESULTS.md")
    parser.add_argument(
        "--objects", action="store_true", help="only the tracked objects per task (deterministic)"
    )
    args = parser.parse_args()
    settings = QUICK if args.quick else THOROUGH
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n\n"
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"uvloop {version('uvloop')}, aiotask-context {version('aiotask-context')}, {settings}; "
        "ratios and verdicts use the min over rounds."
    )
    for loop_kind in ("asyncio", "uvloop") if args.loop == "both" else (args.loop,):
        run(loop_kind, settings, args.markdown, args.objects)


if __name__ == "__main__":
    main()
