"""The compatibility run (``make test-compat``): each integration's tests against the lowest and
the newest version that pyproject.toml's ranges allow.

The lowest versions come from pyproject's own requirement strings, installed with uv's
``--resolution lowest-direct``, so the bounds tested are the bounds declared. Each session
records what it installed in ``.nox/versions/``; the ``versions`` session then checks the table
in docs/versions.md against those records (``nox -s versions -- --write`` rewrites it).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.download_python = "never"

ROOT = Path(__file__).resolve().parent
RECORDS = ROOT / ".nox" / "versions"
TABLE = ROOT / "docs" / "versions.md"
# The extras that are not integrations: tools, whose versions the compat run does not test.
TOOL_EXTRAS = frozenset({"dev", "bench", "docs"})
# Every session's interpreters: the lowest versions run on the oldest and the newest Python the
# package supports (the usual breakage is an old release on a new Python), the newest on 3.13.
LOWEST_PYTHONS = ("3.11", "3.13")
NEWEST_PYTHONS = ("3.13",)
SESSION_TIMEOUT = 300  # seconds for one session's tests; the longest, core, takes about 60


def _requirements() -> tuple[dict[str, tuple[Requirement, str]], dict[str, Requirement]]:
    """pyproject's requirements by name: (requirement, extra or "") for the runtime ranges the
    compat run tests, and the tools' (dev extra) for the requirements the tests need."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges: dict[str, tuple[Requirement, str]] = {}
    for extra, lines in [("", project["dependencies"]), *project["optional-dependencies"].items()]:
        if extra in TOOL_EXTRAS:
            continue
        for line in lines:
            requirement = Requirement(line)
            ranges[canonicalize_name(requirement.name)] = (requirement, extra)
    tools: dict[str, Requirement] = {
        canonicalize_name(r.name): r
        for r in map(Requirement, project["optional-dependencies"]["dev"])
    }
    return ranges, tools


RANGES, TOOLS = _requirements()


def lower_bound(specifier: SpecifierSet) -> Version:
    """The version a ``>=`` clause names: the lowest the range allows."""
    for clause in specifier:
        if clause.operator == ">=":
            return Version(clause.version)
    raise ValueError(f"pyproject.toml: {specifier!r} has no '>=' lower bound")


@dataclass(frozen=True)
class Suite:
    """The tests of one integration and the distributions whose range they check."""

    tested: tuple[str, ...]
    tests: tuple[str, ...]
    # Installed lowest along with ``tested`` in the lowest sessions, newest otherwise.
    companions: tuple[str, ...] = ()
    # Further requirements the tests need (newest), by name from the dev extra when it has one.
    needs: tuple[str, ...] = ()
    # Newest sessions besides the plain one: name -> an extra cap (sentry-sdk 2.x next to 3.x).
    newest_within: dict[str, str] = field(default_factory=dict)


INTEGRATION_TESTS = {
    "sentry": "tests/integrations/test_sentry.py",
    "arq": "tests/integrations/test_arq.py",
    "taskiq": "tests/integrations/test_taskiq.py",
    "celery": "tests/integrations/test_celery.py",
    "otel": "tests/integrations/test_otel.py",
    "prometheus": "tests/integrations/test_prometheus.py",
    "asyncpg": "tests/integrations/test_asyncpg.py",
}
# Tests that need the dev set's tools (build, gunicorn, every integration, the docs' examples).
TOOL_TESTS = frozenset(
    {"test_docs.py", "test_demo.py", "test_bench.py", "test_packaging.py", "test_gunicorn.py"}
    | {"test_integrations_layout.py", "test_reference.py", "test_versions.py"}
    | {"test_debug_on_demand.py", "test_layers.py", "test_wide_event.py", "test_sqlalchemy.py"}
)
CORE_TESTS = tuple(
    str(path.relative_to(ROOT))
    for path in sorted((ROOT / "tests").rglob("test_*.py"))
    if path.name not in TOOL_TESTS and str(path.relative_to(ROOT)) not in INTEGRATION_TESTS.values()
)

