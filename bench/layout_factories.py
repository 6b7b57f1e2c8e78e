"""One layout's task-factory and get/set timings, as one JSON line, for bench/layouts.py.

bench/layouts.py runs this file once per round under each layout's interpreter, with
``--tasks-dir`` naming that layout's own bench folder: the timing functions of its tasks.py
(``inside``, ``spawn_one_at_a_time``, ``spawn_fan_out``, ``per_call`` and the variants) are the
same in both layouts, but each imports aioreqctx's names as that layout spells them, so no
layout is timed through the other's code. The collector stays on, as servers run, and every
case starts after a collection. One warm-up pass, then ``--passes`` passes in an order rotated
each pass; a case's figure is its best pass (noise only ever adds time).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from types import ModuleType

Timing = Callable[[], Awaitable[float]]

SPAWN_VARIANTS = ("FLOOR", "SHARE", "COPY", "CHAIN")  # tasks.py's: no factory, then ours
CALLS = {  # timeit statements of tasks.py's CALL_NAMESPACE, each inside a task_factory task
    "ContextVar.get (raw)": "raw_get()",
    "aioreqctx.get": "get(KEY)",
    "ContextVar.set (raw)": "raw_set(VALUE)",
    "aioreqctx.set": "set(KEY, VALUE)",
}
SECTION = ": "
"""Between a case's section and its row: ``one at a time: aioreqctx task_factory``."""


def cases(tasks: ModuleType, quick: bool) -> dict[str, Timing]:
    """Seconds per spawned task or per call, by case name, at tasks.py's own sizes."""
    sizes = tasks.QUICK if quick else tasks.THOROUGH
    spawns = {
        "one at a time": partial(tasks.spawn_one_at_a_time, sizes.tasks),
        f"fan-out of {sizes.fan_out:,}": partial(tasks.spawn_fan_out, sizes.fan_out),
    }
    timings: dict[str, Timing] = {}
    for section, measure in spawns.items():
        for variant in (getattr(tasks, name) for name in SPAWN_VARIANTS):
            case = f"{section}{SECTION}{variant.name}"
            timings[case] = partial(tasks.inside, variant, 0, measure)
    for name, stmt in CALLS.items():
        body = tasks.per_call(stmt, sizes.calls)
        timings[f"per call{SECTION}{name}"] = partial(tasks.inside, tasks.SHARE, 0, body)
    return timings


async def best_of(timings: dict[str, Timing], passes: int) -> dict[str, float]:
    """Each case's fastest of ``passes`` passes, after one warm-up pass, order rotated per pass."""
    names = list(timings)
    best = dict.fromkeys(names, math.inf)
    for pass_ in range(passes + 1):
        shift = pass_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            elapsed = await timings[name]()
            if pass_:
                best[name] = min(best[name], elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks-dir", required=True, help="the layout's bench folder")
    parser.add_argument("--passes", type=int, default=2, help="timed passes after the warm-up")
    parser.add_argument("--quick", action="store_true", help="tasks.py's --quick sizes")
    args = parser.parse_args()
    sys.path.insert(0, args.tasks_dir)  # ahead of this file's folder, which has its own tasks.py
    tasks = importlib.import_module("tasks")
    print(json.dumps(asyncio.run(best_of(cases(tasks, args.quick), args.passes))))


if __name__ == "__main__":
    main()
