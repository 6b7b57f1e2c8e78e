"""Carry the current context into executor threads, which ``loop.run_in_executor`` does not.

``run_in_executor`` runs the function in the worker's own context: it sees no request, and any
ContextVar it sets stays in that worker thread for the next, unrelated job (platform notes,
pitfall 12). Both helpers here run the function in a copy of the caller's context instead, as
``asyncio.to_thread`` does, so the thread sees the request's mapping and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import ParamSpec, TypeVar, TypeVarTuple

from .store import own_mapping, running_task, untasked_writes

P = ParamSpec("P")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")


def run_in_executor(
    executor: Executor | None, func: Callable[[*Ts], R], *args: *Ts
) -> asyncio.Future[R]:
    """``loop.run_in_executor`` with the caller's context; ``await`` the result."""
    loop = asyncio.get_running_loop()
    return loop.run_in_executor(executor, _current_context().run, func, *args)


def bind_context(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` bound to the context current now, for ``executor.submit`` or ``Thread(target=)``.

    Each call runs in its own copy of that context, so concurrent calls (``executor.map``) work
    and one call's ContextVar changes do not reach the next.
    """
    captured = _current_context()

    @functools.wraps(func)
    def run_bound(*args: P.args, **kwargs: P.kwargs) -> R:
        return captured.copy().run(func, *args, **kwargs)

    return run_bound


def _current_context() -> contextvars.Context:
    """A copy of the caller's Context in which the thread writes where a sharing child would:
    a task that only inherited its mapping takes its own first (copy on write), so the thread
    never writes into the mapping the task inherited (start-up code's, another request's)."""
    task = running_task()
    if task is None:
        return contextvars.copy_context()
    mapping = own_mapping(task)
    captured = contextvars.copy_context()
    captured.run(untasked_writes.set, mapping)
    return captured
