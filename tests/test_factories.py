"""The factories: inheritance semantics, every kwarg shape asyncio and uvloop pass, entry points."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import sys
from functools import partial
from typing import Any

import pytest

import aioreqctx as context
from aioreqctx import keys
from aioreqctx._core.factories import EAGER_TASKS_SUPPORTED
from aioreqctx._core.store import current_mapping

from .conftest import FACTORIES, LoopFactory, run

needs_eager = pytest.mark.skipif(
    not EAGER_TASKS_SUPPORTED, reason="eager tasks exist from Python 3.12"
)
MARK: contextvars.ContextVar[str] = contextvars.ContextVar("MARK", default="unset")

# What a parent sees of each key after its child wrote: (own write, in-place change, late write).
EXPECTED_ISOLATION = {
    "task_factory": {"child_write": "child", "complex": ["child"], "late_seen": "late"},
    "copying_task_factory": {"child_write": None, "complex": ["parent"], "late_seen": None},
    "chainmap_task_factory": {"child_write": None, "complex": ["child"], "late_seen": "late"},
}


async def _child_writes() -> None:
    context.set("child_write", "child")
    context.get("complex")[0] = "child"


def test_inheritance_semantics(loop_factory: LoopFactory, factory_name: str) -> None:
    async def main() -> dict[str, Any]:
        context.set("complex", ["parent"])
        await asyncio.create_task(_child_writes())
        release = asyncio.Event()

        async def sees_late_write() -> Any:
            await release.wait()
            return context.get("late")

        child = asyncio.create_task(sees_late_write())
        await asyncio.sleep(0)
        context.set("late", "late")
        release.set()
        return {
            "child_write": context.get("child_write"),
            "complex": context.get("complex"),
            "late_seen": await child,
        }

    assert run(loop_factory, main, FACTORIES[factory_name]) == EXPECTED_ISOLATION[factory_name]


def test_nesting_five_levels_sees_every_ancestor(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def level(n: int) -> list[Any]:
        context.set(f"level{n}", n)
        seen = [context.get(f"level{i}") for i in range(n + 1)]
        if n == 4:
            return [seen]
        return [seen, *await asyncio.create_task(level(n + 1))]

    async def main() -> tuple[list[Any], Any]:
        views = await level(0)
        return views, context.get("level4")

    views, parent_sees_deepest = run(loop_factory, main, FACTORIES[factory_name])
    assert views == [list(range(n + 1)) for n in range(5)]
    assert parent_sees_deepest == (4 if factory_name == "task_factory" else None)


def test_siblings_are_isolated_unless_sharing(loop_factory: LoopFactory, factory_name: str) -> None:
    async def sibling(name: str, step: asyncio.Event, done: asyncio.Event) -> Any:
        context.set("owner", name)
        step.set()
        await done.wait()
        return context.get("owner")

    async def main() -> list[Any]:
        first_set, second_set = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(sibling("a", first_set, second_set))
        await first_set.wait()
        second = asyncio.create_task(sibling("b", second_set, second_set))
        return [await first, await second]

    expected = ["b", "b"] if factory_name == "task_factory" else ["a", "b"]
    assert run(loop_factory, main, FACTORIES[factory_name]) == expected


def test_copy_is_deep_and_chainmap_shares_nested_objects(loop_factory: LoopFactory) -> None:
    async def mutate_nested() -> None:
        context.get("user")["roles"].append("admin")

    async def main() -> list[str]:
        context.set("user", {"roles": ["reader"]})
        await asyncio.create_task(mutate_nested())
        roles: list[str] = context.get("user")["roles"]
        return roles

    assert run(loop_factory, main, context.copying_task_factory) == ["reader"]
    assert run(loop_factory, main, context.chainmap_task_factory) == ["reader", "admin"]


def test_task_context_is_the_mapping_get_and_set_use(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def adds_to_context() -> bool:
        context.set("foo", "bar")
        return getattr(asyncio.current_task(), "context", None) is context_of_current()

    def context_of_current() -> object:
        return current_mapping.get(None)

    async def main() -> tuple[bool, dict[str, Any], Any]:
        context.set("key", "value")
        task = asyncio.create_task(adds_to_context())
        same = await task
        return same, dict(getattr(task, "context", {})), context.get("foo")

    same, child_view, parent_foo = run(loop_factory, main, FACTORIES[factory_name])
    assert same
    assert child_view == {"key": "value", "foo": "bar"}
    assert parent_foo == ("bar" if factory_name == "task_factory" else None)


def test_task_made_in_a_callback_reads_what_the_callback_carried_and_copies_on_write(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def peek_then_write() -> Any:
        seen = context.get("X-Request-ID", "empty")
        context.set("X-Request-ID", "overwritten by the callback's task")
        return seen

    async def main() -> Any:
        context.set("X-Request-ID", "req-1")
        loop = asyncio.get_running_loop()
        spawned: asyncio.Future[asyncio.Task[Any]] = loop.create_future()
        loop.call_soon(lambda: spawned.set_result(loop.create_task(peek_then_write())))
        return await (await spawned), context.get("X-Request-ID")

    assert run(loop_factory, main, FACTORIES[factory_name]) == ("req-1", "req-1")


def test_task_made_in_a_callback_with_nothing_visible_starts_a_fresh_mapping(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    def in_callback(done: asyncio.Future[Any]) -> None:
        async def child() -> None:
            context.set("child_write", "child")

        async def writes_and_spawns() -> Any:
            await asyncio.create_task(child())
            return context.get("child_write"), type(asyncio.current_task().context)  # type: ignore[union-attr]

        done.set_result(asyncio.get_running_loop().create_task(writes_and_spawns()))

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[asyncio.Task[Any]] = loop.create_future()
        loop.call_soon(in_callback, done, context=contextvars.Context())
        return await (await done)

    child_write, mapping_type = run(loop_factory, main, FACTORIES[factory_name])
    assert child_write == ("child" if factory_name == "task_factory" else None)
    assert mapping_type is (
        context.LayeredContext if factory_name == "chainmap_task_factory" else dict
    )


def test_server_connection_tasks_read_start_up_values_and_never_write_back(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def main() -> list[bytes]:
        context.set("X-Request-ID", "startup")

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(str(context.get("X-Request-ID", "empty")).encode())
            context.set("X-Request-ID", "written by a connection")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        replies = []
        async with server:
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                replies.append(await asyncio.wait_for(reader.read(), 5))
                writer.close()
        replies.append(context.get("X-Request-ID").encode())
        return replies

    assert run(loop_factory, main, FACTORIES[factory_name]) == [b"startup"] * 3


def test_factory_installed_inside_main_covers_later_tasks(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def main() -> Any:
        asyncio.get_running_loop().set_task_factory(FACTORIES[factory_name])
        with context.scope({"X-Request-ID": "r"}):
            return await asyncio.create_task(asyncio.sleep(0, context.get("X-Request-ID")))

    assert run(loop_factory, main) == "r"


def test_asyncio_entry_points_propagate(loop_factory: LoopFactory, factory_name: str) -> None:
    async def read() -> Any:
        return context.get("rid")

    async def main() -> list[Any]:
        context.set("rid", "R")
        seen = list(await asyncio.gather(read(), asyncio.ensure_future(read())))
        seen.append(await asyncio.shield(read()))
        seen.append(await asyncio.wait_for(read(), 5))
        async with asyncio.TaskGroup() as group:
            in_group = group.create_task(read())
        seen.append(in_group.result())
        seen.append(await asyncio.to_thread(context.get, "rid"))
        return seen

    assert run(loop_factory, main, FACTORIES[factory_name]) == ["R"] * 6


def test_wait_for_runs_inline_from_python_3_12(loop_factory: LoopFactory) -> None:
    async def write() -> None:
        context.set("who", "wait_for child")

    async def main() -> Any:
        context.set("who", "parent")
        await asyncio.wait_for(write(), 5)
        return context.get("who")

    inline = sys.version_info >= (3, 12)
    expected = "wait_for child" if inline else "parent"
    assert run(loop_factory, main, context.copying_task_factory) == expected


def test_runner_context_gets_a_root_mapping(loop_factory: LoopFactory, factory_name: str) -> None:
    async def main() -> tuple[bool, Any]:
        context.set("k", "v")
        task = asyncio.current_task()
        current = current_mapping.get(None)
        return getattr(task, "context", None) is current, context.get("k")

    assert run(loop_factory, main, FACTORIES[factory_name]) == (True, "v")


# Every shape of kwargs a factory receives somewhere between CPython 3.11 and 3.14 and uvloop
# 0.23 (platform notes §1.1, pitfall 20); 3.13.3+ and 3.14 cannot run here, so call directly.
KWARG_SHAPES: list[dict[str, Any]] = [
    {},
    {"context": None},
    {"context": None, "eager_start": None},
    {"name": None},
    {"name": "named"},
    {"context": "CALLER"},
    {"name": "named", "context": "CALLER", "eager_start": None},
]
if EAGER_TASKS_SUPPORTED:
    KWARG_SHAPES += [
        {"eager_start": True},
        {"eager_start": False},
        {"name": "named", "context": "CALLER", "eager_start": True},
    ]


@pytest.mark.parametrize("shape", KWARG_SHAPES, ids=repr)
def test_every_kwarg_shape_is_honoured(
    loop_factory: LoopFactory, factory_name: str, shape: dict[str, Any]
) -> None:
    order: list[str] = []

    async def child() -> tuple[str, Any]:
        order.append("first step")
        await asyncio.sleep(0)
        return MARK.get(), context.get("rid")

    async def main() -> tuple[asyncio.Task[Any], tuple[str, Any]]:
        context.set("rid", "parent")
        MARK.set("parent")
        kwargs = dict(shape)
        caller_context = None
        if kwargs.get("context") == "CALLER":
            caller_context = contextvars.copy_context()
            caller_context.run(MARK.set, "caller")
            kwargs["context"] = caller_context
        loop = asyncio.get_running_loop()
        task = FACTORIES[factory_name](loop, child(), **kwargs)
        order.append("factory returned")
        assert isinstance(task, asyncio.Task)
        if caller_context is not None and sys.version_info >= (3, 12):
            assert task.get_context() is caller_context  # type: ignore[attr-defined,unused-ignore]
        return task, await task

    task, (mark, rid) = run(loop_factory, main)
    assert task.get_name() == ("named" if shape.get("name") else task.get_name())
    assert mark == ("caller" if shape.get("context") else "parent")
    assert rid == "parent"
    eager = shape.get("eager_start") is True
    assert order == (
        ["first step", "factory returned"] if eager else ["factory returned", "first step"]
    )


@needs_eager
def test_running_context_passed_back_does_not_crash(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def child() -> Any:
        return context.get("rid")

    async def main() -> Any:
        context.set("rid", "same-context")
        task = asyncio.current_task()
        assert task is not None
        running = task.get_context()  # type: ignore[attr-defined,unused-ignore]
        return await asyncio.create_task(child(), context=running)

    assert run(loop_factory, main, FACTORIES[factory_name]) == "same-context"


def test_failing_construction_closes_the_coroutine(factory_name: str) -> None:
    async def child() -> None:
        pass

    async def main() -> None:
        coro = child()
        with pytest.raises(TypeError):
            FACTORIES[factory_name](asyncio.get_running_loop(), coro, no_such_option=1)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

    asyncio.run(main())


@needs_eager
@pytest.mark.parametrize("mode", ["share", "copy", "chain"])
def test_eager_factories_keep_their_semantics(loop_factory: LoopFactory, mode: Any) -> None:
    order: list[Any] = []

    async def child() -> None:
        order.append(("first step", context.get("rid")))
        context.set("rid", "child")
        task = asyncio.current_task()
        order.append(("owns its mapping", getattr(task, "context", None) == {"rid": "child"}))

    async def main() -> Any:
        context.set("rid", "R")
        task = asyncio.create_task(child())
        order.append(("after create_task", task.done()))
        await task
        return context.get("rid")

    parent_after = run(loop_factory, main, context.task_factory_for(mode, eager=True))
    assert order == [("first step", "R"), ("owns its mapping", True), ("after create_task", True)]
    assert parent_after == ("child" if mode == "share" else "R")


@needs_eager
def test_wraps_another_factory_even_the_stdlib_eager_one(loop_factory: LoopFactory) -> None:
    order: list[str] = []

    async def child() -> Any:
        order.append("first step")
        return context.get("rid")

    async def main() -> Any:
        context.set("rid", "R")
        task = asyncio.create_task(child())
        order.append("after create_task")
        return await task

    stdlib_eager: context.TaskFactory = getattr(asyncio, "eager_task_factory")  # noqa: B009
    factory = context.task_factory_for("copy", inner=stdlib_eager)
    assert run(loop_factory, main, factory) == "R"
    assert order == ["first step", "after create_task"]


def test_task_factory_for_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        context.task_factory_for("deep")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inner must be a task factory"):
        context.task_factory_for(inner=42)  # type: ignore[arg-type]
    if not EAGER_TASKS_SUPPORTED:
        with pytest.raises(ValueError, match=r"Python 3\.12"):
            context.task_factory_for(eager=True)


def test_uncopyable_values_are_shared_with_one_warning(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    class Uncopyable:
        def __deepcopy__(self, memo: object) -> None:
            raise TypeError("holds an OS handle")

    lock = Uncopyable()

    async def child() -> bool:
        return context.get("lock") is lock

    async def main() -> list[bool]:
        context.set("lock", lock)
        return [await asyncio.create_task(child()) for _ in range(3)]

    assert run(loop_factory, main, context.copying_task_factory) == [True] * 3
    warnings = [r for r in caplog.records if "cannot be deep-copied" in r.getMessage()]
    assert len(warnings) == 1
    assert "'lock'" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"context": None}, {"context": None, "eager_start": None}],
    ids=["no keywords", "uvloop's context=None", "uvloop 3.13's eager_start=None"],
)
def test_a_factory_that_cannot_build_the_task_closes_the_coroutine(
    loop_factory: LoopFactory, factory_name: str, kwargs: dict[str, Any]
) -> None:
    async def never_run() -> None:
        raise AssertionError("a task on a closed loop ran")

    loop = loop_factory()
    loop.close()
    coro = never_run()
    with pytest.raises(RuntimeError, match="closed"):
        FACTORIES[factory_name](loop, coro, **kwargs)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" leak


def test_a_copying_child_keeps_the_values_of_its_creation_whatever_the_parent_does_later(
    loop_factory: LoopFactory,
) -> None:
    """Children read their parent's values lazily (no binding per child), so these are the
    paths that must still isolate them: a later write through ``set``, one made straight into
    ``task.context``, and the children's own writes."""

    async def child(release: asyncio.Event) -> tuple[Any, Any]:
        await release.wait()
        seen = context.get("step"), context.get("extra")
        context.set("step", "child")
        return seen, dict(asyncio.current_task().context)  # type: ignore[union-attr]

    async def main() -> list[Any]:
        release = asyncio.Event()
        context.set("step", 1)
        first, second = asyncio.create_task(child(release)), asyncio.create_task(child(release))
        context.set("step", 2)
        third = asyncio.create_task(child(release))
        asyncio.current_task().context["extra"] = "direct"  # type: ignore[union-attr]
        fourth = asyncio.create_task(child(release))
        release.set()
        return [*await asyncio.gather(first, second, third, fourth), context.get("step")]

    *children, parent_step = run(loop_factory, main, context.copying_task_factory)
    assert [seen for seen, _ in children] == [(1, None), (1, None), (2, None), (2, "direct")]
    assert [own["step"] for _, own in children] == ["child"] * 4
    assert parent_step == 2


