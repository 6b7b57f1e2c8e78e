"""Issue 18: no regression from the move to folders, on the request path and in the task
factories, measured side by side with the flat layout before the move, in one run.

Two layouts. ``new``: this checkout, under this interpreter (the repo's .venv installs it
editable). ``old``: the flat layout (the Makefile's ``OLD_LAYOUT``, 1f1ed29), git archive'd and
installed, not editable, with the same locked dev set, in a venv beside this interpreter's
(``make .venv-old-layout/.installed``; ``--old DIR`` for another). Each layout runs its own copy
of the bench code, which spells aioreqctx's names as that layout does (the old
``aioreqctx.request_id_middleware`` is ``aioreqctx.web.request_id_middleware`` now), so neither
is timed through the other's code.

1. The request path: bench/http_middleware.py's servers for ``bare``, ``aioreqctx``
   (``request_id_middleware``) and ``aioreqctx setup`` (``setup(app)``), one of each per
   layout, each started by that layout's interpreter running that layout's
   ``http_middleware.py serve``. Every round loads all six at once, each with its own wrk
   (http_middleware's ``--together`` method, wrk's starts rotated each round; the servers on one
   core, wrk on the other) and reads each server's CPU time per request from /proc.
2. The factories: each round, each layout's interpreter runs bench/layout_factories.py once
   (which layout goes first alternates), timing with its own bench/tasks.py a spawned task one
   at a time and in a fan-out of 20,000 gathered tasks, with the collector on, for no factory,
   ``task_factory``, ``copying_task_factory`` and ``chainmap_task_factory``; and ``get`` and
   ``set`` per call, next to raw ContextVar calls.

Round 0 of each part warms up and is discarded. Each round gives a new/old ratio per case; the
tables give old's and new's medians over rounds, the median ratio with its IQR and min-max, and
PASS when the median ratio is <= 1.05 (no regression; rounds on a shared machine move by a few
percent). The rows that run no aioreqctx code (bare, no factory, raw ContextVar calls) are the
noise check: they should read 1.00x within their spread.

Run it with ``make bench-layouts`` (builds the old layout and installs wrk first; about 4
minutes), ``--quick`` for a ~30 s smoke run, ``--markdown`` for bench/RESULTS.md. Linux only
(/proc, ``taskset``), two cores or more. Verdicts are printed, not an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import http_middleware  # bench/: a script sees its folder
from http_middleware import BARE, BY_NAME, SETUP, interleaved, probe, running_server, spread
from layout_factories import SECTION
from tasks import render, target

BENCH_DIR = Path(__file__).resolve().parent
REQUEST_PATH = (BARE.name, "aioreqctx", SETUP)
NOISE_CHECKS = {BARE.name, "floor (no factory)", "ContextVar.get (raw)", "ContextVar.set (raw)"}
NO_REGRESSION = target(1.05)
UNITS = {"per call": ("ns/call", 1e9)}  # else us/task
UNIT_OF_SPAWNS = ("us/task", 1e6)


@dataclass(frozen=True)
class Layout:
    """An interpreter that imports one layout of aioreqctx, and that layout's bench folder."""

    name: str
    python: str
    bench: Path

    def describe(self) -> tuple[str, str]:
        """Its Python version and where its ``import aioreqctx`` comes from (``-I``: not from
        the current folder, whichever checkout that is)."""
        code = "import aioreqctx, platform; print(platform.python_version(), aioreqctx.__file__)"
        command = [self.python, "-I", "-c", code]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        python, location = output.strip().split(" ", 1)
        return python, location


@dataclass(frozen=True)
class Settings:
    http: http_middleware.Settings
    rounds: int  # factory rounds, after one warm-up round
    passes: int  # per factory round, in each layout's process, after one warm-up pass
    quick: bool  # tasks.py's --quick sizes for the factories

    def __str__(self) -> str:
        http = self.http
        return (
            f"request path: {http.rounds} rounds of {http.seconds} s, {http.connections} "
            f"connections per server; factories: {self.rounds} rounds, tasks.py's "
            f"{'quick' if self.quick else 'full'} sizes, the best of {self.passes} timed "
            "pass(es) a round"
        )


QUICK = Settings(http_middleware.QUICK, rounds=2, passes=1, quick=True)
THOROUGH = Settings(
    http_middleware.Settings(rounds=20, seconds=3, connections=16), rounds=20, passes=2, quick=False
)

Paired = dict[str, list[tuple[float, float]]]
"""Per case, one (old, new) pair of values per timed round."""


def request_path(layouts: tuple[Layout, Layout], settings: Settings, cpus: list[int]) -> Paired:
    """CPU seconds per request of each layout's servers, all loaded at once every round."""
    server_cpu, wrk_cpu = cpus
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                running_server(
                    BY_NAME[name],
                    "asyncio",
                    server_cpu,
                    program=(layout.python, str(layout.bench / "http_middleware.py")),
                )
            )
            for name in REQUEST_PATH
            for layout in layouts
        ]
        for server, layout in zip(servers, layouts * len(REQUEST_PATH), strict=True):
            failure = probe(server)
            if failure is not None:
                raise RuntimeError(f"{layout.name} layout's {server.variant.name!r}: {failure}")
        rounds = interleaved(servers, settings.http, wrk_cpu, together=True)
    return {
        name: [(samples[2 * n].cpu, samples[2 * n + 1].cpu) for samples in rounds]
        for n, name in enumerate(REQUEST_PATH)
    }


