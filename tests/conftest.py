"""Every core test runs on a real asyncio loop and a real uvloop loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

import aioreqctx as context

__all__ = ["LoopFactory", "run"]

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOPS: dict[str, LoopFactory] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
FACTORIES: dict[str, context.TaskFactory] = {
    "task_factory": context.task_factory,
    "copying_task_factory": context.copying_task_factory,
    "chainmap_task_factory": context.chainmap_task_factory,
}


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    return LOOPS[request.param]


@pytest.fixture(params=sorted(FACTORIES))
def factory_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def run(
    loop_factory: LoopFactory,
    main: Callable[[], Coroutine[Any, Any, T]],
    task_factory: context.TaskFactory | None = None,
) -> T:
    """Run ``main()`` on a fresh loop that has ``task_factory`` from its first task on."""

    def new_loop() -> asyncio.AbstractEventLoop:
        loop = loop_factory()
        loop.set_task_factory(task_factory)
        return loop

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main())
