"""The code blocks of the README and docs/, run by Sybil: each program is one test.

The root conftest.py hands README.md and docs/*.md to :data:`DOCS`, whose parser (Sybil's
Markdown fence lexer plus the grouping below) makes every ```python block, with the blocks that
go with it, one Sybil example, reported at its file and line; :func:`evaluate` runs it.

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
  test sets it to the test session's own redis-server. One that needs PostgreSQL reads its DSN
  from ``DATABASE_URL``, set to the test session's own PostgreSQL (support/postgres_server.py).
- A ```python block whose first line is ``# test_NAME.py`` is a test file: it is run with
  ``python -m pytest -q test_NAME.py`` in a directory of its own, and its Output block is what
  pytest prints. A block titled with a file name (```ini title="pytest.ini") just before it is
  written into that directory first.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sybil import Document, Region, Sybil
from sybil import Example as SybilExample
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

from aioreqctx import is_valid_request_id

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNER = Path(__file__).with_name("docs_runner.py")
TIMEOUT = 60.0

FENCES = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<lang>[\w-]*)(?P<info>[^\n]*)\n"))
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
    """One fenced block: where it is (``start``/``end`` in the page's text), its info string."""

    path: Path
    line: int
    lang: str
    info: str
    body: str
    start: int
    end: int


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
    end: int = 0

    @property
    def test_file(self) -> str | None:
        match = TEST_FILE.match(self.code.body.partition("\n")[0])
        return None if match is None else match["name"]

    @property
    def serves(self) -> bool:
        return "web.run_app(" in self.code.body


def fences(document: Document) -> Iterator[Fence]:
    """The page's fenced blocks, as Sybil's Markdown lexer finds them."""
    for region in FENCES(document):
        line = document.text.count("\n", 0, region.start) + 1
        lexemes = region.lexemes
        body = str(lexemes["source"]).removesuffix("\n")
        path = Path(document.path)
        yield Fence(
            path, line, lexemes["lang"], lexemes["info"].strip(), body, region.start, region.end
        )


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


def examples(document: Document) -> list[Example]:
    """The python blocks of a page; raises on an Output or Try-it block that has no program."""
    found: list[Example] = []
    previous: Example | None = None
    files: dict[str, str] = {}
    for fence in fences(document):
        if fence.lang == "python":
            previous = Example(fence, files=files, end=fence.end)
            found.append(previous)
            files = {}
            continue
        named = FILE_TITLE.search(fence.info)
        if named is not None and OUTPUT_INFO not in fence.info:
            files[named["name"]] = fence.body + "\n"
            continue
        if OUTPUT_INFO in fence.info or TRY_IT_INFO in fence.info:
            if previous is None or previous.output is not None:
                raise ValueError(f"{fence.path.name}:{fence.line}: no python block before it")
            previous.end = fence.end
            if TRY_IT_INFO in fence.info:
                previous.requests = parse_try_it(fence)
            else:
                previous.output = fence
                previous = None
            continue
        previous = None
    return found


def parse(document: Document) -> Iterator[Region]:
    """Sybil's parser: one region per program, from its block to its last Try-it/Output."""
    for example in examples(document):
        yield Region(example.code.start, example.end, example, evaluate)


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


def evaluate(block: SybilExample) -> str | None:
    """Sybil's evaluator: run the program as a file of its own, compare what it prints."""
    example: Example = block.parsed
    workdir: Path = block.namespace["tmp_path"]
    # A handler that is never called proves nothing (the README's first snippet answered 500).
    if "web.Application(" in example.code.body and not example.test_file:
        assert example.serves or "web.AppRunner(" in example.code.body, "the app is never served"
    env = block_env(example, block.namespace["request"])
    for name, text in example.files.items():
        (workdir / name).write_text(text)
    program = workdir / (example.test_file or "example.py")
    program.write_text(example.code.body + "\n")
    if example.test_file is not None:
        printed = run_program(["-m", "pytest", "-q", program.name], workdir, env)
    elif example.serves:
        assert example.requests, "a block that serves needs a Try-it block after it"
        printed = serve_program(example, program, workdir, env)
    else:
        printed = run_program([str(program)], workdir, env)
    expected = example.output.body if example.output is not None else ""
    return "\n".join(mismatches(expected, printed)) or None


def block_env(example: Example, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a block runs in; one that reads ``REDIS_URL`` gets the tests' Redis, one
    that reads ``DATABASE_URL`` the tests' PostgreSQL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "error"}
    if "REDIS_URL" in example.code.body:
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    if "DATABASE_URL" in example.code.body:
        env["DATABASE_URL"] = request.getfixturevalue("postgres_server").dsn
    return env


def run_program(command: list[str], workdir: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, *command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    return result.stdout


def wait_for_port(port_file: Path, server: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + TIMEOUT
    while not port_file.exists() or not port_file.read_text():
        assert server.poll() is None, f"the block exited before serving:\n{server.communicate()[0]}"
        assert time.monotonic() < deadline, "the block did not serve"
        time.sleep(0.05)
    return int(port_file.read_text())


def send(port: int, request: Request) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(request.method, request.path, headers=request.headers)
        response = connection.getresponse()
        body = response.read().decode()
        request_id = response.getheader("X-Request-ID")
    finally:
        connection.close()
    assert response.status < 500, body
    assert request_id is not None
    assert is_valid_request_id(request_id)
    report = mismatches(request.expected_body, body)
    assert not report, f"{request.method} {request.path}: " + "\n".join(report)


def serve_program(example: Example, program: Path, workdir: Path, env: dict[str, str]) -> str:
    port_file = workdir / "port"
    with subprocess.Popen(
        [sys.executable, str(RUNNER), str(program), str(port_file)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as server:
        try:
            port = wait_for_port(port_file, server)
            for request in example.requests:
                send(port, request)
            time.sleep(0.2)  # the access log line is written after the answer was sent
            server.send_signal(signal.SIGINT)
            output, _ = server.communicate(timeout=TIMEOUT)
        finally:
            server.kill()
    assert server.returncode == 0, output
    return output


DOCS = Sybil(
    parsers=[parse],
    patterns=["README.md", "docs/*.md"],
    path=str(ROOT),
    fixtures=["tmp_path", "request"],
)
