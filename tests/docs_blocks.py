"""The code blocks of the README and docs/, and what each one says it prints.

The conventions, so that the docs stay copy-pasteable and the test can still check them:

- Every ```python block is a complete program: saved as a file and run with ``python``, it
  works offline, as printed.
- A ```text title="Output" block right after it is what that program prints (stdout and stderr
  as one terminal shows them). Where a run prints a fresh value, the block shows a placeholder:
  ``<uuid>``, ``<int>``, ``<number>``, ``<timestamp>`` (ISO 8601), or ``<...>`` (any text).
- A program that serves (``web.run_app``) is followed by a ```console title="Try it" block of
  ``$ curl -s [-X METHOD] [-H 'Name: value'] URL`` commands, each followed by the body it
  answers. The test serves the program on 127.0.0.1 with a free port, sends those requests,
  checks every answer carries an ``X-Request-ID``, then stops the server with SIGINT (Ctrl-C);
  the Output block after "Try it" is what the server printed. ``web.run_app``'s start-up
  banner is not shown.
- A program that needs Redis reads its URL from ``REDIS_URL`` (a local default otherwise): the
  test sets it to the test session's own redis-server.
- A ```python block whose first line is ``# test_NAME.py`` is a test file: it is run with
  ``python -m pytest -q test_NAME.py`` in a directory of its own, and its Output block is what
  pytest prints. A block titled with a file name (```ini title="pytest.ini") just before it is
  written into that directory first.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)(?P<info>.*)$")
OUTPUT_INFO = 'title="Output"'
TRY_IT_INFO = 'title="Try it"'
FILE_TITLE = re.compile(r'title="(?P<name>[\w.-]+\.\w+)"')
TEST_FILE = re.compile(r"# (?P<name>test_\w+\.py)$")
PLACEHOLDERS = {
    "<uuid>": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "<int>": r"-?\d+",
    "<number>": r"-?\d+(?:\.\d+)?(?:e-?\d+)?",
    "<timestamp>": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?",
    "<...>": r".*?",
}
_PLACEHOLDER = re.compile("|".join(re.escape(name) for name in PLACEHOLDERS))


@dataclass
class Fence:
    path: Path
    line: int
    lang: str
    info: str
    body: str


@dataclass
class Request:
    """One ``$ curl -s ...`` line of a "Try it" block and the body shown under it."""

    method: str
    path: str
    headers: dict[str, str]
    expected_body: str


@dataclass
class Example:
    """A ```python block, with the requests it is tried with and the output it shows."""

    code: Fence
    requests: list[Request] = field(default_factory=list)
    output: Fence | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.code.path.relative_to(ROOT)}:{self.code.line}"

    @property
    def test_file(self) -> str | None:
        match = TEST_FILE.match(self.code.body.partition("\n")[0])
        return None if match is None else match["name"]

    @property
    def serves(self) -> bool:
        return "web.run_app(" in self.code.body


def fences(path: Path) -> list[Fence]:
    found: list[Fence] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        index += 1
        if match is None:
            continue
        start, indent, body = index, len(match["indent"]), []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index][indent:])
            index += 1
        index += 1
        found.append(Fence(path, start, match["lang"], match["info"].strip(), "\n".join(body)))
    return found


def parse_curl(command: str, expected_body: str) -> Request:
    words = shlex.split(command)
    if words[:2] != ["curl", "-s"]:
        raise ValueError(f"a Try-it line must start with 'curl -s': {command}")
    headers: dict[str, str] = {}
    method = "GET"
    rest = iter(words[2:])
    url = None
    for word in rest:
        if word == "-H":
            name, _, value = next(rest).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-X":
            method = next(rest)
        elif word.startswith("-"):
            raise ValueError(f"unsupported curl option {word!r} in: {command}")
        else:
            url = word
    match = re.fullmatch(r"http://(?:127\.0\.0\.1|localhost):8080(/\S*)", url or "")
    if match is None:
        raise ValueError(f"a Try-it URL must be http://127.0.0.1:8080/...: {command}")
    return Request(method, match[1], headers, expected_body)


def parse_try_it(fence: Fence) -> list[Request]:
    requests: list[Request] = []
    command: str | None = None
    body: list[str] = []
    for line in [*fence.body.splitlines(), "$ "]:
        if line.startswith("$ "):
            if command is not None:
                requests.append(parse_curl(command, "\n".join(body)))
            command, body = line[2:], []
        else:
            body.append(line)
    return requests


def examples(path: Path) -> list[Example]:
    """The python blocks of ``path``; raises on an Output or Try-it block that has no program."""
    found: list[Example] = []
    previous: Example | None = None
    files: dict[str, str] = {}
    for fence in fences(path):
        if fence.lang == "python":
            previous = Example(fence, files=files)
            found.append(previous)
            files = {}
            continue
        named = FILE_TITLE.search(fence.info)
        if named is not None and OUTPUT_INFO not in fence.info:
            files[named["name"]] = fence.body + "\n"
            continue
        if OUTPUT_INFO in fence.info or TRY_IT_INFO in fence.info:
            if previous is None or previous.output is not None:
                raise ValueError(f"{path.name}:{fence.line}: no python block before it")
            if TRY_IT_INFO in fence.info:
                previous.requests = parse_try_it(fence)
            else:
                previous.output = fence
                previous = None
            continue
        previous = None
    return found


def all_examples() -> list[Example]:
    return [example for path in DOC_FILES for example in examples(path)]


def pattern_of(expected: str) -> re.Pattern[str]:
    """A regex matching the text ``expected`` shows, its placeholders standing for any value."""
    parts = []
    position = 0
    for match in _PLACEHOLDER.finditer(expected):
        parts.append(re.escape(expected[position : match.start()]))
        parts.append(PLACEHOLDERS[match[0]])
        position = match.end()
    parts.append(re.escape(expected[position:]))
    return re.compile("".join(parts))


def mismatches(expected: str, actual: str) -> list[str]:
    """The lines where ``actual`` differs from ``expected`` (placeholders allowed), as a report."""
    want, got = expected.strip("\n").splitlines(), actual.strip("\n").splitlines()
    report = [
        f"line {number}:\n  shown:   {shown}\n  printed: {printed}"
        for number, (shown, printed) in enumerate(zip(want, got, strict=False), 1)
        if not pattern_of(shown).fullmatch(printed)
    ]
    if len(want) != len(got):
        report.append(f"{len(want)} lines shown, {len(got)} printed:\n" + actual)
    return report
