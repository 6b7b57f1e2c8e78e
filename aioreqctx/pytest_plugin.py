"""The pytest plugin, on whenever aioreqctx is installed (entry point ``pytest11``).

Every test gets its own aioreqctx context: whatever it sets or pushes is gone when its teardown
ends, and a test starts with no pushed logging fields. A test that leaves a ``scope()`` open
(entered, never exited) outside any task is the one thing that cannot be undone: later tests
then each get their own copy of it. A mapping that fixtures put in place (pytest-asyncio and
pytest-aiohttp pass contextvars from async fixtures to the test) reaches the test as a copy,
so even a mapping shared by a ``task_factory`` loop is never written through into the next
test. Turn it off with ``-p no:aioreqctx``.

Fixtures: ``aioreqctx_logs`` (see ``aioreqctx.testing.capture_logs``) and ``aioreqctx_client``
(pytest-aiohttp's ``aiohttp_client`` with ``aioreqctx.testing.RequestIdCheck`` on each client).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator
from contextvars import Token
from typing import Any

import pytest

from .logging_context import pushed_layer
from .snapshot import snapshot
from .store import current_mapping
from .testing import CapturedLogs, RequestIdCheck, capture_logs

_TOKENS = pytest.StashKey[list[Token[Any]]]()


def _own_copy() -> list[Token[Any]]:
    """Put a copy of the mapping in place, if there is one; never open one where none was."""
    inherited = current_mapping.get(None)
    return [] if inherited is None else [current_mapping.set(snapshot(inherited))]


def _reset(tokens: list[Token[Any]]) -> None:
    for token in reversed(tokens):
        token.var.reset(token)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[_TOKENS] = [pushed_layer.set(None), *_own_copy()]
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Again after the fixtures: the test body writes into its own copy of what they set up.
    tokens = _own_copy()
    try:
        return (yield)
    finally:
        _reset(tokens)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        _reset(item.stash.get(_TOKENS, []))


@pytest.fixture
def aioreqctx_logs() -> Iterator[CapturedLogs]:
    """Every log line the test writes, stdlib and structlog, with its request fields."""
    with capture_logs() as captured:
        yield captured


AiohttpClient = Callable[..., Awaitable[Any]]


@pytest.fixture
def aioreqctx_client(aiohttp_client: AiohttpClient) -> AiohttpClient:
    """Like pytest-aiohttp's ``aiohttp_client``; every response it gets must carry one valid
    ``X-Request-ID`` (the one sent, if any). The check is the client's ``request_id_check``."""

    async def make_client(app_or_server: Any, **kwargs: Any) -> Any:
        check = RequestIdCheck()
        kwargs["middlewares"] = (*kwargs.get("middlewares", ()), check)
        client = await aiohttp_client(app_or_server, **kwargs)
        client.request_id_check = check
        return client

    return make_client