SUITES = {
    "core": Suite(
        ("aiohttp", "structlog", "uvloop"), CORE_TESTS, needs=("hypothesis", "aiotask-context")
    ),
    "sentry": Suite(
        ("sentry-sdk",),
        (INTEGRATION_TESTS["sentry"],),
        needs=("taskiq",),
        newest_within={"2.x": "sentry-sdk<3"},
    ),
    "arq": Suite(("arq",), (INTEGRATION_TESTS["arq"],)),
    "taskiq": Suite(("taskiq", "taskiq-redis"), (INTEGRATION_TESTS["taskiq"],)),
    "celery": Suite(
        ("celery",), (INTEGRATION_TESTS["celery"],), companions=("kombu",), needs=("celery[redis]",)
    ),
    "otel": Suite(
        ("opentelemetry-api",),
        (INTEGRATION_TESTS["otel"],),
        companions=("opentelemetry-sdk",),
        needs=("opentelemetry-sdk",),
    ),
    "prometheus": Suite(("prometheus-client",), (INTEGRATION_TESTS["prometheus"],)),
    "asyncpg": Suite(("asyncpg",), (INTEGRATION_TESTS["asyncpg"],)),
}


def _requirement(name: str) -> str:
    """``name`` as pyproject declares it: with its range, or as the dev extra pins the tool."""
    requirement = Requirement(name)
    key = canonicalize_name(requirement.name)
    if key in RANGES:
        return f"{name}{RANGES[key][0].specifier}"
    return str(TOOLS[key]) if key in TOOLS else name


def _install_and_test(session: nox.Session, suite: Suite, end: str, cap: str | None) -> None:
    """Install ``suite`` at ``end`` of its ranges, record the versions, run its tests."""
    if end == "lowest":
        session.install(
            "--resolution",
            "lowest-direct",
            *map(_requirement, suite.tested),
            *suite.companions,
        )
    # The root conftest.py loads Sybil (docs blocks) and pytest-redis (the Redis fixtures).
    base = ("pytest", "pytest-aiohttp", "pytest-redis", "sybil") + (
        ("uvloop",) if "uvloop" not in suite.tested else ()
    )
    session.install(
        "-e", ".", *map(_requirement, (*suite.tested, *base, *suite.needs)), *([cap] if cap else [])
    )
    names = (*suite.tested, *suite.companions)
    script = (
        "import importlib.metadata as m, json, platform, sys\n"
        "print(json.dumps({'python': platform.python_version(),"
        " 'versions': {n: m.version(n) for n in sys.argv[1:]}}))"
    )
    output = session.run("python", "-c", script, *names, silent=True)
    assert isinstance(output, str)
    record = json.loads(output.strip().splitlines()[-1])
    for name in suite.tested:
        installed = Version(record["versions"][name])
        declared = RANGES[canonicalize_name(name)][0].specifier
        if installed not in declared:
            session.error(f"{name} {installed} is outside pyproject's {declared}")
        if end == "lowest" and installed != lower_bound(declared):
            session.error(f"{name} {installed} installed, not the lower bound of {declared}")
    session.log(f"installed: {record['versions']}")
    # A hang (an old release against a new redis-py, say) fails the session instead of the run.
    pytest = ("pytest", "-q", "-p", "no:cacheprovider", *suite.tests, *session.posargs)
    session.run("timeout", "-s", "INT", "-k", "10", str(SESSION_TIMEOUT), *pytest, external=True)
    # Only what passed is recorded as tested.
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{session.name}.json").write_text(json.dumps({"end": end, **record}, indent=1))


def _register(name: str, suite: Suite, end: str, pythons: tuple[str, ...], cap: str | None) -> None:
    def run(session: nox.Session) -> None:
        _install_and_test(session, suite, end, cap)

    run.__doc__ = f"{', '.join(suite.tested)}: the {end} versions{f' ({cap})' if cap else ''}."
    nox.session(name=name, python=list(pythons))(run)


