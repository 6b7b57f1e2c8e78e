"""A private redis-server for the job-queue tests: one per test session, on a free port.

It runs from a temporary directory with persistence off and is stopped when the session ends.
A machine without redis-server fails the tests that need it, saying how to install it: the
Makefile's ``make test`` / ``make pytest`` install it, so a skip would only hide a broken set-up.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = (
    "redis-server is not installed; the job-queue tests need it. Run `make pytest` (it installs "
    "it) or `sudo apt-get install -y redis-server`"
)
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class RedisServer:
    """A running redis-server: ``url`` for redis-py, arq, taskiq-redis and Celery."""

    host: str
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self, *words: str) -> bytes:
        """Send one command (inline protocol) and return the raw reply line."""
        with socket.create_connection((self.host, self.port), timeout=5) as connection:
            connection.sendall(" ".join(words).encode() + b"\r\n")
            return connection.recv(65536)

    def flushall(self) -> None:
        assert self.command("FLUSHALL").startswith(b"+OK")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(executable: str, directory: Path) -> tuple[subprocess.Popen[bytes], RedisServer]:
    """Start redis-server on a free port and wait for its PING; another port if it was taken."""
    log = directory / "redis.log"
    for _ in range(3):
        server = RedisServer("127.0.0.1", _free_port(), directory)
        process = subprocess.Popen(
            [
                executable,
                "--bind",
                server.host,
                "--port",
                str(server.port),
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if server.command("PING").startswith(b"+PONG"):
                    return process, server
            except OSError:
                time.sleep(0.05)
        process.kill()
        process.wait()
    output = log.read_text(errors="replace") if log.exists() else "(no log)"
    pytest.fail(f"redis-server did not start on 127.0.0.1:\n{output}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session; fails (never skips) if none is installed."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(INSTALL_HINT)
    process, server = start_redis(executable, tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
