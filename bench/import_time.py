"""What ``import aioreqctx`` costs: ``python -X importtime`` in fresh interpreters, the minimum
of several runs (a run's first import compiles nothing: the ``.pyc`` files are written by a
discarded warm-up run).

``python bench/import_time.py [--runs 15]`` prints, for each program below, the cumulative
import time of its modules, how many modules it loads, how many of them are aiohttp's or
structlog's, and the part spent in aioreqctx's context engine (the self time of the core
modules, counted by file name so that the flat layout before issue 18 compares too).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

PROGRAMS = {
    "import aioreqctx": "import aioreqctx",
    "a job worker (aioreqctx.propagation.jobs)": "import aioreqctx.propagation.jobs",
    "the aiohttp server side (aioreqctx.setup)": "import aioreqctx; aioreqctx.setup",
}
# A flat-layout program for the layout before issue 18, where the job side had another path.
BEFORE = {"a job worker (aioreqctx.propagation.jobs)": "import aioreqctx.job_context"}

CORE = {
    "store",
    "snapshot",
    "layered",
    "factories",
    "threads",
    "dual",
    "sync_or_async",
    "emit",
    "jsonsafe",
    "ids",
    "id_callbacks",
    "timing",
    "request_view",
    "unit_of_work",
    "jobs",
    "lazy",
    "keys",
}


def importtime(code: str) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, indented name) per module ``code`` imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, cumulative_us, name = line[12:].split("|")
            rows.append((int(self_us), int(cumulative_us), name[1:]))
    return rows


def one_run(code: str, startup: set[str]) -> tuple[int, int, int, int]:
    """(total µs, modules, aiohttp/structlog modules, core self µs) for one fresh interpreter;
    what the interpreter imports before running any code (``startup``) is left out."""
    total = core = modules = heavy = 0
    for self_us, cumulative_us, name in importtime(code):
        dotted = name.strip()
        if dotted in startup:
            continue
        modules += 1
        if not name.startswith(" "):  # a top-level import: its cumulative time is its whole cost
            total += cumulative_us
        parts = dotted.split(".")
        heavy += parts[0] in {"aiohttp", "structlog"}
        upper = {"integrations", "propagation"}.intersection(parts)  # their jobs.py is no core
        if parts[0] == "aioreqctx" and parts[-1] in CORE and not upper:
            core += self_us
    return total, modules, heavy, core


def measure(code: str, runs: int) -> tuple[int, int, int, int]:
    startup = {name.strip() for _, _, name in importtime("pass")}
    one_run(code, startup)  # warm-up: writes the .pyc files
    samples = [one_run(code, startup) for _ in range(runs)]
    best = min(samples)
    return best[0], best[1], best[2], min(sample[3] for sample in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per program (default 15)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    flat = subprocess.run(
        [sys.executable, "-c", "import aioreqctx.job_context"], capture_output=True, check=False
    )
    before = flat.returncode == 0
    print(f"Python {sys.version.split()[0]}, min of {args.runs} runs, -X importtime")
    print(f"{'program':45} {'total ms':>9} {'modules':>8} {'aiohttp+structlog':>18} {'core ms':>8}")
    for label, code in PROGRAMS.items():
        total, modules, heavy, core = measure(
            BEFORE.get(label, code) if before else code, args.runs
        )
        print(f"{label:45} {total / 1000:9.1f} {modules:8} {heavy:18} {core / 1000:8.2f}")


if __name__ == "__main__":
    main()
