"""The task factory on the loop that serves: setup(app, task_factory=...) and loop_factory()."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from aiohttp import ClientSession, web

import aioreqctx as context
from aioreqctx._core.factories import EAGER_TASKS_SUPPORTED, register_dispatcher

from .conftest import LoopFactory, run
from .http_helpers import serving

SERVER = textwrap.dedent(
    """
    import asyncio, socket, sys
    from aiohttp import web
    import aioreqctx as context

    async def handler(request):
        async def child():
            context.set("written_by_child", context.get("X-Request-ID"))
            return context.get("X-Request-ID")

        seen_by_child = await asyncio.create_task(child())
        factory = asyncio.get_running_loop().get_task_factory()
        return web.json_response({
            "seen_by_child": seen_by_child,
            "written_by_child": context.get("written_by_child"),
            "factory": getattr(factory, "__name__", None),
        })

    app = web.Application()
    app.router.add_get("/", handler)
    if sys.argv[1] == "setup":
        context.setup(app, task_factory=context.task_factory)
    else:  # aiotask-context's habit: a factory on a loop web.run_app never uses
        context.setup(app)
        asyncio.get_event_loop().set_task_factory(context.task_factory)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None)
    """
)


def run_app_and_ask(how: str) -> list[dict[str, Any]]:
    """Start SERVER with ``web.run_app`` in a subprocess, send it three requests, stop it."""
    server = subprocess.Popen(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", SERVER, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())

        async def ask() -> list[dict[str, Any]]:
            answers = []
            async with ClientSession() as session:
                for number in range(3):
                    for attempt in range(200):  # until run_app has started serving
                        try:
                            async with session.get(
                                f"http://127.0.0.1:{port}/", headers={"X-Request-ID": f"R{number}"}
                            ) as response:
                                answers.append(await response.json())
                                break
                        except OSError:
                            if attempt == 199:
                                raise
                            await asyncio.sleep(0.05)
            return answers

        answers = asyncio.run(ask())
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=20)
        assert server.returncode == 0, stderr
        return answers
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_setup_task_factory_reaches_the_tasks_handlers_spawn_under_run_app() -> None:
    answers = run_app_and_ask("setup")
    assert answers == [
        {"seen_by_child": f"R{n}", "written_by_child": f"R{n}", "factory": "task_factory"}
        for n in range(3)
    ]


def test_the_aiotask_context_habit_never_reaches_run_apps_loop() -> None:
    # Why setup(task_factory=) exists: the child still reads the ID (contextvars), but no
    # factory runs on the serving loop, so the shared-dict semantics are lost.
    answers = run_app_and_ask("habit")
    assert answers == [
        {"seen_by_child": f"R{n}", "written_by_child": None, "factory": None} for n in range(3)
    ]


def installed_factory_of(app: web.Application, loop_factory: LoopFactory) -> Any:
    """The factory on the loop while ``app`` is served, and the one after it stopped."""

    async def main() -> tuple[Any, Any]:
        async with serving(app):
            during = asyncio.get_running_loop().get_task_factory()
        return during, asyncio.get_running_loop().get_task_factory()

    return run(loop_factory, main)


def test_the_factory_is_on_the_loop_while_the_app_runs_and_removed_after(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = web.Application()
    context.setup(app, task_factory=context.copying_task_factory)
    with caplog.at_level(logging.WARNING, logger="aioreqctx"):
        assert installed_factory_of(app, loop_factory) == (context.copying_task_factory, None)
    assert not caplog.records


def test_on_startup_handlers_already_run_with_the_factory(loop_factory: LoopFactory) -> None:
    seen: list[Any] = []

    async def starting(app: web.Application) -> None:
        seen.append(asyncio.get_running_loop().get_task_factory())

    app = web.Application()
    app.on_startup.append(starting)  # even one added before setup()
    context.setup(app, task_factory=context.copying_task_factory)
    installed_factory_of(app, loop_factory)
    assert seen == [context.copying_task_factory]


def test_a_factory_already_on_the_loop_is_named_replaced_and_put_back(
    loop_factory: LoopFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = web.Application()
    context.setup(app, task_factory=context.copying_task_factory)

    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(context.chainmap_task_factory)
        async with serving(app):
            during = loop.get_task_factory()
        return during, loop.get_task_factory()

    with caplog.at_level(logging.WARNING, logger="aioreqctx"):
        during, after = run(loop_factory, main)
    assert (during, after) == (context.copying_task_factory, context.chainmap_task_factory)
    [warning] = caplog.records
    assert "aioreqctx._core.factories.chainmap_task_factory" in warning.getMessage()
    assert (
        "setup(task_factory=aioreqctx._core.factories.copying_task_factory)" in warning.getMessage()
    )


async def coroutine_of_request(
    request_id: str, started: list[str] | None = None
) -> tuple[str | None, str | None, str | None]:
    """What a request task does first: its ID, then a child task that reads it."""
    if started is not None:
        started.append(request_id)
    before = context.get("X-Request-ID")
    context.set("X-Request-ID", request_id)

    async def child() -> Any:
        return context.get("X-Request-ID")

    return before, context.get("X-Request-ID"), await asyncio.create_task(child())


# How create_task reaches the factory (platform notes §1.1, pitfall 20): aiohttp >= 3.14.4 on
# Python 3.14 (asyncio loops) calls asyncio.create_task(coro, eager_start=True); 3.14 passes
# name/context/eager_start through as given; uvloop passes context=None (and eager_start=None).
AIOHTTP_SHAPES: dict[str, dict[str, Any]] = {
    "aiohttp-3.14.4+": {"eager_start": True},
    "3.14-all": {"name": "request", "context": None, "eager_start": True},
    "uvloop-3.13": {"context": None, "eager_start": None},
    "3.13.3": {"name": None},
}


@pytest.mark.parametrize("shape", sorted(AIOHTTP_SHAPES))
def test_the_installed_factory_takes_aiohttps_connection_and_request_tasks(
    loop_factory: LoopFactory, factory_name: str, shape: str
) -> None:
    """Driven the way aiohttp 3.14.4+ on Python 3.14 does: the connection task is created from
    a protocol callback (no current task), each request task from the connection task."""
    app = web.Application()
    factory = getattr(context, factory_name)
    context.setup(app, task_factory=factory)
    kwargs = AIOHTTP_SHAPES[shape]

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        async with serving(app):
            installed = loop.get_task_factory()
            assert installed is factory
            results: list[Any] = []
            started: list[str] = []

            async def connection() -> None:  # what aiohttp's RequestHandler.start does
                for number in range(3):  # keep-alive: three requests on one connection
                    coro = coroutine_of_request(f"K{number}", started)
                    request = installed(loop, coro, **dict(kwargs))
                    ran_eagerly = started[-1:] == [f"K{number}"]
                    results.append((request.get_name(), ran_eagerly, await request))

            register_dispatcher(connection)  # as aioreqctx registers RequestHandler.start
            done = loop.create_future()
            loop.call_soon(
                lambda: installed(loop, connection(), **dict(kwargs)).add_done_callback(
                    lambda task: done.set_result(task.result())
                )
            )
            await asyncio.wait_for(done, 10)
            return results

    results = run(loop_factory, main)
    if kwargs.get("name"):
        assert {name for name, _, _ in results} == {kwargs["name"]}
    eager = bool(kwargs.get("eager_start")) and EAGER_TASKS_SUPPORTED
    assert [ran_eagerly for _, ran_eagerly, _ in results] == [eager] * 3
    # Each request task starts from nothing of the previous request's, whatever the factory,
    # sets its own ID (as the middleware does) and its child task sees it.
    assert [result for _, _, result in results] == [(None, f"K{n}", f"K{n}") for n in range(3)]


def test_loop_factory_puts_the_factory_under_the_main_task_too(loop_factory: LoopFactory) -> None:
    async def main() -> list[tuple[str | None, str | None, str | None]]:
        context.set("X-Request-ID", "main")
        return await asyncio.gather(*(coroutine_of_request(f"C{n}") for n in range(2)))

    uvloop = loop_factory is not asyncio.new_event_loop
    new_loop = context.loop_factory(task_factory=context.copying_task_factory, uvloop=uvloop)
    with asyncio.Runner(loop_factory=new_loop) as runner:
        assert runner.get_loop().get_task_factory() is context.copying_task_factory
        assert runner.run(main()) == [("main", "C0", "C0"), ("main", "C1", "C1")]
        assert type(runner.get_loop()).__module__.startswith("uvloop") == uvloop


def test_loop_factory_refuses_what_is_not_a_factory() -> None:
    with pytest.raises(TypeError, match="loop_factory\\(\\): task_factory must be a task factory"):
        context.loop_factory(task_factory="copy")  # type: ignore[arg-type]
