"""User ID callbacks on real servers: whatever they return or accept, IDs stay safe, and a
misbehaving callback is reported once, never turned into a failed request."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web

import aioreqctx as context

from .conftest import LoopFactory, run
from .support.http_helpers import get_request, raw_exchange, serving
from .support.log_capture import ListHandler, attached, capture


def _is_uuid4(value: str | None) -> bool:
    return value is not None and str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"header": request.headers.get("X-Request-ID")})


async def call_downstream(request: web.Request) -> web.Response:
    """Logs one line, calls ``/echo`` through ``ClientPropagation``, reports both IDs."""
    logging.getLogger("app.callbacks").info("handled")
    assert request.transport is not None
    port = request.transport.get_extra_info("sockname")[1]
    url = f"http://127.0.0.1:{port}/echo"
    async with (
        ClientSession(middlewares=(context.ClientPropagation(),)) as session,
        session.get(url) as response,
    ):
        seen = await response.json()
    return web.json_response({"own": context.get(context.REQUEST_ID), "downstream": seen["header"]})


def serve_and_send(loop_factory: LoopFactory, *requests: bytes, **options: Any) -> list[Any]:
    async def main() -> list[Any]:
        app = web.Application()
        context.setup(app, **options)
        app.router.add_get("/", call_downstream)
        app.router.add_get("/echo", echo)
        async with serving(app) as port:
            return [(await raw_exchange(port, request))[0] for request in requests]

    return run(loop_factory, main)


# Each of these splits a line for str.splitlines() (and so for most log viewers) or is no
# visible ASCII; a validator that only checks the length accepts them all.
UNSAFE_IDS = [
    "a\u2028INFO [forged] app: line separator",
    "a\u2029INFO [forged] app: paragraph separator",
    "a\u0085INFO [forged] app: next line",
    "a\tINFO [forged] app: tab",
    "caf\u00e9",
    "two words",
]


@pytest.mark.parametrize("unsafe", UNSAFE_IDS, ids=range(len(UNSAFE_IDS)))
def test_a_custom_validator_cannot_let_an_unsafe_id_through(
    loop_factory: LoopFactory, unsafe: str
) -> None:
    handler = ListHandler("%(request_id)s %(name)s: %(message)s")
    handler.addFilter(context.RequestContextFilter())
    with attached("app.callbacks", handler):
        (reply,) = serve_and_send(
            loop_factory,
            get_request("/", b"X-Request-ID: " + unsafe.encode()),
            validator=lambda value: len(value) <= 100,
        )
    (own,) = reply.all("X-Request-ID")
    assert _is_uuid4(own), own
    body = json.loads(reply.body)
    assert body == {"own": own, "downstream": own}
    assert handler.lines == [f"{own} app.callbacks: handled"]
    assert all(len(line.splitlines()) == 1 for line in handler.lines)


def test_a_custom_validator_still_decides_among_safe_ids(loop_factory: LoopFactory) -> None:
    replies = serve_and_send(
        loop_factory,
        get_request("/", b'X-Request-ID: ~"quoted"&odd!'),
        get_request("/", b"X-Request-ID: " + b"x" * 101),
        validator=lambda value: len(value) <= 100,
    )
    assert replies[0].all("X-Request-ID") == ['~"quoted"&odd!']
    assert _is_uuid4(replies[1].all("X-Request-ID")[0])


def test_the_placeholder_id_is_reserved(loop_factory: LoopFactory) -> None:
    """``-`` means "no request" in log lines, so no client (and no custom validator) may use it."""
    for options in ({}, {"validator": lambda value: True}):
        (reply,) = serve_and_send(loop_factory, get_request("/", b"X-Request-ID: -"), **options)
        assert _is_uuid4(reply.all("X-Request-ID")[0])
    assert not context.is_valid_request_id("-")
    assert context.is_valid_request_id("--")


def _raising() -> str:
    raise RuntimeError("generator bug")


def _raising_validator(value: str) -> bool:
    raise RuntimeError("validator bug")


MISBEHAVING: dict[str, dict[str, Callable[..., Any]]] = {
    "generator raises": {"generator": _raising},
    "generator returns None": {"generator": lambda: None},
    "generator returns an int": {"generator": lambda: 42},
    "generator returns CRLF": {"generator": lambda: "x\r\nSet-Cookie: a=b"},
    "generator returns the placeholder": {"generator": lambda: "-"},
    "validator raises": {"validator": _raising_validator},
    "validator returns junk": {"validator": lambda value: "yes"},
}


@pytest.mark.parametrize("name", sorted(MISBEHAVING))
def test_a_misbehaving_callback_is_reported_once_and_requests_go_on(
    loop_factory: LoopFactory, name: str
) -> None:
    sent = () if name.startswith("generator") else (b"X-Request-ID: sent-by-client",)
    requests = [get_request("/echo", *sent) for _ in range(5)]
    with capture("aioreqctx") as captured:
        replies = serve_and_send(loop_factory, *requests, **MISBEHAVING[name])
    assert [reply.status for reply in replies] == [200] * 5
    ids = [reply.all("X-Request-ID")[0] for reply in replies]
    assert all(_is_uuid4(rid) for rid in ids), ids
    assert len(set(ids)) == 5
    errors = [record for record in captured.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert ("raises" in name) == bool(errors[0].exc_info)
    assert "reported once" in errors[0].getMessage()
    assert len(errors[0].getMessage().splitlines()) == 1


@pytest.mark.parametrize(
    "name", ["generator raises", "generator returns None", "generator returns CRLF"]
)
def test_client_propagation_checks_its_generator_like_the_server(
    loop_factory: LoopFactory, name: str
) -> None:
    propagation = context.ClientPropagation(
        outside_request="generate", generator=MISBEHAVING[name]["generator"]
    )

    async def main() -> list[str | None]:
        app = web.Application()
        app.router.add_get("/echo", echo)
        async with serving(app) as port, ClientSession(middlewares=(propagation,)) as session:
            seen = []
            for _ in range(3):
                async with session.get(f"http://127.0.0.1:{port}/echo") as response:
                    seen.append((await response.json())["header"])
            return seen

    with capture("aioreqctx") as captured:
        seen = run(loop_factory, main)
    assert all(_is_uuid4(header) for header in seen), seen
    assert len(set(seen)) == 3
    assert len([r for r in captured.records if r.levelno >= logging.ERROR]) == 1
