"""What belongs to which request: keep-alive, start-up values, eager first steps, copy on write.

Each test here backs one of the core's promises in the README ("Every request gets a fresh
context", the factories' table, "Tasks no factory made", "Scopes", the drop-in promise), on
asyncio and uvloop, with every factory and with none.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import types
from typing import Any

import pytest
from aiohttp import web, web_protocol
from aiohttp.typedefs import Handler

import aioreqctx as context
from aioreqctx._core.factories import EAGER_TASKS_SUPPORTED

from .conftest import FACTORIES, LoopFactory, run
from .http_helpers import get_request, raw_exchange, serving

needs_eager = pytest.mark.skipif(
    not EAGER_TASKS_SUPPORTED, reason="eager tasks exist from Python 3.12"
)
FACTORY_OR_NONE = [None, *sorted(FACTORIES)]
MODES = ["share", "copy", "chain"]


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A middleware placed ahead of aioreqctx's, writing before the request context exists."""
    seen_before = context.get("user")
    if "user" in request.query:
        context.set("user", request.query["user"])
    response = await handler(request)
    response.headers["X-Seen-Before"] = json.dumps(seen_before)
    return response


async def whoami(request: web.Request) -> web.Response:
    await asyncio.sleep(0)
    child = await asyncio.create_task(asyncio.sleep(0, context.get("user")))
    return web.json_response(
        {"user": context.get("user"), "child": child, "app": context.get("app")}
    )


def _outer_middleware_app() -> web.Application:
    app = web.Application(middlewares=[auth, context.web.request_id_middleware])
    app.router.add_get("/", whoami)
    return app


def _start_up(factory_name: str | None) -> None:
    if factory_name is not None:
        asyncio.get_running_loop().set_task_factory(FACTORIES[factory_name])
    context.set("app", "demo")


@pytest.mark.parametrize("factory_name", FACTORY_OR_NONE)
def test_a_middleware_ahead_of_ours_never_sees_another_requests_writes(
    loop_factory: LoopFactory, factory_name: str | None
) -> None:
    async def main() -> list[Any]:
        _start_up(factory_name)
        async with serving(_outer_middleware_app()) as port:
            alice, anonymous = get_request("/?user=alice"), get_request("/")
            one_by_one = [
                *(await raw_exchange(port, alice, anonymous)),  # keep-alive, pipelined
                *(await raw_exchange(port, anonymous)),
            ]
            return [(json.loads(r.body), json.loads(r.all("X-Seen-Before")[0])) for r in one_by_one]

    (first, before_1), (second, before_2), (third, before_3) = run(loop_factory, main)
    assert first == {"user": "alice", "child": "alice", "app": "demo"}
    assert second == third == {"user": None, "child": None, "app": "demo"}
    assert before_1 is before_2 is before_3 is None


