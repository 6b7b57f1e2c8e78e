"""LayeredContext: a ChainMap in every observable way, with reads that never go stale."""

from __future__ import annotations

from collections import ChainMap
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import aioreqctx as context
from aioreqctx import LayeredContext

KEYS = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.integers(0, 5), KEYS, st.integers()),
        st.tuples(st.just("delete"), st.integers(0, 5), KEYS),
        st.tuples(st.just("clear"), st.integers(0, 5)),
        st.tuples(st.just("root_dict_write"), KEYS, st.integers()),
        st.tuples(st.just("read"), st.integers(0, 5), KEYS),
    ),
    max_size=30,
)


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
        if op[0] == "root_dict_write":
            # A plain root is written through aioreqctx.set in its own task; emulate that here.
            with context.scope() as mapping:
                root[op[1]] = op[2]
                context.set("unrelated", mapping)
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
