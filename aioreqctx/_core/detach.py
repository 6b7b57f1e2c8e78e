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
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from .. import keys
from .snapshot import IMMUTABLE_TYPES, snapshot
from .store import Context, current_mapping, scope

T = TypeVar("T")

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
    values = snapshot(startup_values.get({}))
    values[keys.ORIGIN_REQUEST_ID] = origin
    return values


def detached(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    """Start ``coro`` as a task that does not belong to the current request.

    It sees the start-up values (as a new request does) plus ``keys.ORIGIN_REQUEST_ID``, never
    the request's values, log fields or writes, and the request never sees its writes.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if asyncio.iscoroutine(coro):
            coro.close()
        raise RuntimeError(
            "aioreqctx.detached() needs a running event loop: call it from a coroutine"
        ) from None
    mapping = _detached_values()
    context = contextvars.copy_context()
    context.run(_enter_detached, mapping)
    task = loop.create_task(coro, name=name, context=context)
    if getattr(task, "context", None) is None:  # no factory: the task owns the mapping
        task.context = mapping  # type: ignore[attr-defined]
    return task


def _enter_detached(mapping: Context) -> None:
    current_mapping.set(mapping)
    for var, empty in _unit_vars:
        var.set(empty)


VarValues = tuple[tuple[ContextVar[Any], Any], ...]


class _Unit(scope):
    """A ``scope`` whose mapping ``seed`` makes from ``values``, that also gives the unit-scoped
    variables their ``var_values`` for the block.

    Everything is worked out beforehand (``capture()`` does it once for every ``activate()``),
    so opening one costs what opening a ``scope`` costs, plus a ContextVar lookup per variable.
    """

    __slots__ = ("_seed", "_var_tokens", "_var_values")

    def __init__(
        self,
        values: dict[str, Any],
        seed: Callable[[Mapping[str, Any]], Context],
        var_values: VarValues,
    ) -> None:
        self._initial = values  # scope's fields, as scope.__init__ would set them
        self._token = self._task = self._untasked_token = None
        self._previous_attr = None
        self._seed = seed
        self._var_values = var_values
        self._var_tokens: list[tuple[ContextVar[Any], Token[Any]]] | None = None

    def __enter__(self) -> Context:
        mapping = scope.__enter__(self)
        for var, value in self._var_values:
            if var.get(_UNSET) is not value:  # usually none differs: nothing to set back
                if self._var_tokens is None:
                    self._var_tokens = []
                self._var_tokens.append((var, var.set(value)))
        return mapping

    def __exit__(self, *exc_info: object) -> None:
        if self._var_tokens is not None:
            for var, token in reversed(self._var_tokens):
                var.reset(token)
            self._var_tokens = None
        scope.__exit__(self, *exc_info)


def detach() -> scope:
    """A block that runs detached, as does every task started in it by any code.

    ``with aioreqctx.detach():`` (or ``async with``) around a library's first use that lazily
    starts a background task (a connection pool, a client's reader), when it cannot move to
    start-up. The block's own writes stay in the block; the request's context is back after it.
    """
    return _Unit(_detached_values(), dict, tuple(_unit_vars))


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
        return _Unit(self._values, self._copy, self._vars)

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
    current = current_mapping.get(None)
    values = {} if current is None else dict(current)
    values[keys.HANDED_OFF] = True
    copy: Callable[[Mapping[str, Any]], Context] = dict
    if not IMMUTABLE_TYPES.issuperset(map(type, values.values())):
        values, copy = snapshot(values), snapshot
    var_values: VarValues = ()
    for var, empty in _unit_vars:
        var_values += ((var, var.get(empty)),)
    return Captured(values, copy, var_values)
