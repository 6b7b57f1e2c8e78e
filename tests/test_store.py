"""get/set/clear and scope: where reads and writes land, with and without a task factory."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import warnings
from typing import Any

import pytest

import aioreqctx as context
from aioreqctx._core import store

from .conftest import LoopFactory, run
from .support.log_capture import ListHandler, attached


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


def test_scope_request_id_keyword_is_the_request_id(loop_factory: LoopFactory) -> None:
    lines = ListHandler("[%(request_id)s] %(message)s")
    lines.addFilter(context.RequestContextFilter())

    async def main() -> list[object]:
        async with context.scope(request_id="abc", tenant="acme") as inner:
            logging.getLogger("tests.scope").info("inside")
            return [inner.get("request_id"), context.get(context.REQUEST_ID), inner["tenant"]]

    with attached("tests.scope", lines):
        assert run(loop_factory, main) == [None, "abc", "acme"]
    assert lines.lines == ["[abc] inside"]
    same = context.scope({context.REQUEST_ID: "abc"}, request_id="abc")
    with same as mapping:
        assert mapping == {context.REQUEST_ID: "abc"}
    with pytest.raises(ValueError, match=r"request_id= and aioreqctx\.REQUEST_ID"):
        context.scope({context.REQUEST_ID: "abc"}, request_id="other")


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


def test_tasks_no_factory_made_read_what_they_inherit_and_write_their_own_copy(
    loop_factory: LoopFactory,
) -> None:
    async def request(n: int, all_started: asyncio.Event) -> tuple[Any, Any, bool]:
        inherited = context.get("app")
        context.set("X-Request-ID", f"req-{n}")
        await all_started.wait()
        task = asyncio.current_task()
        mine = getattr(task, "context", None) == {"app": "demo", "X-Request-ID": f"req-{n}"}
        return inherited, context.get("X-Request-ID"), mine

    async def main() -> tuple[list[tuple[Any, Any, bool]], dict[str, Any]]:
        context.set("app", "demo")
        started = asyncio.Event()
        tasks = [asyncio.create_task(request(n, started)) for n in range(5)]
        await asyncio.sleep(0)
        started.set()
        results = [await task for task in tasks]
        return results, dict(getattr(asyncio.current_task(), "context", {}))

    results, startup = run(loop_factory, main)
    assert results == [("demo", f"req-{n}", True) for n in range(5)]
    assert startup == {"app": "demo"}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_start exists from Python 3.12")
def test_direct_eager_task_writes_its_own_copy_from_its_first_step(
    loop_factory: LoopFactory,
) -> None:
    async def child() -> Any:
        context.set("rid", "child")
        return context.get("rid")

    async def main() -> tuple[Any, Any]:
        context.set("rid", "parent")
        loop = asyncio.get_running_loop()
        task = asyncio.Task(child(), loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        return await task, context.get("rid")

    assert run(loop_factory, main) == ("child", "parent")


def test_a_forked_child_does_not_see_its_parents_running_loop(loop_factory: LoopFactory) -> None:
    """``running_loop`` answers from a cache on 3.11 (the C lookup's getpid() is most of what
    ``set`` costs): a child forked from a running task must still find no loop, so its write
    goes to a private copy, never into the task's mapping it inherited."""

    async def main() -> tuple[str, str]:
        context.set("k", "parent")  # the cache now holds this loop
        task = asyncio.current_task()
        assert task is not None
        read, write = os.pipe()
        with warnings.catch_warnings():  # 3.12+ warns about forking a multi-threaded process
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report, then leave without running any cleanup
            context.set("k", "child")
            seen = (store.running_loop(), store.running_task(), task.context["k"])  # type: ignore[attr-defined]
            os.write(write, repr(seen).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as report:
            return report.read(), context.get("k")

    assert run(loop_factory, main) == ("(None, None, 'parent')", "parent")


def test_a_loop_this_thread_ran_is_not_its_loop_while_another_thread_runs_it() -> None:
    """The cache names a loop, not a thread: it holds only while the loop runs in the caller's
    thread. Here the main thread ran the loop first; then a worker runs it, and a write from
    the main thread must not land in the worker's task."""
    in_worker = threading.Event()

    async def write(value: str, release: asyncio.Event | None = None) -> None:
        context.set("k", value)
        if release is not None:
            in_worker.set()
            await release.wait()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(write("main"))
        release = asyncio.Event()
        worker = threading.Thread(target=loop.run_until_complete, args=(write("worker", release),))
        worker.start()
        assert in_worker.wait(timeout=10)
        assert store.running_loop() is None
        with pytest.raises(ValueError, match="no running task"):
            context.set("k", "main thread")
        loop.call_soon_threadsafe(release.set)
        worker.join(timeout=10)
        assert not worker.is_alive()
    finally:
        loop.close()