def test_a_lazily_bound_child_writes_request_metadata_into_its_own_mapping(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def child() -> None:
        context.RequestContext.current().add_metadata(by="child")  # type: ignore[union-attr]

    async def main() -> Any:
        async with context.scope({"X-Request-ID": "r1"}):
            await asyncio.create_task(child())
            return dict(context.RequestContext.current().metadata)  # type: ignore[union-attr]

    expected = {"by": "child"} if factory_name == "task_factory" else {}
    assert run(loop_factory, main, FACTORIES[factory_name]) == expected


def test_untasked_writes_after_a_copying_spawn_reach_neither_the_children_nor_the_request(
    loop_factory: LoopFactory,
) -> None:
    """After a spawn the parent's Context holds the frozen copy its children read, and a thread
    or loop callback the parent starts inherits that Context: their writes must go to a private
    copy. A thread started through ``aioreqctx.run_in_executor`` writes into the request's own
    mapping (its documented contract), which the children made earlier still do not see."""

    async def child(release: asyncio.Event) -> Any:
        await release.wait()
        return context.get("step")

    async def main() -> tuple[list[Any], list[Any]]:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()
        async with context.scope(request_id="r1"):
            context.set("step", 1)
            early = asyncio.create_task(child(release))
            await asyncio.to_thread(context.set, "step", "to_thread")
            called: asyncio.Future[None] = loop.create_future()

            def callback() -> None:
                context.set("step", "call_soon")
                called.set_result(None)

            loop.call_soon(callback)
            await called
            untasked = [context.get("step"), asyncio.create_task(child(release))]
            await context.run_in_executor(None, context.set, "step", "helper")
            late = asyncio.create_task(child(release))
            release.set()
            seen = [await early, await untasked.pop(), await late]
            return seen, [*untasked, context.get("step")]

    children, request = run(loop_factory, main, context.copying_task_factory)
    assert children == [1, 1, "helper"]
    assert request == [1, "helper"]


def test_children_of_a_request_hold_no_more_tracked_objects_than_elsewhere(
    loop_factory: LoopFactory,
) -> None:
    """A request's context holds its OperationTimings (mutable, shared by every copy by design):
    the children a handler fans out to under copying_task_factory share it instead of deep
    copies (10 objects per child before). One object more than in a context of plain values
    remains: each child's own mapping (its ``task.context``) holds that record, so the
    collector tracks the mapping."""

    async def noop() -> None:
        pass

    async def tracked_per_task() -> float:
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            tasks = [asyncio.create_task(noop()) for _ in range(2_000)]
            tracked = len(gc.get_objects()) - before - 1  # the list holding them
        finally:
            gc.enable()
        await asyncio.gather(*tasks)
        return tracked / 2_000

    async def main() -> tuple[float, float]:
        asyncio.get_running_loop().set_task_factory(context.copying_task_factory)
        async with context.unit_of_work("req-fan-out"):
            assert isinstance(context.get(keys.OPERATIONS), context.OperationTimings)
            in_request = await asyncio.create_task(tracked_per_task())
        async with context.scope({"plain": "values"}):
            plain = await asyncio.create_task(tracked_per_task())
        return in_request, plain

    in_request, plain = run(loop_factory, main)
    assert in_request <= 8.01, in_request
    assert in_request <= plain + 1.01, (in_request, plain)


def test_a_policy_that_raises_leaves_no_task_behind(loop_factory: LoopFactory) -> None:
    """The task is built before its mapping; when the policy fails the task never runs, its
    coroutine is closed and nothing is logged."""
    ran: list[str] = []

    async def child() -> None:
        ran.append("child")

    def broken(parent: Any) -> Any:
        raise LookupError("no mapping for you")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(partial(context.compat.task_factory, context_factory=broken))
        coro = child()
        try:
            with pytest.raises(LookupError, match="no mapping"):
                loop.create_task(coro)  # noqa: RUF006 - it raises
        finally:
            loop.set_task_factory(None)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
        for _ in range(3):
            await asyncio.sleep(0)
        return ran

    errors: list[dict[str, Any]] = []
    loop = loop_factory()
    loop.set_exception_handler(lambda _loop, error: errors.append(error))
    try:
        assert loop.run_until_complete(main()) == []
    finally:
        loop.close()
    gc.collect()
    assert errors == []
