"""aioreqctx behaves like aiotask-context 0.6.1: same names, same output for the same program.

Where aiotask-context still runs (plain asyncio, factory installed before the first task, no
``context=``), both libraries run the same programs and must print the same lines.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

import aiotask_context
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aioreqctx

from .conftest import LOOPS

LEGACY_FACTORIES = ["task_factory", "copying_task_factory", "chainmap_task_factory"]
Program = Callable[[ModuleType, list[str], asyncio.AbstractEventLoop], Coroutine[Any, Any, None]]


def test_every_public_name_of_aiotask_context_is_offered() -> None:
    imported_helpers = {"ChainMap", "deepcopy", "partial"}
    public = {
        name
        for name, value in vars(aiotask_context).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    } - imported_helpers
    assert public == {
        "NO_LOOP_EXCEPTION_MSG", "PY37", "asyncio_current_task", "chainmap_context_factory",
        "chainmap_task_factory", "clear", "copying_task_factory", "dict_context_factory", "get",
        "logger", "set", "task_factory",
    }  # fmt: skip
    assert public <= set(aioreqctx.__all__)
    assert aioreqctx.NO_LOOP_EXCEPTION_MSG == aiotask_context.NO_LOOP_EXCEPTION_MSG
    assert aioreqctx.PY37 is True


@pytest.mark.parametrize(
    "name",
    ["get", "set", "clear", "dict_context_factory", "chainmap_context_factory", *LEGACY_FACTORIES],
)
def test_signatures_accept_every_upstream_call(name: str) -> None:
    upstream = inspect.signature(getattr(aiotask_context, name)).parameters
    ours = inspect.signature(getattr(aioreqctx, name)).parameters
    assert list(ours)[: len(upstream)] == list(upstream)
    for param in upstream.values():
        assert ours[param.name].default == param.default


def test_context_factories_match_upstream() -> None:
    parent = {"a": [1]}
    assert aioreqctx.dict_context_factory() == aiotask_context.dict_context_factory() == {}
    assert aioreqctx.dict_context_factory(parent) is parent
    copied = aioreqctx.dict_context_factory(parent, copy_context=True)
    assert copied == parent
    assert copied["a"] is not parent["a"]
    layer = aioreqctx.chainmap_context_factory(parent)
    assert isinstance(layer, aioreqctx.LayeredContext)
    layer["a"] = 2
    assert (layer["a"], parent["a"], layer.maps[-1] is parent) == (2, [1], True)
    assert isinstance(
        aioreqctx.chainmap_context_factory(), type(aiotask_context.chainmap_context_factory())
    )


def test_asyncio_current_task_is_none_without_a_loop() -> None:
    assert aioreqctx.asyncio_current_task() is None


def _run_program(
    library: ModuleType, factory_name: str, program: Program, loop_name: str = "asyncio"
) -> list[str]:
    lines: list[str] = []
    loop = LOOPS[loop_name]()
    try:
        loop.set_task_factory(getattr(library, factory_name))
        loop.run_until_complete(program(library, lines, loop))
    finally:
        loop.close()
    return lines


async def readme_comparison(
    ctx: ModuleType, out: list[str], loop: asyncio.AbstractEventLoop
) -> None:
    async def child() -> None:
        ctx.set("simple", "from child")
        ctx.get("complex")[1] = "child"
        out.append(f"child: simple={ctx.get('simple')}, complex={ctx.get('complex')}")

    ctx.set("simple", "from parent")
    ctx.set("complex", ["from", "parent"])
    out.append(f"parent before: simple={ctx.get('simple')}, complex={ctx.get('complex')}")
    await loop.create_task(child())
    out.append(f"parent after: simple={ctx.get('simple')}, complex={ctx.get('complex')}")


README_TABLE = {
    "task_factory": [
        "parent before: simple=from parent, complex=['from', 'parent']",
        "child: simple=from child, complex=['from', 'child']",
        "parent after: simple=from child, complex=['from', 'child']",
    ],
    "copying_task_factory": [
        "parent before: simple=from parent, complex=['from', 'parent']",
        "child: simple=from child, complex=['from', 'child']",
        "parent after: simple=from parent, complex=['from', 'parent']",
    ],
    "chainmap_task_factory": [
        "parent before: simple=from parent, complex=['from', 'parent']",
        "child: simple=from child, complex=['from', 'child']",
        "parent after: simple=from parent, complex=['from', 'child']",
    ],
}


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize("factory_name", LEGACY_FACTORIES)
def test_readme_comparison_table_verbatim(factory_name: str, loop_name: str) -> None:
    ours = _run_program(aioreqctx, factory_name, readme_comparison, loop_name)
    assert ours == README_TABLE[factory_name]
    assert _run_program(aiotask_context, factory_name, readme_comparison) == ours


async def readme_gather(ctx: ModuleType, out: list[str], loop: asyncio.AbstractEventLoop) -> None:
    async def coro_0() -> None:
        out.append("0: " + ctx.get("status"))

    async def coro_1() -> None:
        ctx.set("status", "DONE")

    ctx.set("status", "RUNNING")
    out.append("2: " + ctx.get("status"))
    await asyncio.gather(asyncio.ensure_future(coro_1()), coro_0())
    out.append("2: " + ctx.get("status"))


async def readme_spawner(ctx: ModuleType, out: list[str], loop: asyncio.AbstractEventLoop) -> None:
    async def coro_0() -> None:
        ctx.set("status", "FAILED")
        out.append("0: " + ctx.get("status"))

    async def coro_1_child() -> None:
        out.append("1 (child): " + ctx.get("status"))

    async def coro_1() -> None:
        ctx.set("status", "PENDING")
        out.append("1: " + ctx.get("status"))
        await coro_1_child()

    ctx.set("status", "RUNNING")
    out.append("2: " + ctx.get("status"))
    await asyncio.gather(asyncio.ensure_future(coro_1()), coro_0())
    out.append("2: " + ctx.get("status"))


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
@pytest.mark.parametrize(
    ("factory_name", "program", "expected"),
    [
        ("task_factory", readme_gather, ["2: RUNNING", "0: DONE", "2: DONE"]),
        *[
            (
                name,
                readme_spawner,
                ["2: RUNNING", "1: PENDING", "1 (child): PENDING", "0: FAILED", "2: RUNNING"],
            )
            for name in ("copying_task_factory", "chainmap_task_factory")
        ],
    ],
)
def test_readme_gather_examples(
    factory_name: str, program: Program, expected: list[str], loop_name: str
) -> None:
    assert _run_program(aioreqctx, factory_name, program, loop_name) == expected
    assert _run_program(aiotask_context, factory_name, program) == expected


# A random tree of tasks: each one sets, reads and mutates keys, spawns children (awaited at
# once or after the parent's later writes); both libraries must produce the same trace.
KEYS = st.sampled_from(["a", "b", "c"])
LEAF_OPS = st.one_of(
    st.tuples(st.just("set"), KEYS, st.integers(0, 9)),
    st.tuples(st.just("set_list"), KEYS, st.integers(0, 9)),
    st.tuples(st.just("get"), KEYS),
    st.tuples(st.just("append"), KEYS, st.integers(0, 9)),
)
TASK_TREES = st.recursive(
    st.lists(LEAF_OPS, max_size=4),
    lambda children: st.lists(
        st.one_of(LEAF_OPS, st.tuples(st.sampled_from(["await", "later"]), children)),
        max_size=4,
    ),
    max_leaves=12,
)


def _tree_program(tree: list[Any]) -> Program:
    async def program(ctx: ModuleType, out: list[str], loop: asyncio.AbstractEventLoop) -> None:
        async def node(path: str, ops: list[Any]) -> None:
            pending = []
            for index, op in enumerate(ops):
                if op[0] == "set":
                    ctx.set(op[1], op[2])
                elif op[0] == "set_list":
                    ctx.set(op[1], [op[2]])
                elif op[0] == "get":
                    out.append(f"{path} {op[1]}={ctx.get(op[1])}")
                elif op[0] == "append":
                    value = ctx.get(op[1])
                    if isinstance(value, list):
                        value.append(op[2])
                elif op[0] == "await":
                    await loop.create_task(node(f"{path}.{index}", op[1]))
                else:
                    pending.append(loop.create_task(node(f"{path}.{index}", op[1])))
            for task in pending:
                await task
            out.append(f"{path} end " + " ".join(f"{k}={ctx.get(k)}" for k in "abc"))

        await node("root", tree)

    return program


@settings(max_examples=60, deadline=None)
@given(tree=TASK_TREES, factory_name=st.sampled_from(LEGACY_FACTORIES))
def test_random_task_trees_match_aiotask_context(tree: list[Any], factory_name: str) -> None:
    program = _tree_program(tree)
    expected = _run_program(aiotask_context, factory_name, program)
    for loop_name in sorted(LOOPS):
        assert _run_program(aioreqctx, factory_name, program, loop_name) == expected
