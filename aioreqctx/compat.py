"""The aiotask-context 0.6.1 names that only exist so ``import aioreqctx as context`` works.

Nothing else in aioreqctx builds on this module. New code should use ``aioreqctx.get``/``set``,
the three task factories, ``task_factory_for`` and ``LayeredContext``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from ._core import emit
from ._core.factories import CoroutineLike, copy_of, layer_over, plain_task_factory, share, spawn
from ._core.store import Context

PY37 = True
"""Always true: aiotask-context used it to pick an asyncio API; aioreqctx needs 3.11+."""

logger = emit.logger
"""The ``aioreqctx`` logger, where the library's own warnings go (aiotask-context had one too)."""

T = TypeVar("T")


def asyncio_current_task(loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[Any] | None:
    """The running task, or None (not RuntimeError) when no loop is running."""
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None


def dict_context_factory(
    parent_context: Context | None = None, copy_context: bool = False
) -> Context:
    """aiotask-context's dict policy: the parent's dict itself, or a deep copy of it."""
    if copy_context:
        return copy_of(parent_context)
    return share(parent_context)


def chainmap_context_factory(parent_context: Context | None = None) -> Context:
    """aiotask-context's ChainMap policy: a new layer over the parent's mapping."""
    return layer_over(parent_context)


@plain_task_factory
def task_factory(
    loop: asyncio.AbstractEventLoop,
    coro: CoroutineLike[T],
    /,
    copy_context: bool = False,
    context_factory: Callable[[Context | None], Context] | None = None,
    **kwargs: Any,
) -> asyncio.Future[T]:
    """Child tasks share their parent's context (aiotask-context's default factory).

    ``copy_context`` and ``context_factory`` are aiotask-context's ways to choose another
    policy; ``copying_task_factory``, ``chainmap_task_factory`` and ``task_factory_for`` say it
    more plainly.
    """
    if context_factory is None:
        context_factory = copy_of if copy_context else share
    return spawn(loop, coro, kwargs, context_factory)
