"""The job tests' redis-server (pytest-redis) is on 127.0.0.1 and never silently missing in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from .redis_fixtures import INSTALL_HINT


def test_the_redis_server_answers_on_loopback_and_keeps_idle_clients(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")
    with redis.Redis.from_url(redis_url) as client:
        assert client.set("probe", "1")
        assert client.get("probe") == b"1"
        assert client.config_get("timeout") == {"timeout": "0"}
        assert client.delete("probe") == 1


def run_without_redis_server(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """This file's first test in a pytest whose PATH has no redis-server, with ``CI`` as given."""
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty directory: no redis-server on it
    env.pop("CI", None)
    if ci is not None:
        env["CI"] = ci
    command = ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-k", "loopback", __file__]
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=Path(__file__).parent.parent,
    )


def test_in_ci_a_missing_redis_server_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    """CI must never turn a missing redis-server into silently skipped job tests."""
    result = run_without_redis_server(tmp_path, ci="true")
    assert result.returncode != 0
    assert INSTALL_HINT in result.stdout
    assert "skipped" not in result.stdout


@pytest.mark.parametrize("ci", [None, ""])
def test_locally_a_missing_redis_server_skips_saying_how_to_install_it(
    tmp_path: Path, ci: str | None
) -> None:
    result = run_without_redis_server(tmp_path, ci)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
    assert INSTALL_HINT in result.stdout
