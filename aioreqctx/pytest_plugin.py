"""The pytest plugin, on whenever aioreqctx is installed (entry point ``pytest11``).

Every test body gets its own aioreqctx context: whatever it sets or pushes is gone when it
ends. A test that leaves a ``scope()`` open (entered, never exited) outside any task is the one
thing that cannot be undone: later tests then each get their own copy of it. A mapping that
fixtures put in place (pytest-asyncio and pytest-aiohttp pass contextvars from async fixtures to
the test) reaches the test as a copy, so even a mapping shared by a ``task_factory`` loop is
never written through into the next test. Turn it off with ``-p no:aioreqctx``.

Fixtures: ``aioreqctx_logs`` (see ``aioreqctx.testing.capture_logs``) and ``aioreqctx_client``
(pytest-aiohttp's ``aiohttp_client`` with ``aioreqctx.testing.RequestIdCheck`` on each client).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator
from contextvars import Token
from typing import Any

import pytest

from ._core.snapshot import snapshot
from ._core.store import current_mapping
from .log.logging_context import pushed_layer
from .testing import CapturedLogs, RequestIdCheck, capture_logs


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    # Around the test body only: fixtures set up before it and torn down after it reset their
    # own contextvars, in their own order, which a token held across them would undo.
    tokens: list[Token[Any]] = [pushed_layer.set(pushed_layer.get())]
    inherited = current_mapping.get(None)
    if inherited is not None:
        tokens.append(current_mapping.set(snapshot(inherited)))
    try:
        return (yield)
    finally:
        for token in reversed(tokens):
            token.var.reset(token)


@pytest.fixture
def aioreqctx_logs() -> Iterator[CapturedLogs]:
    """Every log line the test writes, stdlib and structlog, with its request fields."""
    with capture_logs() as captured:
        yield captured


AiohttpClient = Callable[..., Awaitable[Any]]


@pytest.fixture
def aioreqctx_client(aiohttp_client: AiohttpClient) -> AiohttpClient:
    """Like pytest-aiohttp's ``aiohttp_client``; every response it gets must carry one safe
    ``X-Request-ID`` (the one sent, if the app's validator accepts it), checked with the app's
    own header and validator. The check is the client's ``request_id_check``."""

    async def make_client(app_or_server: Any, **kwargs: Any) -> Any:
        # A TestServer serves .app; a RawTestServer has none (then: the stock check).
        check = RequestIdCheck.for_app(getattr(app_or_server, "app", app_or_server))
        kwargs["middlewares"] = (*kwargs.get("middlewares", ()), check)
        client = await aiohttp_client(app_or_server, **kwargs)
        client.request_id_check = check
        return client

    return make_client
