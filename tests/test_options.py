"""Every public constructor checks its options with the rule setup() uses, naming the option."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web

import aioreqctx as context
from aioreqctx._core.options import RULES, OptionError, is_header_name

from .conftest import LoopFactory, run
from .http_helpers import serving

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def test_header_names_are_rfc_9110_tokens() -> None:
    for code in range(256):
        assert is_header_name(chr(code)) == (chr(code) in TCHAR), repr(chr(code))
    assert is_header_name("X-Request-ID")
    assert not is_header_name("")
    assert not is_header_name(None)


HEADER_OPTIONS: list[tuple[Callable[..., object], str]] = [
    (context.RequestIdMiddleware, "response_header"),
    (lambda **kw: context.RequestIdMiddleware(header_names=(kw.pop("h"),)), "h"),
    (lambda **kw: context.setup(web.Application(), **kw), "response_header"),
    (context.ClientPropagation, "header"),
    (context.ClientPropagation, "deadline_header"),
    (context.DeadlineObserver, "header"),
]


@pytest.mark.parametrize("name", ["Request@ID", "X/Req", "X Req", "X-Réq", "X:Req", ""])
@pytest.mark.parametrize(("make", "option"), HEADER_OPTIONS)
def test_every_header_name_option_refuses_what_is_not_a_token(
    make: Callable[..., object], option: str, name: str
) -> None:
    with pytest.raises(OptionError, match=r"must be a .*header names? \(letters, digits"):
        make(**{option: name})


def test_a_token_with_unusual_characters_makes_well_formed_responses(
    loop_factory: LoopFactory,
) -> None:
    """``X_Req.ID~1`` is a token: aiohttp's own client reads it back."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response()

    async def main() -> str:
        app = web.Application()
        context.setup(app, response_header="X_Req.ID~1")
        app.router.add_get("/", ok)
        async with (
            serving(app) as port,
            ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/") as response,
        ):
            assert response.status == 200
            return response.headers["X_Req.ID~1"]

    assert run(loop_factory, main)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: context.RequestContextFilter(context_keys=["user.id"]),  # type: ignore[arg-type]
            "RequestContextFilter: context_keys must be a mapping",
        ),
        (
            lambda: context.install_log_record_factory(context_keys="user.id"),  # type: ignore[arg-type]
            r"install_log_record_factory\(\): context_keys must be a mapping",
        ),
        (
            lambda: context.request_context_processor(context_keys=("user.id",)),  # type: ignore[arg-type]
            r"request_context_processor\(\): context_keys must be a mapping",
        ),
        (
            lambda: context.RequestIdMiddleware(server_timing="yes"),  # type: ignore[arg-type]
            "RequestIdMiddleware: server_timing must be True or False, not 'yes'",
        ),
        (
            lambda: context.RequestIdMiddleware(observers=object()),  # type: ignore[arg-type]
            "RequestIdMiddleware: observers must be a tuple of request observers",
        ),
        (
            lambda: context.ClientPropagation(outside_request="always"),  # type: ignore[arg-type]
            "ClientPropagation: outside_request must be 'skip' or 'generate'",
        ),
    ],
)
def test_constructors_refuse_bad_options_by_name(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        make()


@pytest.mark.parametrize("option", ["server_timing", "observers", "response_header", "validator"])
def test_setup_and_the_middleware_say_the_same_thing(option: str) -> None:
    """One rule per option: the two messages differ only in who was called."""
    bad = object() if option != "observers" else 3
    messages = []
    makers: tuple[Callable[..., object], ...] = (
        context.RequestIdMiddleware,
        lambda **kw: context.setup(web.Application(), **kw),
    )
    for make in makers:
        with pytest.raises(OptionError) as refused:
            make(**{option: bad})
        messages.append(str(refused.value).split(": ", 1)[1])
    assert messages[0] == messages[1]
    assert messages[0].startswith(f"{option} must be {RULES[option][1]}")