def factory_timings(layout: Layout, settings: Settings, cpu: int) -> dict[str, float]:
    """One round of bench/layout_factories.py under ``layout``'s interpreter, pinned to ``cpu``."""
    command = ["taskset", "-c", str(cpu), layout.python, str(BENCH_DIR / "layout_factories.py")]
    command += ["--tasks-dir", str(layout.bench), "--passes", str(settings.passes)]
    command += ["--quick"] if settings.quick else []
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    timings: dict[str, float] = json.loads(output)
    return timings


def factories(layouts: tuple[Layout, Layout], settings: Settings, cpu: int) -> Paired:
    """Seconds per task or call, each layout in its own process every round, which layout goes
    first alternating, so neither always follows the other."""
    old, new = layouts
    per_round = []
    for round_ in range(settings.rounds + 1):
        order = layouts if round_ % 2 == 0 else layouts[::-1]
        timed = {layout.name: factory_timings(layout, settings, cpu) for layout in order}
        if round_:
            per_round.append(timed)
        print(f"factories: round {round_}/{settings.rounds} done", file=sys.stderr, flush=True)
    cases = per_round[0][old.name]
    return {case: [(r[old.name][case], r[new.name][case]) for r in per_round] for case in cases}


def by_section(paired: Paired) -> dict[str, Paired]:
    """``section: row`` case names (layout_factories.py's) split into one table per section."""
    sections: dict[str, Paired] = {}
    for case, pairs in paired.items():
        section, row = case.split(SECTION, 1)
        sections.setdefault(section, {})[row] = pairs
    return sections


def table(paired: Paired, unit: str, scale: float, markdown: bool) -> tuple[str, list[str]]:
    """Rows of old's and new's medians and the new/old ratios; and the rows that fail."""
    header = ["case", f"old {unit}", f"new {unit}", "new/old", "IQR", "min-max", "target"]
    rows, failed = [[*header, "verdict"]], []
    for case, pairs in paired.items():
        old, new = (statistics.median(values) * scale for values in zip(*pairs, strict=True))
        ratios = [n / o for o, n in pairs]
        if case in NOISE_CHECKS:
            bound, verdict = "", "noise check"
        else:
            bound, verdict = str(NO_REGRESSION), NO_REGRESSION.verdict(statistics.median(ratios))
        rows.append([case, f"{old:.3f}", f"{new:.3f}", *spread(ratios), bound, verdict])
        failed += [case] if verdict == "FAIL" else []
    return render(rows, markdown), failed


def report(title: str, paired: Paired, unit: tuple[str, float], markdown: bool) -> list[str]:
    """Print one table under its title; the cases that fail."""
    text, failed = table(paired, *unit, markdown)
    print(f"\n#### {title}\n" if markdown else f"\n{title}")
    print(text, flush=True)
    return failed


def checkout_commit() -> str:
    command = ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def layouts_of(old_dir: Path) -> tuple[Layout, Layout]:
    """The old layout (checked: there, on the same Python) and this checkout's."""
    old_python = old_dir / "venv" / "bin" / "python"
    if not old_python.exists():
        sys.exit(f"no old layout in {old_dir}: make {old_dir.name}/.installed builds it")
    old = Layout("old", str(old_python), old_dir / "src" / "bench")
    new = Layout("new", sys.executable, BENCH_DIR)
    (old_version, old_package), (new_version, new_package) = old.describe(), new.describe()
    if old_version != new_version:
        sys.exit(f"the old layout runs Python {old_version}, this one {new_version}")
    if not Path(old_package).is_relative_to(old_dir.resolve()):
        sys.exit(f"the old layout's interpreter imports aioreqctx from {old_package}")
    commit = (old_dir / ".commit").read_text().strip()
    print(f"old layout: {commit}, aioreqctx from {old_package}")
    print(f"new layout: {checkout_commit()} (this checkout), aioreqctx from {new_package}")
    return old, new


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (make bench-layouts does it)")
    settings = QUICK if args.quick else THOROUGH
    server_cpu, wrk_cpu = args.cpus
    os.sched_setaffinity(0, {wrk_cpu})  # the driver, mostly idle, stays off the measured core
    started = time.monotonic()
    print(
        f"Command: `{shlex.join([sys.executable, *sys.argv])}`\n\n"
        f"Python {platform.python_version()} ({platform.python_implementation()}), asyncio, "
        f"aiohttp {version('aiohttp')}; {settings}; servers and factory runs on CPU "
        f"{server_cpu}, wrk on CPU {wrk_cpu}.\n"
    )
    layouts = layouts_of(args.old.resolve())
    failed = report(
        "Request path: CPU per request, all six servers loaded at once (hello handler)",
        request_path(layouts, settings, args.cpus),
        ("us/req", 1e6),
        args.markdown,
    )
    for section, paired in by_section(factories(layouts, settings, server_cpu)).items():
        title = f"Factories, {section}, collector on" if section != "per call" else "Per call"
        failed += report(title, paired, UNITS.get(section, UNIT_OF_SPAWNS), args.markdown)
    verdict = f"FAIL ({', '.join(failed)})" if failed else "PASS"
    print(f"\nNo regression (every aioreqctx row's median new/old {NO_REGRESSION}): {verdict}")
    print(f"Took {time.monotonic() - started:.0f} s.", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--markdown", action="store_true", help="tables for bench/RESULTS.md")
    parser.add_argument(
        "--old",
        type=Path,
        default=Path(f"{sys.prefix}-old-layout"),
        help="the old layout's folder (src/ and venv/): by default beside this interpreter's venv",
    )
    parser.add_argument("--cpus", type=int, nargs=2, default=(0, 1), help="measured and wrk core")
    return parser.parse_args()


if __name__ == "__main__":
    main()
