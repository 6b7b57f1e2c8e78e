"""RequestContext shows the request wherever its context reaches, and never fails to serialise."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import structlog
from aiohttp import web

import aioreqctx as context
from aioreqctx import keys

from .conftest import LoopFactory, run
from .support.http_helpers import get_request, raw_exchange, serving
from .support.log_capture import capture


def seen_here(where: str) -> dict[str, Any]:
    current = context.RequestContext.current()
    assert current is not None, f"no RequestContext in {where}"
    return {"id": current.request_id, "metadata": dict(current.metadata)}


async def handler(request: web.Request) -> web.Response:
    current = context.RequestContext.current()
    assert current is not None
    current.add_metadata(user="alice")

    async def child() -> dict[str, Any]:
        with context.timed_operation("child-work"):
            context.RequestContext.current().increment("queries", 2)  # type: ignore[union-attr]
        return seen_here("a child task")

    in_child = await asyncio.create_task(child())
    in_thread = await context.run_in_executor(None, seen_here, "an executor thread")
    body = {
        "handler": seen_here("the handler"),
        "child": in_child,
        "thread": in_thread,
        "metrics": current.metrics,
        "start_time": current.start_time,
        "duration_ms": current.duration_ms,
    }
    return web.json_response(body)


def test_handler_children_and_threads_see_the_request(loop_factory: LoopFactory) -> None:
    async def main() -> list[dict[str, Any]]:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            responses = await raw_exchange(
                port, get_request("/", b"X-Request-ID: first"), get_request("/")
            )
        return [json.loads(response.body) for response in responses]

    first, second = run(loop_factory, main)
    expected = {"id": "first", "metadata": {"user": "alice"}}
    assert first["handler"] == first["child"] == first["thread"] == expected
    assert second["handler"]["id"] not in (None, "first")
    assert second["thread"]["id"] == second["handler"]["id"]
    assert first["metrics"]["counters"] == {"queries": 2}
    assert [op["name"] for op in first["metrics"]["operations"]] == ["child-work"]
    assert first["start_time"] > 1.6e9
    assert first["duration_ms"] > 0


def test_there_is_none_outside_a_request() -> None:
    assert context.RequestContext.current() is None
    with context.scope():
        assert context.RequestContext.current() is None  # a scope without an ID is no request
    with context.scope({keys.REQUEST_ID: "r"}):
        current = context.RequestContext.current()
        assert current is not None
        assert current.request_id == "r"
        assert current.start_time is None
        assert current.duration_ms == 0.0
        assert current.metrics == {"counters": {}, "operations": []}


def test_add_metadata_writes_into_the_mapping_itself() -> None:
    with context.scope({keys.REQUEST_ID: "r"}) as mapping:
        current = context.RequestContext(mapping)
        assert current.metadata == {}
        assert keys.METADATA not in mapping
        current.add_metadata(tenant="t1")
        current.add_metadata(plan="pro", tenant="t2")
        assert mapping[keys.METADATA] == {"tenant": "t2", "plan": "pro"}
        assert context.RequestContext.current().metadata == {"tenant": "t2", "plan": "pro"}  # type: ignore[union-attr]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BrokenMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        return 1


def test_to_dict_is_json_whatever_the_metadata_holds() -> None:
    cycle: list[Any] = [1]
    cycle.append(cycle)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    with context.scope({keys.REQUEST_ID: "r"}) as mapping:
        current = context.RequestContext(mapping)
        current.add_metadata(
            odd=Unprintable(),
            cycle=cycle,
            loop=loop,
            raw=b"\xff\x00ok",
            tags={"b", "a"},
            nan=math.nan,
            deep=deep,
            broken=BrokenMapping(),
            lock=threading.Lock(),
            shared=[cycle, cycle],
            **{"key with\nnewline": 1},
        )
        data = current.to_dict()
    metadata = json.loads(json.dumps(data, allow_nan=False))["metadata"]
    assert metadata["odd"] == "<unprintable Unprintable>"
    assert metadata["cycle"] == [1, "<cycle: list>"]
    assert metadata["loop"] == {"self": "<cycle: dict>"}
    assert metadata["raw"] == "\\xff\x00ok"
    assert metadata["tags"] == ["a", "b"]
    assert metadata["nan"] == "nan"
    assert "nested deeper than" in json.dumps(metadata["deep"])
    assert metadata["broken"].startswith("<")  # its repr, since it cannot be iterated
    assert "lock" in metadata["lock"]
    assert metadata["shared"] == [[1, "<cycle: list>"]] * 2  # repeated is not a cycle
    assert metadata["key with\nnewline"] == 1
    assert data["request_id"] == "r"


def test_log_event_carries_the_id_and_duration() -> None:
    with (
        capture("aioreqctx.requests") as captured,
        context.scope({keys.REQUEST_ID: "r-1", keys.START_MONOTONIC: 0.0}) as mapping,
    ):
        context.RequestContext(mapping).log_event("cache_miss", key="a b", level=logging.WARNING)
    (fields,) = captured.fields("cache_miss")
    assert fields["request_id"] == "r-1"
    assert isinstance(fields["duration_ms"], float)
    assert fields["duration_ms"] > 0
    assert captured.records[0].levelno == logging.WARNING
    assert "cache_miss request_id=r-1 duration_ms=" in captured.text()
    assert 'key="a b"' in captured.text()


def test_log_event_to_structlog() -> None:
    with structlog.testing.capture_logs() as logs, context.scope({keys.REQUEST_ID: "r-2"}) as m:
        context.RequestContext(m, logger=structlog.get_logger()).log_event("done", items=3)
    assert logs == [
        {"event": "done", "request_id": "r-2", "duration_ms": 0.0, "items": 3, "log_level": "info"}
    ]


def test_requests_units_of_work_and_jobs_start_with_the_same_bookkeeping(
    loop_factory: LoopFactory,
) -> None:
    seen: dict[str, list[str]] = {}

    async def handler(request: web.Request) -> web.Response:
        current = context.RequestContext.current()
        assert current is not None
        seen["request"] = list(current.mapping)
        return web.Response()

    async def main() -> None:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            await raw_exchange(port, get_request("/", b"X-Request-ID: same-keys"))

    run(loop_factory, main)
    with context.unit_of_work("work-1") as work:
        seen["unit_of_work"] = list(work.mapping)
    with context.JobPropagation().job_scope({}, job_id="j", job_name="n") as mapping:
        seen["job"] = list(mapping)
    start = [keys.REQUEST_ID, keys.START_MONOTONIC, keys.START_TIME, keys.OPERATIONS]
    assert {where: found[:4] for where, found in seen.items()} == dict.fromkeys(seen, start)
    assert set(seen) == {"request", "unit_of_work", "job"}
