"""get/set/clear and scope: where reads and writes land, with and without a task factory."""

from __future__ import annotations

import asyncio

import pytest

import aioreqctx as context

from .conftest import LoopFactory, run


def test_get_outside_any_task_returns_the_default() -> None:
    assert context.get("X-Request-ID") is None
    assert context.get("X-Request-ID", "none") == "none"


@pytest.mark.parametrize("write", [lambda: context.set("k", 1), context.clear])
def test_writes_outside_any_task_raise_the_upstream_error(write: object) -> None:
    assert callable(write)
    with pytest.raises(ValueError, match=r"^No event loop found, key .* couldn't be set: "):
        write()


def test_get_in_a_task_no_factory_made_is_the_default_and_set_works(
    loop_factory: LoopFactory,
) -> None:
    async def main() -> tuple[object, object, bool]:
        before = context.get("k", "default")
        context.set("k", "v")
        task = asyncio.current_task()
        return before, context.get("k"), getattr(task, "context", None) == {"k": "v"}

    assert run(loop_factory, main) == ("default", "v", True)


def test_clear_in_a_task_with_nothing_set_is_a_no_op(loop_factory: LoopFactory) -> None:
    async def main() -> object:
        context.clear()
        return context.get("k", "empty")

    assert run(loop_factory, main) == "empty"


def test_scope_is_fresh_isolated_and_restores_the_previous_context(
    loop_factory: LoopFactory,
) -> None:
    async def main() -> list[object]:
        task = asyncio.current_task()
        context.set("outer", 1)
        outer = getattr(task, "context", None)
        seen: list[object] = []
        async with context.scope({"X-Request-ID": "job-1"}, attempt=2) as inner:
            seen += [context.get("outer"), context.get("X-Request-ID"), context.get("attempt")]
            seen.append(getattr(task, "context", None) is inner)
            context.set("inner-only", True)
        seen += [context.get("inner-only"), context.get("outer")]
        seen.append(getattr(task, "context", None) is outer)
        return seen

    assert run(loop_factory, main) == [None, "job-1", 2, True, None, 1, True]


def test_scope_works_without_a_task_and_allows_writes() -> None:
    with context.scope(user="ana") as mapping:
        context.set("step", "parse")
        assert context.get("user") == "ana"
        assert mapping == {"user": "ana", "step": "parse"}
    assert context.get("user") is None


def test_scope_can_be_reused_but_not_reentered() -> None:
    job = context.scope(n=1)
    with job:
        context.set("n", 2)
        with pytest.raises(RuntimeError, match="already open"), job:
            pass
    with job as again:
        assert again == {"n": 1}


def test_nested_scopes_unwind_in_order() -> None:
    with context.scope(level=1):
        with context.scope(level=2):
            assert context.get("level") == 2
        assert context.get("level") == 1
    assert context.get("level") is None
