"""Docs are code: every python block of the README and docs/ runs as printed (docs_blocks.py)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aioreqctx import is_valid_request_id

from .docs_blocks import DOC_FILES, ROOT, Example, Request, all_examples, examples, mismatches
from .redis_server import RedisServer

RUNNER = Path(__file__).with_name("docs_runner.py")
EXAMPLES = all_examples()
TIMEOUT = 60.0


def block_env(example: Example, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment a block runs in; one that reads ``REDIS_URL`` gets the session's Redis."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "error"}
    if "REDIS_URL" in example.code.body:
        redis: RedisServer = request.getfixturevalue("redis_server")
        env["REDIS_URL"] = redis.url
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


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_block_runs_as_printed(
    example: Example, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = block_env(example, request)
    for name, text in example.files.items():
        (tmp_path / name).write_text(text)
    program = tmp_path / (example.test_file or "example.py")
    program.write_text(example.code.body + "\n")
    if example.test_file is not None:
        printed = run_program(["-m", "pytest", "-q", program.name], tmp_path, env)
    elif example.serves:
        assert example.requests, "a block that serves needs a Try-it block after it"
        printed = serve_program(example, program, tmp_path, env)
    else:
        printed = run_program([str(program)], tmp_path, env)
    expected = example.output.body if example.output is not None else ""
    report = mismatches(expected, printed)
    assert not report, "\n".join(report)


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.name for example in EXAMPLES])
def test_an_application_in_a_block_is_served(example: Example) -> None:
    """A handler that is never called proves nothing (the README's first snippet answered 500)."""
    if "web.Application(" in example.code.body:
        assert example.serves or "web.AppRunner(" in example.code.body or example.test_file


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_every_output_and_try_it_block_follows_a_program(path: Path) -> None:
    examples(path)


def test_the_readme_and_every_guide_have_examples() -> None:
    pages = {example.code.path.name for example in EXAMPLES}
    assert pages >= {"README.md", "factories.md", "middleware.md", "logging.md", "testing.md"}