@pytest.mark.parametrize("factory_name", FACTORY_OR_NONE)
@pytest.mark.parametrize("installed_by", ["setup", "middleware list"])
def test_start_up_values_reach_every_request_on_every_loop_and_factory(
    loop_factory: LoopFactory, factory_name: str | None, installed_by: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        seen = context.get("app")
        context.set("app", "changed by a request")
        return web.Response(text=str(seen))

    async def main() -> tuple[list[bytes], Any]:
        _start_up(factory_name)
        if installed_by == "setup":
            app = web.Application()
            context.setup(app)
        else:
            app = web.Application(middlewares=[context.web.request_id_middleware])
        app.router.add_get("/", handler)
        async with serving(app) as port:
            replies = await raw_exchange(port, get_request("/"), get_request("/"))
            replies += await raw_exchange(port, get_request("/"))
        return [reply.body for reply in replies], context.get("app")

    bodies, after = run(loop_factory, main)
    assert bodies == [b"demo"] * 3
    assert after == "demo"


# Python 3.14 with aiohttp >= 3.14.4 builds connection and request tasks through the loop's
# factory, eagerly (platform-update-2026-12.md §2). That path cannot run here, so this routes
# aiohttp's ``asyncio.Task(coro, loop=loop, eager_start=True)`` calls to the installed factory
# with exactly the arguments 3.14's ``BaseEventLoop.create_task`` passes it.
@pytest.fixture
def aiohttp_on_3_14(monkeypatch: pytest.MonkeyPatch) -> None:
    def task_through_the_factory(
        coro: Any, *, loop: asyncio.AbstractEventLoop, eager_start: bool = False
    ) -> asyncio.Future[Any]:
        factory = loop.get_task_factory()
        assert factory is not None, "install a factory first"
        return factory(loop, coro, eager_start=eager_start)  # type: ignore[call-arg]

    shim = types.SimpleNamespace(**vars(asyncio))
    shim.Task = task_through_the_factory
    monkeypatch.setattr(web_protocol, "asyncio", shim)


@needs_eager
@pytest.mark.usefixtures("aiohttp_on_3_14")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("eager", [False, True])
def test_requests_on_the_3_14_path_keep_their_context_and_stay_isolated(
    loop_factory: LoopFactory, mode: Any, eager: bool
) -> None:
    late_writes: list[Any] = []

    @web.middleware
    async def inner(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        late_writes.append(request[context.web.CONTEXT_MAPPING].get("late"))
        return response

    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        context.set("late", request.query.get("n"))
        return await whoami(request)

    async def main() -> list[Any]:
        asyncio.get_running_loop().set_task_factory(context.task_factory_for(mode, eager=eager))
        context.set("app", "demo")
        app = web.Application(middlewares=[auth])
        context.setup(app)
        app.middlewares.append(inner)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            replies = await raw_exchange(
                port, get_request("/?user=alice&n=1"), get_request("/?n=2")
            )
        return [json.loads(reply.body) for reply in replies]

    first, second = run(loop_factory, main)
    assert late_writes == ["1", "2"]
    assert first == {"user": "alice", "child": "alice", "app": "demo"}
    assert second == {"user": None, "child": None, "app": "demo"}


@needs_eager
@pytest.mark.parametrize("mode", MODES)
def test_a_scope_opened_in_an_eager_first_step_keeps_the_tasks_context(
    loop_factory: LoopFactory, mode: Any
) -> None:
    async def child() -> tuple[Any, Any]:
        with context.scope({"job": "j1"}) as scoped:
            await asyncio.sleep(0)
            context.set("inside", 1)
        context.set("after", 2)
        return scoped.get("inside"), context.get("after")

    async def main() -> tuple[tuple[Any, Any], Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(context.task_factory_for(mode, eager=True))
        context.set("parent", "p")
        result = await asyncio.create_task(child())
        return result, context.get("after")

    (inside, after_in_child), after_in_parent = run(loop_factory, main)
    assert inside == 1
    assert after_in_child == 2
    assert after_in_parent == (2 if mode == "share" else None)


@needs_eager
@pytest.mark.parametrize("mode", MODES)
def test_an_eager_task_no_factory_made_inside_an_eager_first_step_copies_on_write(
    loop_factory: LoopFactory, mode: Any
) -> None:
    async def grandchild() -> None:
        context.set("grandchild", "wrote")

    async def child() -> Any:
        loop = asyncio.get_running_loop()
        await asyncio.Task(grandchild(), loop=loop, eager_start=True)  # type: ignore[call-arg]
        return context.get("grandchild")

    async def main() -> Any:
        asyncio.get_running_loop().set_task_factory(context.task_factory_for(mode, eager=True))
        context.set("parent", "p")
        return await asyncio.create_task(child()), context.get("grandchild")

    assert run(loop_factory, main) == (None, None)


def _no_factory_task(coro: Any) -> asyncio.Task[Any]:
    """A task built without the loop's factory, as aiohttp 3.12/3.13 and asyncio.Task() do."""
    return asyncio.Task(coro, loop=asyncio.get_running_loop())


def test_children_of_a_task_no_factory_made_follow_the_table_before_its_first_write(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    async def child() -> Any:
        await asyncio.sleep(0)
        context.set("child_write", "child")
        return context.get("late")

    async def no_factory_task() -> tuple[Any, Any, Any]:
        spawned = asyncio.create_task(child())  # before this task's first write
        context.set("late", "late")
        seen_by_child = await spawned
        return seen_by_child, context.get("child_write"), context.get("app")

    async def main() -> tuple[tuple[Any, Any, Any], Any]:
        context.set("app", "demo")
        result = await _no_factory_task(no_factory_task())
        return result, sorted(asyncio.current_task().context)  # type: ignore[union-attr]

    (child_saw_late, parent_saw_child, app), startup_keys = run(
        loop_factory, main, FACTORIES[factory_name]
    )
    assert child_saw_late == {"task_factory": "late", "chainmap_task_factory": "late"}.get(
        factory_name
    )
    assert parent_saw_child == ("child" if factory_name == "task_factory" else None)
    assert app == "demo"
    assert startup_keys == ["app"]


def test_executor_threads_of_a_task_no_factory_made_write_into_that_tasks_context(
    loop_factory: LoopFactory,
) -> None:
    async def no_factory_task() -> Any:
        await context.run_in_executor(None, context.set, "from_thread", "t")
        return context.get("from_thread")

    async def main() -> tuple[Any, Any]:
        context.set("app", "demo")
        return await _no_factory_task(no_factory_task()), context.get("from_thread")

    assert run(loop_factory, main) == ("t", None)


def test_a_factory_installed_inside_main_shares_with_main_before_its_first_write(
    loop_factory: LoopFactory,
) -> None:
    async def child() -> None:
        context.set("child_write", "child")

    async def main() -> Any:
        asyncio.get_running_loop().set_task_factory(context.task_factory)
        await asyncio.create_task(child())
        return context.get("child_write")

    assert run(loop_factory, main) == "child"


@pytest.mark.parametrize("factory_name", FACTORY_OR_NONE)
def test_assigning_task_context_seeds_the_task_as_in_aiotask_context(
    loop_factory: LoopFactory, factory_name: str | None
) -> None:
    async def child() -> Any:
        context.set("from_child", "c")
        return context.get("X-Request-ID")

    async def main() -> tuple[Any, ...]:
        seed = {"X-Request-ID": "seeded"}
        asyncio.current_task().context = seed  # type: ignore[union-attr]
        seen = context.get("X-Request-ID")
        context.set("written", 1)
        child_saw = await asyncio.create_task(child())
        return seen, seed.get("written"), child_saw, seed.get("from_child")

    factory = None if factory_name is None else FACTORIES[factory_name]
    seen, written, child_saw, from_child = run(loop_factory, main, factory)
    assert (seen, written) == ("seeded", 1)
    assert child_saw == "seeded"
    assert from_child == ("c" if factory_name == "task_factory" else None)


def test_a_given_context_keeps_each_factorys_semantics(
    loop_factory: LoopFactory, factory_name: str
) -> None:
    """``create_task(coro, context=contextvars.copy_context())`` in a task: the copy holds the
    parent's mapping, yet only ``task_factory`` lets the child write into it (issue 10, 11)."""

    async def child() -> tuple[Any, Any]:
        inherited = context.get("k")
        context.set("k", "child")
        return inherited, context.get("k")

    async def main() -> tuple[Any, Any, Any]:
        asyncio.get_running_loop().set_task_factory(FACTORIES[factory_name])

        async def parent() -> tuple[Any, Any, Any]:
            context.set("k", "parent")
            loop = asyncio.get_running_loop()
            given = contextvars.copy_context()
            inherited, in_child = await loop.create_task(child(), context=given)
            return inherited, in_child, context.get("k")

        return await asyncio.create_task(parent())

    inherited, in_child, in_parent = run(loop_factory, main)
    assert (inherited, in_child) == ("parent", "child")
    assert in_parent == ("child" if factory_name == "task_factory" else "parent")


def _write_user_outside_any_task(path: str, user: str) -> Any:
    """What a helper run by a middleware ahead of ours does: ``set`` from a thread or callback."""

    def write() -> None:
        with contextlib.suppress(ValueError):  # no context there at all: nothing to leak
            context.set("user", user)

    if path == "thread":
        return asyncio.to_thread(write)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def callback() -> None:
        write()
        done.set_result(None)

    loop.call_soon(callback)
    return done


def _app_with_a_helper_ahead(path: str, **setup_options: Any) -> web.Application:
    @web.middleware
    async def helper_ahead(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen_before = context.get("user")
        if "user" in request.query:
            await _write_user_outside_any_task(path, request.query["user"])
        response = await handler(request)
        response.headers["X-Seen-Before"] = json.dumps(seen_before)
        return response

    if setup_options:
        app = web.Application(middlewares=[helper_ahead])
        context.setup(app, **setup_options)
        app.middlewares.append(app.middlewares.pop(0))  # ours after the helper
    else:
        app = web.Application(middlewares=[helper_ahead, context.web.request_id_middleware])
    app.router.add_get("/", whoami)
    return app


async def _alice_then_others(port: int) -> list[tuple[int, Any, Any]]:
    alice, anonymous = get_request("/?user=alice"), get_request("/")
    replies = [
        *(await raw_exchange(port, alice, anonymous)),  # keep-alive
        *(await raw_exchange(port, anonymous)),  # another connection
    ]
    return [
        (reply.status, json.loads(reply.body)["user"], json.loads(reply.all("X-Seen-Before")[0]))
        for reply in replies
    ]


@pytest.mark.parametrize("path", ["thread", "callback"])
@pytest.mark.parametrize("factory_name", FACTORY_OR_NONE)
def test_a_thread_or_callback_write_ahead_of_ours_never_reaches_the_start_up_values(
    loop_factory: LoopFactory, factory_name: str | None, path: str
) -> None:
    async def main() -> tuple[list[tuple[int, Any, Any]], Any]:
        _start_up(factory_name)
        async with serving(_app_with_a_helper_ahead(path)) as port:
            replies = await _alice_then_others(port)
        return replies, context.get("user")

    replies, after = run(loop_factory, main)
    assert replies == [(200, None, None)] * 3  # the write stayed in that thread or callback
    assert after is None


@pytest.mark.parametrize("path", ["thread", "callback"])
@pytest.mark.parametrize("installed_by", ["loop_factory", "setup"])
def test_with_nothing_at_start_up_a_thread_or_callback_write_reaches_no_request(
    loop_factory: LoopFactory, path: str, installed_by: str
) -> None:
    async def main() -> list[tuple[int, Any, Any]]:
        if installed_by == "setup":
            app = _app_with_a_helper_ahead(path, task_factory=context.task_factory)
        else:
            app = _app_with_a_helper_ahead(path)
        async with serving(app) as port:
            return await _alice_then_others(port)

    task_factory = context.task_factory if installed_by == "loop_factory" else None
    assert run(loop_factory, main, task_factory) == [(200, None, None)] * 3


def test_a_background_task_sharing_the_start_up_mapping_never_writes_into_requests(
    loop_factory: LoopFactory,
) -> None:
    """Under ``setup(app, task_factory=task_factory)`` a task started from ``on_startup`` shares
    the mapping the server was started with; what it writes later is its own business."""
    first_served = asyncio.Event()
    started: list[asyncio.Task[None]] = []

    async def start_background(app: web.Application) -> None:
        async def background() -> None:
            context.set("tenant", "before serving")
            await first_served.wait()
            context.set("tenant", "written later")

        started.append(asyncio.create_task(background()))

    async def handler(request: web.Request) -> web.Response:
        first_served.set()
        await asyncio.sleep(0.01)
        return web.Response(text=str(context.get("tenant")))

    async def main() -> list[bytes]:
        app = web.Application()
        context.setup(app, task_factory=context.task_factory)
        app.on_startup.append(start_background)
        app.router.add_get("/", handler)
        async with serving(app) as port:
            first = await raw_exchange(port, get_request("/"))
            await started[0]
            later = await raw_exchange(port, get_request("/"), get_request("/"))
        return [reply.body for reply in first + later]

    assert run(loop_factory, main) == [b"before serving"] * 3
