"""The private redis-server fixture answers on 127.0.0.1 and keeps data in its own directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .redis_server import INSTALL_HINT, RedisServer


def test_the_private_redis_server_stores_and_flushes(redis_server: RedisServer) -> None:
    assert redis_server.host == "127.0.0.1"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.command("SET", "probe", "1").startswith(b"+OK")
    assert redis_server.command("GET", "probe") == b"$1\r\n1\r\n"
    redis_server.flushall()
    assert redis_server.command("GET", "probe") == b"$-1\r\n"
    assert redis_server.directory.is_dir()


def test_without_redis_server_the_tests_fail_saying_how_to_install_it(tmp_path: Path) -> None:
    """A missing redis-server must never turn into silently skipped job tests."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "stores"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PATH": str(tmp_path)},  # an empty PATH: no redis-server on it
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode != 0
    assert INSTALL_HINT in result.stdout
    assert "skipped" not in result.stdout
