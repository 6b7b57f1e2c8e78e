"""What aioreqctx's task factories and get/set cost, next to no factory and to aiotask-context.

Measured in one process, on the asyncio and the uvloop event loop, with a context holding three
immutable values (an X-Request-ID string and two ints), which is the common case:

1. spawn: ``await loop.create_task(noop())`` one task at a time (a handler awaiting a helper),
   per task, for no factory (the floor), aioreqctx's ``task_factory``, ``copying_task_factory``
   and ``chainmap_task_factory``, and aiotask-context 0.6.1's three factories; ratio to the floor.
2. chain: each task spawns one child and awaits it, 10 levels deep, per spawned task; same
   variants, ratio to the floor. For the ChainMap factories this grows the chain to 10 layers.
3. get/set: ``aioreqctx.get``/``set`` and aiotask-context's ``get`` against a raw
   ``ContextVar.get``/``set``, and ``aioreqctx.get`` in the innermost of 10 nested
   ``chainmap_task_factory`` tasks against the same get in a flat context.

Every variant runs once per round, in an order rotated each round (after one discarded warm-up
round), with the garbage collector off while it is timed; the tables give the min and the median
over rounds, and the ratios and PASS/FAIL verdicts use the min: noise on the shared cores only
ever adds time, so the min is the best estimate of what the code itself costs.

Run it with ``make bench`` (``python bench/tasks.py``, about a minute), ``--quick`` for a
few-second smoke run, ``--loop asyncio|uvloop|both`` and ``--markdown`` for bench/RESULTS.md.
aiotask-context's factories accept ``(loop, coro)`` only; uvloop always passes ``context=``, so
they fail there and are reported as such.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import shlex
import statistics
import sys
import timeit
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
Case = Callable[[], Awaitable[float]]


@dataclass(frozen=True)
class Variant:
    """How a task is made (the factory, None for none) and seeded (that library's ``set``)."""

    name: str
    factory: Factory | None
    set: Callable[[str, Any], None]


FLOOR = Variant("floor (no factory)", None, aioreqctx.set)
SHARE = Variant("aioreqctx task_factory", aioreqctx.task_factory, aioreqctx.set)
CHAIN = Variant("aioreqctx chainmap_task_factory", aioreqctx.chainmap_task_factory, aioreqctx.set)
ATC = Variant("aiotask-context task_factory", aiotask_context.task_factory, aiotask_context.set)
SPAWN_VARIANTS = (
    FLOOR,
    SHARE,
    Variant("aioreqctx copying_task_factory", aioreqctx.copying_task_factory, aioreqctx.set),
    CHAIN,
    ATC,
    Variant(
        "aiotask-context copying_task_factory",
        aiotask_context.copying_task_factory,
        aiotask_context.set,
    ),
    Variant(
        "aiotask-context chainmap_task_factory",
        aiotask_context.chainmap_task_factory,
        aiotask_context.set,
    ),
)


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


SPAWN_BOUNDS = {
    "aioreqctx task_factory": Bound(0, 1.03, target=True),
    "aioreqctx copying_task_factory": Bound(0, 1.10, target=True),
    "aioreqctx chainmap_task_factory": Bound(0, 1.10, target=True),
    "aiotask-context task_factory": Bound(1.16, 1.40, target=False),
    "aiotask-context copying_task_factory": Bound(1.57, 1.90, target=False),
    "aiotask-context chainmap_task_factory": Bound(1.50, 1.90, target=False),
}


@dataclass(frozen=True)
class Settings:
    rounds: int
    tasks: int  # spawns per round, one at a time
    chains: int  # chains of CHAIN_DEPTH spawns per round
    calls: int  # passes of timeit's loop per round, UNROLL calls each


QUICK = Settings(rounds=3, tasks=300, chains=30, calls=2_000)
THOROUGH = Settings(rounds=9, tasks=20_000, chains=2_000, calls=40_000)


@dataclass(frozen=True)
class Row:
    """One line of a table: ``case``'s time, and its ratio to ``baseline``'s when there is one."""

    case: str
    baseline: str | None = None
    bound: Bound | None = None
    label: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    unit: str
    scale: float  # seconds to ``unit``
    cases: dict[str, Case]
    rows: list[Row]


def create(coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    """``loop.create_task`` that closes ``coro`` when the factory rejects it (no RuntimeWarning)."""
    try:
        return asyncio.get_running_loop().create_task(coro)
    except BaseException:
        coro.close()
        raise


async def inside(variant: Variant, depth: int, body: Case) -> float:
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


async def seeded(variant: Variant, depth: int, body: Case) -> float:
    for key, value in SEED.items():
        variant.set(key, value)
    raw_var.set(SEED[KEY])
    return await descend(depth, body)


async def descend(depth: int, body: Case) -> float:
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


CALL_NAMESPACE: dict[str, Any] = {
    "KEY": KEY,
    "VALUE": SEED[KEY],
    "raw_get": raw_var.get,
    "raw_set": raw_var.set,
    "get": aioreqctx.get,
    "set": aioreqctx.set,
    "atc_get": aiotask_context.get,
}


def per_call(stmt: str, calls: int) -> Case:
    """Seconds per ``stmt`` run by timeit, its names bound as globals as in user code."""
    timer = timeit.Timer("\n".join([stmt] * UNROLL), globals=CALL_NAMESPACE)

    async def body() -> float:
        return timer.timeit(calls) / (calls * UNROLL)

    return body


def sections(settings: Settings) -> Iterator[Section]:
    """The three measurements, each a set of cases timed together and the ratios reported."""

    def spawn_section(title: str, measure: Callable[[int], Awaitable[float]], n: int) -> Section:
        return Section(
            title,
            "us/task",
            1e6,
            {v.name: partial(inside, v, 0, partial(measure, n)) for v in SPAWN_VARIANTS},
            [Row(FLOOR.name)]
            + [Row(v.name, FLOOR.name, SPAWN_BOUNDS[v.name]) for v in SPAWN_VARIANTS[1:]],
        )

    yield spawn_section(
        "1. create + await one trivial task at a time", spawn_one_at_a_time, settings.tasks
    )
    yield spawn_section(
        f"2. chains of {CHAIN_DEPTH} nested spawns (each task awaits its one child)",
        spawn_chains,
        settings.chains,
    )
    calls: dict[str, tuple[Variant, int, str]] = {
        "ContextVar.get (raw)": (SHARE, 0, "raw_get()"),
        "aioreqctx.get": (SHARE, 0, "get(KEY)"),
        "aiotask_context.get": (ATC, 0, "atc_get(KEY)"),
        "ContextVar.set (raw)": (SHARE, 0, "raw_set(VALUE)"),
        "aioreqctx.set": (SHARE, 0, "set(KEY, VALUE)"),
        f"aioreqctx.get, {CHAIN_DEPTH}-level chainmap": (CHAIN, CHAIN_DEPTH, "get(KEY)"),
    }
    yield Section(
        "3. get/set per call",
        "ns/call",
        1e9,
        {
            name: partial(inside, variant, depth, per_call(stmt, settings.calls))
            for name, (variant, depth, stmt) in calls.items()
        },
        [
            Row("ContextVar.get (raw)"),
            Row("aioreqctx.get", "ContextVar.get (raw)", Bound(0, 5, target=True)),
            Row("aiotask_context.get", "ContextVar.get (raw)", Bound(18, 33, target=False)),
            Row("ContextVar.set (raw)"),
            Row("aioreqctx.set", "ContextVar.set (raw)"),
            Row(
                f"aioreqctx.get, {CHAIN_DEPTH}-level chainmap",
                "aioreqctx.get",
                Bound(0, 3, target=True),
                label=" (vs flat aioreqctx.get)",
            ),
        ],
    )


async def interleaved(cases: dict[str, Case], rounds: int) -> dict[str, list[float] | str]:
    """Time every case once per round, starting one case later each round.

    Rotating the order spreads the slow spells of the shared cores, and whatever one case leaves
    behind for the next, over all cases instead of always hitting the same one. Round 0 warms
    up and is discarded. A case whose factory raises TypeError (aiotask-context's under uvloop)
    gets the error instead of samples and is not run again.
    """
    results: dict[str, list[float] | str] = {name: [] for name in cases}
    names = list(cases)
    for round_ in range(rounds + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples = results[name]
            if isinstance(samples, str):
                continue
            gc.collect()
            gc.disable()
            try:
                elapsed = await cases[name]()
            except TypeError as error:
                results[name] = f"TypeError: {error}"
                continue
            finally:
                gc.enable()
            if round_:
                samples.append(elapsed)
    return results


def table(
    section: Section, results: dict[str, list[float] | str], loop_kind: str
) -> list[list[str]]:
    """Rows of cells: case, min, median, ratio by min, ratio by median, bound, verdict."""
    rows = [["", f"min {section.unit}", f"median {section.unit}", "ratio", "(median)", "", ""]]
    for row in section.rows:
        samples, base = results[row.case], results[row.baseline or row.case]
        if isinstance(samples, str):
            failure = f"fails under {loop_kind}"
            rows.append([row.case, failure, "", "", "", str(row.bound or ""), samples])
            continue
        cells = [row.case + row.label]
        cells += [f"{stat(samples) * section.scale:.3f}" for stat in (min, statistics.median)]
        if row.baseline is None or isinstance(base, str):
            rows.append([*cells, "", "", "", ""])
            continue
        ratio = min(samples) / min(base)
        median_ratio = statistics.median(samples) / statistics.median(base)
        cells += [f"{ratio:.3f}x", f"{median_ratio:.3f}x"]
        if row.bound:
            cells += [str(row.bound), row.bound.verdict(ratio)]
        rows.append(cells + [""] * (7 - len(cells)))
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


def run(loop_kind: str, settings: Settings, markdown: bool) -> None:
    new_loop = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    heading = f"Python {platform.python_version()}, {loop_kind} event loop"
    print(f"\n### {heading}\n" if markdown else f"\n=== {heading} ===")
    with asyncio.Runner(loop_factory=new_loop) as runner:
        for section in sections(settings):
            results = runner.run(interleaved(section.cases, settings.rounds))
            print(f"\n{section.title}\n" if markdown else f"\n{section.title}")
            print(render(table(section, results, loop_kind), markdown), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default="both")
    parser.add_argument("--markdown", action="store_true", help="tables for bench/RESULTS.md")
    args = parser.parse_args()
    settings = QUICK if args.quick else THOROUGH
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n"
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}), "
        f"uvloop {version('uvloop')}, aiotask-context {version('aiotask-context')}, {settings}; "
        "ratios and verdicts use the min over rounds."
    )
    for loop_kind in ("asyncio", "uvloop") if args.loop == "both" else (args.loop,):
        run(loop_kind, settings, args.markdown)


if __name__ == "__main__":
    main()
