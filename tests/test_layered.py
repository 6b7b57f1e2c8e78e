"""LayeredContext: a ChainMap in every observable way, with reads that never go stale."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import io
import json
import logging
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

import aioreqctx as context
from aioreqctx import LayeredContext, keys
from aioreqctx._core import factories, layered
from aioreqctx._core.store import current_mapping, untasked_writes

from .conftest import LoopFactory, run
from .support.http_helpers import serving
from .support.log_capture import ListHandler, attached

KEYS = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 5), KEYS, st.integers()),
        st.tuples(st.just("delete"), st.integers(0, 5), KEYS),
        st.tuples(st.just("clear"), st.integers(0, 5)),
        st.tuples(st.just("root_set"), KEYS, st.integers()),
        st.tuples(st.just("root_clear")),
        st.tuples(st.just("root_metadata"), KEYS, st.integers()),
        st.tuples(st.just("read"), st.integers(0, 5), KEYS),
    ),
    max_size=30,
)


def in_context_of(mapping: dict[str, Any], write: Callable[..., None], *args: Any) -> None:
    """Run ``write`` where ``mapping`` is the current context, as in the task that owns it."""

    def enter_and_write() -> None:
        current_mapping.set(mapping)
        untasked_writes.set(mapping)  # this code owns it (outside a task, writes copy otherwise)
        write(*args)

    contextvars.copy_context().run(enter_and_write)


def layer_over(parent: dict[str, Any] | LayeredContext) -> LayeredContext:
    """What chainmap_task_factory gives a child of a task whose mapping is ``parent``."""
    layer = factories.layer_over(parent)
    assert isinstance(layer, LayeredContext)
    return layer


@given(OPS)
def test_every_layer_reads_like_a_plain_chainmap(ops: list[Any]) -> None:
    """A chain over a plain dict (as in a request whose root came from middleware)."""
    root: dict[str, Any] = {}
    layers = [LayeredContext({}, root)]
    references = [ChainMap(layers[0].maps[0], root)]
    for _ in range(5):
        layers.append(layers[-1].new_layer())
        references.append(ChainMap(layers[-1].maps[0], *references[-1].maps))
    for op in ops:
        if op[0] == "root_set":
            in_context_of(root, context.set, op[1], op[2])
        elif op[0] == "root_clear":
            in_context_of(root, context.clear)
        elif op[0] == "root_metadata":
            context.RequestContext(root).add_metadata(**{op[1]: op[2]})
        if op[0].startswith("root_"):
            continue
        layer, reference = layers[op[1]], references[op[1]]
        if op[0] == "set":
            layer[op[2]] = op[3]
            assert reference[op[2]] == op[3]
        elif op[0] == "delete":
            if op[2] in layer.maps[0]:
                del layer[op[2]]
        elif op[0] == "clear":
            layer.clear()
        for layer, reference in zip(layers, references, strict=True):
            assert dict(layer) == dict(reference)
            assert list(layer) == list(reference)
            assert len(layer) == len(reference)
            for key in "abcd":
                assert layer.get(key, "missing") == reference.get(key, "missing")
                assert (key in layer) == (key in reference)


TREE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("spawn"), st.integers(-1, 7)),
        st.tuples(st.just("set"), st.integers(0, 7), KEYS, st.integers()),
        st.tuples(st.just("delete"), st.integers(0, 7), KEYS),
        st.tuples(st.just("clear"), st.integers(0, 7)),
        st.tuples(st.just("maps"), st.integers(0, 7)),
        st.tuples(st.just("root_set"), KEYS, st.integers()),
    ),
    max_size=40,
)


@given(TREE_OPS)
def test_lazy_layers_read_like_chainmaps_made_at_spawn(ops: list[Any]) -> None:
    """Layers the factory makes hold nothing of their own until a write (or ``maps``) needs it:
    a tree of them, spawned from written and unwritten layers alike, reads as the model says
    (each layer: the root, then every ancestor's own writes, then its own)."""
    root: dict[str, Any] = {}
    layers: list[LayeredContext] = []
    parents: list[int] = []  # -1: the root
    own: list[dict[str, Any]] = []

    def expected(index: int) -> dict[str, Any]:
        if index < 0:
            return dict(root)
        return {**expected(parents[index]), **own[index]}

    for op in ops:
        if op[0] == "spawn":
            parent = op[1] if op[1] < len(layers) else -1
            layers.append(layer_over(root if parent < 0 else layers[parent]))
            parents.append(parent)
            own.append({})
            continue
        if op[0] == "root_set":
            in_context_of(root, context.set, op[1], op[2])
        elif op[1] >= len(layers):
            continue
        elif op[0] == "set":
            layers[op[1]][op[2]] = op[3]
            own[op[1]][op[2]] = op[3]
        elif op[0] == "delete":
            if op[2] in own[op[1]]:
                del layers[op[1]][op[2]]
                del own[op[1]][op[2]]
            else:
                with pytest.raises(KeyError):
                    del layers[op[1]][op[2]]
        elif op[0] == "clear":
            layers[op[1]].clear()
            own[op[1]].clear()
        elif op[0] == "maps":
            assert layers[op[1]].maps[0] == own[op[1]]
        for index, layer in enumerate(layers):
            assert dict(layer) == expected(index)
            assert list(layer) == list(expected(index))
            for key in "abcd":
                assert layer.get(key, "missing") == expected(index).get(key, "missing")


def test_a_child_that_never_writes_holds_no_maps_until_asked() -> None:
    root: dict[str, Any] = {"X-Request-ID": "r"}
    child = layer_over(root)
    grandchild = layer_over(child)  # the child spawns: it gets its own layer now
    assert vars(grandchild).keys() == {"_below", "_lineage"}  # no list, no dict of its own
    root["late"] = 1
    layered.note_write(root)
    assert grandchild["late"] == 1
    assert grandchild["X-Request-ID"] == "r"
    assert grandchild
    assert bool(layer_over({})) is False
    assert vars(grandchild).keys() == {"_below", "_lineage"}  # reading made nothing of its own
    assert grandchild.maps == [{}, {}, root]  # made on first use, ChainMap's shape
    grandchild["own"] = True
    assert "own" not in child
    assert grandchild.maps[0] == {"own": True}


def test_chainmap_api_still_works() -> None:
    base = LayeredContext({"a": 1})
    child = base.new_child({"b": 2})
    assert isinstance(child, LayeredContext)
    assert child.parents == base
    assert child.copy() == {"a": 1, "b": 2}
    child |= {"c": 3}
    assert child["c"] == 3
    assert child.pop("c") == 3
    assert child.popitem() == ("b", 2)
    assert "b" not in child
    assert (child | {"z": 0})["z"] == 0


def test_ten_levels_deep_sees_the_root_and_late_writes() -> None:
    root = LayeredContext({"X-Request-ID": "r"})
    deepest = root
    for _ in range(9):
        deepest = deepest.new_layer()
    assert len(deepest.maps) == 10
    assert deepest.get("X-Request-ID") == "r"
    root["late"] = "seen"
    assert deepest["late"] == "seen"


def test_layers_over_one_root_share_its_lineage_and_see_its_writes_at_once() -> None:
    """Sibling ChainMap children of one dict-mode task, and the ChainMap API's derived maps."""
    root: dict[str, Any] = {"X-Request-ID": "r"}
    first, second = layer_over(root), layer_over(root)
    deep = first
    for _ in range(99):
        deep = layer_over(deep)
    derived = [first.new_child(), deep.parents, deep.copy(), LayeredContext({}, root)]
    views = [first, second, deep, *derived]
    assert all(view.get("user") is None for view in views)
    in_context_of(root, context.set, "user", "alice")
    assert [view.get("user") for view in views] == ["alice"] * len(views)
    deep["user"] = "bob"  # a layer's own write reaches the layers built over it, and no others
    assert deep.get("user") == "bob"
    assert [view.get("user") for view in views if view is not deep] == ["alice"] * 6


def test_a_write_in_one_lineage_leaves_another_lineages_view_cached() -> None:
    """Another request's writes must not make this request's deep reads rebuild their view."""
    root_a: dict[str, Any] = {"X-Request-ID": "a"}
    root_b: dict[str, Any] = {"X-Request-ID": "b"}
    layer_a = layer_over(layer_over(root_a))
    layer_b = layer_over(layer_over(root_b))
    assert (layer_a.get("X-Request-ID"), layer_b.get("X-Request-ID")) == ("a", "b")
    cached_b = layer_b._cache
    in_context_of(root_a, context.set, "user", "alice")
    layer_a["step"] = 1
    context.RequestContext(root_a).add_metadata(user="alice")
    assert (layer_a.get("user"), layer_a.get("step")) == ("alice", 1)
    assert layer_b.get("X-Request-ID") == "b"
    assert layer_b._cache is cached_b


def test_a_hand_built_chain_over_another_layer_sees_that_layers_writes() -> None:
    below = LayeredContext({"a": 1})
    over_root = LayeredContext({}, below)
    in_the_middle = LayeredContext({}, below, {"z": 0})
    assert (over_root.get("b"), in_the_middle.get("b")) == (None, None)
    below["b"] = 2
    assert (over_root.get("b"), in_the_middle.get("b")) == (2, 2)
    assert dict(in_the_middle) == {"a": 1, "b": 2, "z": 0}


def test_lineages_of_finished_requests_leave_the_registry() -> None:
    roots = [{"X-Request-ID": str(number)} for number in range(5000)]  # alive: ids stay unique
    for root in roots:
        layer_over(root).get("X-Request-ID")
    gc.collect()
    assert not {id(root) for root in roots} & layered._lineage_of_root.keys()


def test_a_root_leaves_the_registry_with_its_last_layer() -> None:
    """A request whose children have finished pays nothing more for them on its next ``set``."""
    root: dict[str, Any] = {"X-Request-ID": "r"}
    layers = [layer_over(root), layer_over(root)]
    assert id(root) in layered._lineage_of_root
    del layers[0]
    in_context_of(root, context.set, "a", 1)  # one layer is alive: the entry stays
    assert id(root) in layered._lineage_of_root
    assert layers[0]["a"] == 1
    del layers[0]
    gc.collect()
    assert id(root) not in layered._lineage_of_root
    in_context_of(root, context.set, "b", 2)
    assert layer_over(root).get("b") == 2  # a new child registers it again


def test_the_first_metrics_increment_reaches_a_chainmap_child_that_already_read(
    loop_factory: LoopFactory,
) -> None:
    async def main() -> dict[str, Any]:
        with context.scope({keys.REQUEST_ID: "job-1"}):  # a job: no middleware made OPERATIONS
            child_has_read, incremented = asyncio.Event(), asyncio.Event()

            async def child() -> dict[str, Any]:
                view = context.RequestContext.current()
                assert view is not None
                assert isinstance(view.mapping, LayeredContext)
                assert view.metrics["counters"] == {}
                child_has_read.set()
                await incremented.wait()
                counters: dict[str, Any] = view.metrics["counters"]
                return counters

            task = asyncio.create_task(child())
            await child_has_read.wait()
            context.RequestContext.current().increment("queries")  # type: ignore[union-attr]
            incremented.set()
            return await task

    assert run(loop_factory, main, context.chainmap_task_factory) == {"queries": 1}


def test_the_first_add_metadata_reaches_a_chainmap_childs_log_lines(
    loop_factory: LoopFactory,
) -> None:
    """A real server under chainmap_task_factory: the handler adds metadata after a child task
    has logged once; the child's next structlog and stdlib lines carry it."""
    stream = io.StringIO()
    structlog.configure(
        processors=[context.add_request_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.WriteLoggerFactory(file=stream),
    )
    records = ListHandler()
    records.addFilter(context.RequestContextFilter())
    child_mappings: list[object] = []

    def log_both(event: str) -> None:
        structlog.get_logger().info(event)
        logging.getLogger("tests.layered").info(event)

    async def handler(request: web.Request) -> web.Response:
        child_has_logged, metadata_added = asyncio.Event(), asyncio.Event()

        async def child() -> None:
            context.set("step", "child")  # from its first write the child reads its own layer
            child_mappings.append(current_mapping.get())
            log_both("child before")
            child_has_logged.set()
            await metadata_added.wait()
            log_both("child after")

        task = asyncio.create_task(child())
        await child_has_logged.wait()
        context.RequestContext.current().add_metadata(user="alice")  # type: ignore[union-attr]
        metadata_added.set()
        await task
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        context.setup(app)
        app.router.add_get("/", handler)
        async with serving(app) as port, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/"
            async with session.get(url, headers={"X-Request-ID": "meta-1"}) as response:
                assert response.status == 200

    try:
        with attached("tests.layered", records):
            run(loop_factory, main, context.chainmap_task_factory)
    finally:
        structlog.reset_defaults()
    assert isinstance(child_mappings[0], LayeredContext)
    events = {line["event"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    stdlib = {record.getMessage(): record.__dict__ for record in records.records}
    for fields in (events, stdlib):
        assert fields["child before"]["request_id"] == "meta-1"
        assert "user" not in fields["child before"]
        assert fields["child after"]["request_id"] == "meta-1"
        assert fields["child after"]["user"] == "alice"
