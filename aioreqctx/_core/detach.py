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
from collections.abc import Coroutine, Mapping
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
VarValues = tuple[tuple[ContextVar[Any], Any], ...]


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


handed_off: set[int] = set()
"""The ``id`` of each mapping an ``activate()`` block has open: work handed off on purpose,
which the outliving-task detector never reports."""


class _Unit(scope):
    """A ``scope`` over ``values`` that also sets the unit-scoped variables for the block."""

    __slots__ = ("_handed_off", "_mapping_id", "_var_tokens", "_var_values")

    def __init__(self, values: dict[str, Any], var_values: VarValues, *, handed_off: bool) -> None:
        super().__init__()
        self._initial = values
        self._var_values = var_values
        self._var_tokens: tuple[tuple[ContextVar[Any], Token[Any]], ...] = ()
        self._handed_off = handed_off
        self._mapping_id = 0

    def __enter__(self) -> Context:
        mapping = super().__enter__()
        if self._var_values:
            self._var_tokens = tuple([(var, var.set(value)) for var, value in self._var_values])
        if self._handed_off:
            self._mapping_id = id(mapping)
            handed_off.add(self._mapping_id)
        return mapping

    def __exit__(self, *exc_info: object) -> None:
        if self._handed_off:
            handed_off.discard(self._mapping_id)
        for var, token in reversed(self._var_tokens):
            var.reset(token)
        self._var_tokens = ()
        super().__exit__(*exc_info)


def detach() -> scope:
    """A block that runs detached, as does every task started in it by any code.

    ``with aioreqctx.detach():`` (or ``async with``) around a library's first use that lazily
    starts a background task (a connection pool, a client's reader), when it cannot move to
    start-up. The block's own writes stay in the block; the request's context is back after it.
    """
    return _Unit(_detached_values(), tuple(_unit_vars), handed_off=False)


class Captured:
    """An immutable snapshot of a unit's context, taken by ``capture()`` at hand-off.

    ``with captured.activate():`` (or ``async with``), in any task or thread, runs a block under
    a fresh mapping seeded from it. It never crosses a process (pickling is refused): jobs carry
    their context with ``JobPropagation``.
    """

    __slots__ = ("_immutable", "_values", "_vars")

    def __init__(self, values: dict[str, Any], immutable: bool, var_values: VarValues) -> None:
        self._values = values
        self._immutable = immutable
        self._vars = var_values

    @property
    def request_id(self) -> str | None:
        """The ID of the unit it was captured in, or None outside any."""
        return self._values.get(keys.REQUEST_ID)

    def activate(self) -> scope:
        """A block running under a fresh copy of the captured context (its writes stay in it)."""
        values = self._values if self._immutable else snapshot(self._values)
        return _Unit(values, self._vars, handed_off=True)

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
    immutable = IMMUTABLE_TYPES.issuperset(map(type, values.values()))
    if not immutable:
        values = snapshot(values)
    return Captured(values, immutable, tuple([(var, var.get(empty)) for var, empty in _unit_vars]))
