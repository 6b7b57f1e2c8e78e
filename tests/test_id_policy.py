"""The ID policy on a real server: which incoming IDs are used, and what happens to the rest."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aioreqctx as context
from aioreqctx._core.ids import ESCAPED_LIMIT

from .conftest import FACTORIES, LoopFactory, run
from .http_helpers import RawResponse, get_request, raw_exchange, serving


async def report(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "rid": context.get(context.REQUEST_ID),
            "rejected": context.get(context.keys.REJECTED_REQUEST_ID),
        }
    )


def exchange(loop_factory: LoopFactory, *requests: bytes, **options: Any) -> list[RawResponse]:
    async def main() -> list[RawResponse]:
        app = web.Application()
        context.setup(app, **options)
        app.router.add_get("/", report)
        async with serving(app) as port:
            return [(await raw_exchange(port, request))[0] for request in requests]

    return run(loop_factory, main)


def _is_uuid4(value: str) -> bool:
    return str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4


ACCEPTED = [
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "0F8FAD5B-D9CB-469F-A165-70867728950E",
    "4bf92f3577b34da6a3ce929d0e0e4736",  # nginx $request_id
    "01ARZ3NDEKTSV4RRFFQ69G5FAV",  # ULID
    "dGVzdA+/=",
    "svc:req@shard_1.a-b",
    "x" * 200,
]


def test_valid_ids_are_used_as_sent(loop_factory: LoopFactory) -> None:
    requests = [get_request("/", f"X-Request-ID: {value}".encode()) for value in ACCEPTED]
    replies = exchange(loop_factory, *requests)
    for value, reply in zip(ACCEPTED, replies, strict=True):
        assert reply.all("X-Request-ID") == [value]
        assert json.loads(reply.body) == {"rid": value, "rejected": None}


@pytest.mark.parametrize(
    "options", [{}, {"header_names": ("X-Request-ID", "X-Correlation-ID")}], ids=["one", "two"]
)
def test_of_two_x_request_id_headers_the_first_wins(
    loop_factory: LoopFactory, options: dict[str, Any]
) -> None:
    both_valid, first_invalid = exchange(
        loop_factory,
        get_request("/", b"X-Request-ID: first-1", b"X-Request-ID: second-1"),
        get_request("/", b"X-Request-ID: bad id", b"X-Request-ID: second-2"),
        **options,
    )
    assert both_valid.all("X-Request-ID") == ["first-1"]
    assert json.loads(both_valid.body) == {"rid": "first-1", "rejected": None}
    # The first is the one judged: invalid, so a new ID, never the second header's value.
    (new_id,) = first_invalid.all("X-Request-ID")
    assert _is_uuid4(new_id)
    assert json.loads(first_invalid.body) == {"rid": new_id, "rejected": "bad id"}


INVALID = [
    b"has space",
    b"tab\there",
    b"ctrl\x01char",
    b"latin-1 \xe9",
    b"x" * 201,
    b"semi;colon",
    b'quote"d',
]


def test_invalid_ids_are_replaced_never_echoed_and_kept_escaped(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    requests = [get_request("/", b"X-Request-ID: " + raw) for raw in INVALID]
    caplog.handler.addFilter(context.RequestContextFilter())
    with caplog.at_level(logging.WARNING, logger="aioreqctx"):
        replies = exchange(loop_factory, *requests)
    for raw, reply in zip(INVALID, replies, strict=True):
        if reply.status == 400:  # aiohttp's parser refused the bytes before any middleware
            assert raw not in reply.body
            continue
        (sent_back,) = reply.all("X-Request-ID")
        assert _is_uuid4(sent_back)
        body = json.loads(reply.body)
        assert body["rid"] == sent_back
        assert body["rejected"]
        assert "\n" not in body["rejected"]
        assert len(body["rejected"]) <= ESCAPED_LIMIT * 4 + 20
    records = [r for r in caplog.records if "invalid X-Request-ID" in r.getMessage()]
    assert records
    assert all("\n" not in r.getMessage() and "\x01" not in r.getMessage() for r in records)
    # Logged inside the request: each warning carries the ID the request got instead.
    new_ids = {reply.all("X-Request-ID")[0] for reply in replies if reply.status != 400}
    assert {getattr(r, "request_id", None) for r in records} == new_ids


def test_ten_kilobyte_id_is_never_echoed(loop_factory: LoopFactory) -> None:
    huge = b"A" * 10_000

    async def main() -> tuple[RawResponse, RawResponse]:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", report)
        request = get_request("/", b"X-Request-ID: " + huge)
        async with serving(app) as default_port, serving(app, max_field_size=16_384) as port:
            (refused,) = await raw_exchange(default_port, request)
            (handled,) = await raw_exchange(port, request)
        return refused, handled

    refused, handled = run(loop_factory, main)
    # aiohttp's own parser refuses it first (its error text quotes up to 100 bytes of it).
    assert refused.status == 400
    assert refused.all("X-Request-ID") == []
    # With a larger limit the middleware sees it: replaced, kept escaped and truncated.
    assert _is_uuid4(handled.all("X-Request-ID")[0])
    rejected = json.loads(handled.body)["rejected"]
    assert rejected == "A" * 64 + "...(+9936 chars)"


def test_reject_policy_answers_400_with_a_fresh_id(loop_factory: LoopFactory) -> None:
    bad, good = (
        get_request("/", b"X-Request-ID: bad id"),
        get_request("/", b"X-Request-ID: good-id"),
    )
    rejected, accepted = exchange(loop_factory, bad, good, on_invalid="reject")
    assert rejected.status == 400
    assert _is_uuid4(rejected.all("X-Request-ID")[0])
    assert b"bad id" not in rejected.body
    assert accepted.all("X-Request-ID") == ["good-id"]


TRACEPARENT = b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_headers_in_order_of_preference(loop_factory: LoopFactory) -> None:
    sources = ("X-Request-ID", "X-Correlation-ID", "traceparent")
    replies = exchange(
        loop_factory,
        get_request("/", b"x-correlation-id: corr-1", b"X-REQUEST-ID: first"),
        get_request("/", b"X-Correlation-ID: corr-2", TRACEPARENT),
        get_request("/", TRACEPARENT),
        get_request("/", b"traceparent: 00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"),
        get_request("/", b"X-Request-ID: bad id", b"X-Correlation-ID: corr-3"),
        header_names=sources,
    )
    ids = [reply.all("X-Request-ID")[0] for reply in replies]
    assert ids[:3] == ["first", "corr-2", "4bf92f3577b34da6a3ce929d0e0e4736"]
    assert _is_uuid4(ids[3])  # an all-zero trace-id is invalid
    assert ids[4] == "corr-3"
    assert json.loads(replies[4].body)["rejected"] == "bad id"


@pytest.mark.parametrize(
    ("networks", "trusted"), [(("10.0.0.0/8",), False), (("10.0.0.0/8", "127.0.0.0/8"), True)]
)
def test_incoming_ids_only_from_trusted_networks(
    loop_factory: LoopFactory, networks: tuple[str, ...], trusted: bool
) -> None:
    (reply,) = exchange(
        loop_factory, get_request("/", b"X-Request-ID: from-proxy"), trusted_networks=networks
    )
    (sent_back,) = reply.all("X-Request-ID")
    assert (sent_back == "from-proxy") is trusted


def test_custom_validator_and_generator_and_their_failures(loop_factory: LoopFactory) -> None:
    numbers = iter(range(100))
    replies = exchange(
        loop_factory,
        get_request("/", b"X-Request-ID: 12345"),
        get_request("/", b"X-Request-ID: abc"),
        validator=str.isdigit,
        generator=lambda: f"gen-{next(numbers)}",
    )
    assert [reply.all("X-Request-ID")[0] for reply in replies] == ["12345", "gen-0"]

    def explodes(value: str) -> bool:
        raise RuntimeError("bug in the validator")

    (reply,) = exchange(
        loop_factory,
        get_request("/", b"X-Request-ID: abc"),
        validator=explodes,
        generator=lambda: "not safe\r\n",
    )
    assert reply.status == 200
    assert _is_uuid4(reply.all("X-Request-ID")[0])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"header_names": "X-Request-ID"}, "non-empty tuple"),
        ({"header_names": ()}, "non-empty tuple"),
        ({"response_header": "Bad Header"}, "response_header must be a header name"),
        ({"on_invalid": "drop"}, "on_invalid must be"),
        ({"validator": None}, "validator must be a function"),
        ({"trusted_networks": ("nonsense",)}, "is not a network"),
        ({"trusted_networks": "10.0.0.0/8"}, "tuple of CIDR strings"),
    ],
)
def test_bad_options_say_what_is_wrong(options: dict[str, Any], error: str) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        context.RequestIdMiddleware(**options)


def test_setup_twice_is_refused() -> None:
    app = web.Application()
    context.setup(app)
    with pytest.raises(RuntimeError, match="already called"):
        context.setup(app)


def test_server_timing_includes_operations_timed_in_child_tasks(
    loop_factory: LoopFactory,
) -> None:
    @context.timed_operation("render")
    def render() -> str:
        return "page"

    async def handler(request: web.Request) -> web.Response:
        async def query() -> None:
            async with context.timed_operation("db query"):
                await asyncio.sleep(0.01)

        await asyncio.create_task(query())
        return web.Response(text=render())

    async def main() -> tuple[list[str], list[str]]:
        asyncio.get_running_loop().set_task_factory(FACTORIES["copying_task_factory"])
        on, off = web.Application(), web.Application()
        context.setup(on, server_timing=True)
        context.setup(off)
        for app in (on, off):
            app.router.add_get("/", handler)
        async with serving(on) as on_port, serving(off) as off_port:
            (with_header,) = await raw_exchange(on_port, get_request("/"))
            (without,) = await raw_exchange(off_port, get_request("/"))
        return with_header.all("Server-Timing"), without.all("Server-Timing")

    (header,), absent = run(loop_factory, main)
    assert absent == []
    parts = [part.strip().split(";dur=") for part in header.split(",")]
    names = [name for name, _ in parts]
    assert names == ["total", "db_query", "render"]
    durations = {name: float(value) for name, value in parts}
    assert durations["db_query"] >= 9.0
    assert durations["total"] >= durations["db_query"]


def test_client_hanging_up_mid_request_leaves_the_server_healthy(
    loop_factory: LoopFactory,
) -> None:
    finished: list[Any] = []

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        finished.append(context.get(context.REQUEST_ID))
        return web.Response(text="late")

    async def main() -> tuple[RawResponse, Any]:
        context.set("app", "startup")
        app = web.Application()
        context.setup(app)
        app.router.add_get("/slow", slow)
        app.router.add_get("/", report)
        async with serving(app) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/slow", b"X-Request-ID: gone-1"))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await asyncio.sleep(0.3)
            (after,) = await raw_exchange(port, get_request("/", b"X-Request-ID: after-1"))
        return after, dict(getattr(asyncio.current_task(), "context", {}))

    after, startup = run(loop_factory, main)
    assert finished == ["gone-1"]
    assert json.loads(after.body)["rid"] == "after-1"
    assert startup == {"app": "startup"}


HEADER_BYTES = st.binary(min_size=0, max_size=300).filter(
    lambda b: b"\r" not in b and b"\n" not in b
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(HEADER_BYTES, min_size=1, max_size=20))
def test_any_header_bytes_never_crash_and_the_id_is_always_valid(values: list[bytes]) -> None:
    requests = [get_request("/", b"X-Request-ID: " + value) for value in values]
    requests.append(get_request("/", b"X-Request-ID: still-alive"))

    async def main() -> list[RawResponse]:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", report)
        async with serving(app) as port:
            replies = []
            for request in requests:
                try:
                    replies += await raw_exchange(port, request)
                except (ConnectionError, asyncio.IncompleteReadError):
                    replies.append(RawResponse(status=400))  # the parser hung up on us
            return replies

    replies = run(asyncio.new_event_loop, main)
    for reply in replies[:-1]:
        if reply.status == 400 and not reply.all("X-Request-ID"):
            continue  # refused by aiohttp's parser before any middleware ran
        (sent_back,) = reply.all("X-Request-ID")
        assert context.is_valid_request_id(sent_back)
    assert replies[-1].all("X-Request-ID") == ["still-alive"]
