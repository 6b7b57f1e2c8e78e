"""Work that outlives its request: detached tasks, ``detach()`` blocks, and hand-off snapshots.

A task inherits its creator's ``contextvars.Context``, so a long-lived task started while a
request runs (a queue consumer, a client library's lazily started reader) keeps that request's
ID, and under ``task_factory`` its very mapping, for as long as it lives. ``detached()`` and
``detach()`` start such work in a fresh mapping holding the start-up values (what a new request
starts with) and the spawning unit's ID as ``keys.ORIGIN_REQUEST_ID``; ``capture()`` snapshots a
unit's context at hand-off (an ``asyncio.Queue.put``) so the worker can run each item under it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from .. import keys
from .factories import PLAIN_FACTORIES
from .snapshot import flat_copy, snapshot
from .store import Context, SeededScope, VarValues, current_mapping, running_loop, scope

T = TypeVar("T")
_Task = asyncio.Task
_HANDED_OFF = keys.HANDED_OFF

startup_values: ContextVar[Mapping[str, Any]] = ContextVar("aioreqctx.startup_values")
"""The frozen start-up values of the server a request runs in (set by the middleware only when
the server was started inside a context), so work detached from the request starts with them."""

_unit_vars: list[tuple[ContextVar[Any], Any]] = []
_UNSET = object()


def unit_scoped(var: ContextVar[Any], empty: Any) -> None:
    """Declare ``var`` part of a unit's context (the pushed log fields): detached work gets
    ``empty`` in it, ``capture()`` carries its value to ``activate()``."""
    _unit_vars.append((var, empty))


def _detached_values() -> dict[str, Any]:
    """What detached work starts with: the start-up values, and the spawning unit's ID.

    Inside a unit (a request, a job, detached work) that is the start-up values; outside any
    (start-up code) it is a copy of the current values, which are the start-up values.
    """
    current = current_mapping.get(None)
    if current is None:
        return {}
    origin = current.get(keys.REQUEST_ID)
    if origin is None:
        origin = current.get(keys.ORIGIN_REQUEST_ID)
        if origin is None:
            return snapshot(current)
    startup = startup_values.get(None)
    values = {} if startup is None else snapshot(startup)
    values[keys.ORIGIN_REQUEST_ID] = origin
    return values


def detached(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start ``coro`` as a task that does not belong to the current request.

    It sees the start-up values (as a new request does) plus ``keys.ORIGIN_REQUEST_ID``, never
    the request's values, log fields or writes, and the request never sees its writes.
    """
    loop = running_loop()
    if loop is None:
        if asyncio.iscoroutine(coro):
            coro.close()
        raise RuntimeError(
            "aioreqctx.detached() needs a running event loop: call it from a coroutine"
        )
    mapping = _detached_values()
    context = contextvars.copy_context()
    context.run(current_mapping.set, mapping)
    for var, empty in _unit_vars:
        if context.get(var, empty) is not empty:
            context.run(var.set, empty)
    task: asyncio.Task[T]
    if loop.get_task_factory() in PLAIN_FACTORIES:  # what the factory would build, for less
        task = _Task(coro, loop=loop, name=name, context=context)
    else:  # another library's factory, or an eager one: let it build the task in that Context
        task = loop.create_task(coro, name=name, context=context)
        if getattr(task, "context", None) is not None:  # the factory's (or its eager start's)
            return task
    task.context = mapping  # type: ignore[attr-defined]
    return task


def detach() -> scope:
    """A block that runs detached, as does every task started in it by any code.

    ``with aioreqctx.detach():`` (or ``async with``) around a library's first use that lazily
    starts a background task (a connection pool, a client's reader), when it cannot move to
    start-up. The block's own writes stay in the block; the request's context is back after it.
    """
    return SeededScope(_detached_values(), dict, tuple(_unit_vars))


class Captured:
    """An immutable snapshot of a unit's context, taken by ``capture()`` at hand-off.

    ``with captured.activate():`` (or ``async with``), in any task or thread, runs a block under
    a fresh mapping seeded from it. It never crosses a process (pickling is refused): jobs carry
    their context with ``JobPropagation``.
    """

    __slots__ = ("_copy", "_values", "_vars")

    def __init__(
        self,
        values: dict[str, Any],
        copy: Callable[[Mapping[str, Any]], Context],
        var_values: VarValues,
    ) -> None:
        self._values = values
        self._copy = copy
        self._vars = var_values

    @property
    def request_id(self) -> str | None:
        """The ID of the unit it was captured in, or None outside any."""
        return self._values.get(keys.REQUEST_ID)

    def activate(self) -> scope:
        """A block running under a fresh copy of the captured context (its writes stay in it)."""
        return SeededScope(self._values, self._copy, self._vars)

    def __reduce__(self) -> Any:
        raise TypeError(
            "aioreqctx.Captured never crosses a process; to carry a request's context to a job, "
            "use aioreqctx.JobPropagation"
        )

    def __repr__(self) -> str:
        return f"<aioreqctx.Captured request_id={self.request_id!r}>"


def capture() -> Captured:
    """A snapshot of the current unit's context (its ID and values, deep-copied as
    ``copying_task_factory`` copies), to hand to a long-lived worker with the work."""
    current = current_mapping.get({})
    values = flat_copy(current)
    copy: Callable[[Mapping[str, Any]], Context] = dict
    if values is None:  # a mutable value: each activation copies it deeply again
        values, copy = snapshot(current), snapshot
    values[_HANDED_OFF] = True
    var_values: VarValues = ()
    for var, empty in _unit_vars:
        var_values += ((var, var.get(empty)),)
    return Captured(values, copy, var_values)
