"""A private PostgreSQL server for the asyncpg tests: one per test session, from Debian's packages.

``initdb`` makes a cluster in a temporary directory and ``postgres`` serves it on 127.0.0.1 (a
free port) and on a Unix socket in that directory, with every statement logged
(``log_min_duration_statement=0``) so tests can read what the server saw. It is stopped and
removed when the session ends.

pytest-postgresql's process fixture cannot serve here: ``initdb`` refuses to run as root, and
the fixture has no way to run the server as another user (nor could that user enter pytest's
0700 temporary directory). So this starts the server itself, as the
``postgres`` user when it runs as root.

Without PostgreSQL the tests that need it skip, saying how to install it; under CI (``CI`` set)
they fail instead, so a broken set-up never passes unseen.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL_HINT = (
    "PostgreSQL is not installed; the asyncpg tests need it. Run `make pytest` (it installs "
    "Debian's postgresql) or `sudo apt-get install -y postgresql`"
)
START_TIMEOUT = 30.0
READY = "database system is ready to accept connections"


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL: ``dsn`` for asyncpg; ``log_text()`` is what the server logged."""

    host: str
    port: int
    directory: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def log(self) -> Path:
        return self.directory / "postgresql.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _bindir() -> Path | None:
    """The newest Debian PostgreSQL's binaries (/usr/lib/postgresql/<major>/bin), else PATH's."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
    )
    found = debian[-1] if debian else shutil.which("postgres")
    return None if found is None else Path(found).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_server_user(directory: Path) -> list[str]:
    """The command prefix that runs the server's programs: as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    user = pwd.getpwnam("postgres")
    shutil.chown(directory, user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--"]


def _start(bindir: Path, directory: Path) -> tuple[subprocess.Popen[bytes], PostgresServer]:
    as_user = _as_server_user(directory)
    data = directory / "data"
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    made = subprocess.run(
        [*as_user, *initdb, "-E", "UTF8", "--no-sync"], capture_output=True, check=False
    )
    if made.returncode:
        pytest.fail(f"initdb failed:\n{made.stdout.decode()}{made.stderr.decode()}")
    server = PostgresServer("127.0.0.1", _free_port(), directory)
    settings = {
        "listen_addresses": server.host,
        "port": str(server.port),
        "unix_socket_directories": str(directory),
        "fsync": "off",
        "log_min_duration_statement": "0",
        "log_line_prefix": "%m [%p] app=%a ",
    }
    options = [word for name, value in settings.items() for word in ("-c", f"{name}={value}")]
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            [*as_user, str(bindir / "postgres"), "-D", str(data), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        if READY in server.log_text():
            return process, server
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail(f"PostgreSQL did not start on {server.host}:{server.port}:\n{server.log_text()}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole session; skips (fails under CI) if none is installed."""
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    # Not under pytest's basetemp: that is 0700, and the server may run as another user.
    directory = Path(tempfile.mkdtemp(prefix="aioreqctx-postgres-"))
    try:
        process, server = _start(bindir, directory)
        try:
            yield server
        finally:
            process.send_signal(signal.SIGINT)  # a fast shutdown: SIGTERM's waits for clients
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
