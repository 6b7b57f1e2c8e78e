"""Per-request context for asyncio and aiohttp, and a drop-in successor of aiotask-context.

``import aioreqctx as context`` offers everything aiotask-context 0.6.1 did, working on
Python 3.11 to 3.14, under uvloop and with eager tasks.
"""

from .compat import (
    PY37,
    asyncio_current_task,
    chainmap_context_factory,
    dict_context_factory,
    logger,
    task_factory,
)
from .factories import (
    EAGER_TASKS_SUPPORTED,
    TaskFactory,
    chainmap_task_factory,
    copying_task_factory,
    task_factory_for,
)
from .layered import LayeredContext
from .store import NO_LOOP_EXCEPTION_MSG, Context, clear, get, scope, set  # noqa: A004
from .threads import bind_context, run_in_executor

__all__ = [
    "EAGER_TASKS_SUPPORTED",
    "NO_LOOP_EXCEPTION_MSG",
    "PY37",
    "Context",
    "LayeredContext",
    "TaskFactory",
    "asyncio_current_task",
    "bind_context",
    "chainmap_context_factory",
    "chainmap_task_factory",
    "clear",
    "copying_task_factory",
    "dict_context_factory",
    "get",
    "logger",
    "run_in_executor",
    "scope",
    "set",
    "task_factory",
    "task_factory_for",
]
