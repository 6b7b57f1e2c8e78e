"""What each piece of a spawn, a get and a set costs, in CPU instructions (valgrind's callgrind).

Timings on this machine's two shared cores move by 10-30% from run to run; instruction counts
do not: the same interpreter running the same code counts the same, whatever else runs. This
script runs each case twice under ``valgrind --tool=callgrind`` (0 and N operations) and
divides the difference by N, so start-up cost cancels out. It answers "where does the rest of
the ratio come from": the floors below are what any pure-Python factory or ``get``/``set``
pays before doing any context work. Instructions are not time (a C call and a dict allocation
do not cost the same per instruction), so ``bench/tasks.py`` stays the measure of record.

Run: ``python bench/floors.py`` (needs valgrind, the Debian package; ``make bench-floors``
installs it), ``--markdown`` for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aioreqctx

OPERATIONS = 4_000
COUNT = re.compile(r"Collected : (\d+)")

raw_var: contextvars.ContextVar[int] = contextvars.ContextVar("floors.raw")
floor_var: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("floors.floor")
EMPTY: dict[str, Any] = {}
SHARED: dict[str, Any] = {}


def plain_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """The least a Python task factory can do: build the task."""
    return asyncio.Task(coro, loop=loop)


def attribute_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
) -> asyncio.Task[Any]:
    """Build the task and store a mapping on it, as ``task.context`` must be (aiotask-context)."""
    task = asyncio.Task(coro, loop=loop)
    task.context = SHARED  # type: ignore[attr-defined]
    return task


FACTORIES: dict[str, Any] = {
    "no factory": None,
    "python factory, task only": plain_factory,
    "python factory + task.context": attribute_factory,
    "task_factory": aioreqctx.task_factory,
    "copying_task_factory": aioreqctx.copying_task_factory,
    "chainmap_task_factory": aioreqctx.chainmap_task_factory,
}


def floor_get(key: str, default: Any = None) -> Any:
    return floor_var.get(EMPTY).get(key, default)


CALLS: dict[str, Callable[[], Any]] = {
    "ContextVar.get": raw_var.get,
    "pure-Python get floor": lambda: floor_get("X-Request-ID"),
    "aioreqctx.get": lambda: aioreqctx.get("X-Request-ID"),
    "ContextVar.set": lambda: raw_var.set(1),
    "aioreqctx.set": lambda: aioreqctx.set("X-Request-ID", "abc"),
}
CALL_BASELINE = {"aioreqctx.get": "ContextVar.get", "pure-Python get floor": "ContextVar.get"}
CALL_BASELINE["aioreqctx.set"] = "ContextVar.set"


async def noop() -> None:
    pass


async def run_case(kind: str, name: str, n: int) -> None:
    """``n`` operations of one case inside a task that owns a seeded context."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(FACTORIES.get(name) if kind != "call" else aioreqctx.task_factory)

    async def inside() -> None:
        aioreqctx.set("X-Request-ID", "0b6f4c1e-9d1a-4a57-8f0e-2c51d6a7b3e9")
        aioreqctx.set("user_id", 4217)
        raw_var.set(0)
        floor_var.set({"X-Request-ID": "abc"})
        create = loop.create_task
        if kind == "one":
            for _ in range(n):
                await create(noop())
        elif kind == "fan-out":
            await asyncio.gather(*[create(noop()) for _ in range(n)])
        else:
            call = CALLS[name]
            for _ in range(n):
                call()

    await loop.create_task(inside())


def instructions(kind: str, name: str, n: int) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, __file__, "--case", kind, name, str(n)]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    match = COUNT.search(result.stderr)
    assert match is not None, result.stderr[-2000:]
    return int(match.group(1))


def per_operation(kind: str, name: str) -> float:
    return (instructions(kind, name, OPERATIONS) - instructions(kind, name, 0)) / OPERATIONS


def table(rows: list[tuple[str, float, str]], markdown: bool) -> str:
    lines = [("case", "instructions per op", "ratio")] + [
        (name, f"{count:,.0f}", ratio) for name, count, ratio in rows
    ]
    if markdown:
        out = ["| " + " | ".join(line) + " |" for line in lines]
        out.insert(1, "|---|---:|---:|")
        return "\n".join(out)
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def report(markdown: bool) -> None:
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`; Python "
        f"{platform.python_version()}, asyncio loop, {OPERATIONS:,} operations per case\n"
    )
    for kind, title in (("one", "create + await one task"), ("fan-out", "fan-out, gathered")):
        counts = {name: per_operation(kind, name) for name in FACTORIES}
        floor = counts["no factory"]
        rows = [(name, count, f"{count / floor:.3f}x") for name, count in counts.items()]
        print(f"\n{title} (ratio to no factory)\n\n{table(rows, markdown)}")
    counts = {name: per_operation("call", name) for name in CALLS}
    rows = [
        (
            name,
            count,
            f"{count / counts[CALL_BASELINE[name]]:.2f}x" if name in CALL_BASELINE else "",
        )
        for name, count in counts.items()
    ]
    title = "get/set per call (the measuring loop and lambda call included in every row)"
    print(f"\n{title}\n\n{table(rows, markdown)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--case", nargs=3, metavar=("KIND", "NAME", "N"))
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if args.case:
        kind, name, n = args.case
        asyncio.run(run_case(kind, name, int(n)))
    else:
        report(args.markdown)


if __name__ == "__main__":
    main()