for _name, _suite in SUITES.items():
    _register(f"{_name}-lowest", _suite, "lowest", LOWEST_PYTHONS, None)
    _register(f"{_name}-newest", _suite, "newest", NEWEST_PYTHONS, None)
    for _label, _cap in _suite.newest_within.items():
        _register(f"{_name}-newest-{_label}", _suite, "newest", NEWEST_PYTHONS, _cap)


def _tested() -> dict[str, tuple[Version, list[Version]]]:
    """From the records: each distribution's lowest version tested and its newest per major."""
    records = [json.loads(path.read_text()) for path in sorted(RECORDS.glob("*.json"))]
    seen: dict[str, dict[str, list[Version]]] = {}
    for record in records:
        for name, version in record["versions"].items():
            seen.setdefault(name, {"lowest": [], "newest": []})[record["end"]].append(
                Version(version)
            )
    result = {}
    for name, ends in seen.items():
        newest_by_major: dict[int, Version] = {}
        for version in ends["newest"]:
            newest_by_major[version.major] = max(
                version, newest_by_major.get(version.major, version)
            )
        result[name] = (min(ends["lowest"]), sorted(newest_by_major.values()))
    return result


def table_rows() -> list[tuple[str, str, str]]:
    """docs/versions.md's first three columns, as pyproject.toml declares them."""
    rows = []
    for suite in SUITES.values():
        for name in suite.tested:
            requirement, extra = RANGES[canonicalize_name(name)]
            clauses = sorted(map(str, requirement.specifier), key=lambda c: not c.startswith(">="))
            rows.append((name, f"`{extra}`" if extra else "core", f"`{','.join(clauses)}`"))
        # Not declared: the versions that the lowest and newest of the suite's range install.
        rows += [
            (name, rows[-1][1], f"installed with {suite.tested[0]}") for name in suite.companions
        ]
    return rows


def parse_table(text: str) -> dict[str, list[str]]:
    """docs/versions.md's table: dependency -> its cells."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 5 and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = cells
    rows.pop("Dependency", None)
    return rows


def _render(tested: dict[str, tuple[Version, list[Version]]]) -> str:
    lines = [
        "| Dependency | Extra | Declared range | Lowest tested | Newest tested |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, extra, declared in table_rows():
        lowest, newest = tested[name]
        lines.append(
            f"| {name} | {extra} | {declared} | {lowest} | {', '.join(map(str, newest))} |"
        )
    return "\n".join(lines)


@nox.session(python=False)
def versions(session: nox.Session) -> None:
    """Check docs/versions.md against the records of the run (``-- --write`` rewrites it)."""
    tested = _tested()
    missing = [name for name, _, _ in table_rows() if name not in tested]
    if missing:
        session.error(f"no record of {', '.join(missing)}: run every session (make test-compat)")
    text = TABLE.read_text()
    table = re.search(r"^\| Dependency .*?(?=\n\n|\Z)", text, flags=re.DOTALL | re.MULTILINE)
    if table is None:
        session.error(f"{TABLE}: no table starting with '| Dependency '")
    rendered = _render(tested)
    if "--write" in session.posargs:
        TABLE.write_text(text[: table.start()] + rendered + text[table.end() :])
        return
    documented = parse_table(table.group())
    for name, row in parse_table(rendered).items():
        shown = documented.get(name)
        if shown is None or shown[:4] != row[:4] or not _still_true(shown[4], tested[name][1]):
            session.error(
                f"{TABLE}: {name} is {shown}, the run tested {row}: refresh it with"
                " nox -s versions -- --write"
            )
        if shown[4] != row[4]:  # a release since the table was written: tested, and it passed
            session.log(f"{TABLE}: {name}: the run tested {row[4]} (the table: {shown[4]})")


def _still_true(shown: str, newest: list[Version]) -> bool:
    """Whether each newest version the table shows is at most what the run tested of its major."""
    by_major = {version.major: version for version in newest}
    return all(
        Version(v).major in by_major and Version(v) <= by_major[Version(v).major]
        for v in shown.split(", ")
    )
