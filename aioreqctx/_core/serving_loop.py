"""Putting a task factory on the loop that actually runs the program, one way per entry point.

aiotask-context's habit, ``asyncio.get_event_loop().set_task_factory(...)`` at import time, sets
the factory on a loop nobody serves from: ``web.run_app`` and ``asyncio.run`` each create a
loop of their own, and on Python 3.14 ``get_event_loop()`` raises when no loop is set. So the
factory is installed where the loop is known: by the application while it starts
(``setup(app, task_factory=...)``, which uses ``factory_while_serving``), or by the loop
factory that ``asyncio.run`` / ``asyncio.Runner`` call (``loop_factory``), which also covers
the main task.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from .factories import TaskFactory, copying_task_factory

logger = logging.getLogger("aioreqctx")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(
    *, task_factory: TaskFactory = copying_task_factory, uvloop: bool = False
) -> LoopFactory:
    """A ``loop_factory`` for ``asyncio.Runner`` (and ``asyncio.run`` on 3.12+): new loops start
    with ``task_factory``, so even the main task goes through it.

    ``uvloop=True`` builds uvloop loops (``pip install 'aioreqctx[uvloop]'``).
    """
    if not callable(task_factory):
        raise TypeError(
            f"loop_factory(): task_factory must be a task factory (loop, coro, **kwargs), "
            f"not {task_factory!r}"
        )
    new_loop: LoopFactory = asyncio.new_event_loop
    if uvloop:
        try:
            uvloop_module = importlib.import_module("uvloop")
        except ImportError as missing:
            raise ImportError(
                "loop_factory(uvloop=True) needs uvloop: pip install 'aioreqctx[uvloop]'"
            ) from missing
        new_loop = uvloop_module.new_event_loop

    def new_loop_with_factory() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        loop.set_task_factory(task_factory)
        return loop

    return new_loop_with_factory


def factory_while_serving(
    task_factory: TaskFactory,
) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry: ``task_factory`` on the running loop while the app runs.

    A different factory already on the loop is named in a warning and replaced until the app
    stops, then put back.
    """

    async def install(app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()
        if previous is not None and previous is not task_factory:
            logger.warning(
                "the loop already has the task factory %s; setup(task_factory=%s) "
                "replaces it while the application runs. To keep both, pass "
                "task_factory=aioreqctx.task_factory_for('copy', inner=<the other factory>)",
                _name_of(previous),
                _name_of(task_factory),
            )
        loop.set_task_factory(task_factory)
        try:
            yield
        finally:
            if loop.get_task_factory() is task_factory:
                loop.set_task_factory(previous)

    return install


def _name_of(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", None)
    name = getattr(factory, "__qualname__", None) or repr(factory)
    return f"{module}.{name}" if module else name
