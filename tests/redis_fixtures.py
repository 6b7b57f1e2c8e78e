"""Redis for the job-queue tests and the docs blocks: pytest-redis's ``redis_proc``.

A plugin of the root conftest.py, so that the docs blocks (collected outside tests/) get it too.
"""

from __future__ import annotations

import os
import shutil

import pytest
from pytest_redis.executor import RedisExecutor

INSTALL_HINT = (
    "redis-server is not installed; the job-queue tests need it: `apt-get install redis-server` "
    "(as root), or `make pytest`, which installs it"
)


@pytest.fixture(scope="session")
def redis_installed(request: pytest.FixtureRequest) -> None:
    """Skips a test that needs redis-server where there is none, saying how to install it;
    fails it instead under CI (``CI`` set), where a skip would hide a broken set-up."""
    executable = request.config.getoption("redis_exec") or request.config.getini("redis_exec")
    if not executable or shutil.which(executable) is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="session")
def redis_url(redis_installed: None, request: pytest.FixtureRequest) -> str:
    """The URL of pytest-redis's ``redis_proc``: a redis-server on 127.0.0.1 for the session."""
    server: RedisExecutor = request.getfixturevalue("redis_proc")
    return f"redis://{server.host}:{server.port}/0"
