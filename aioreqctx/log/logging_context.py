"""Fields that code pushes for a block and every log line inside it carries (talisker's
``Context.logging``): ``with aioreqctx.log_context(user="x"): ...`` or ``.push()``/``.pop()``.

The fields live in a ContextVar of their own, holding an immutable layer that is replaced, never
changed: a task or thread sees what was pushed in its own context and in the context it was
started from, and concurrent requests never see each other's fields. Reading the current fields
is one ContextVar lookup, whatever was pushed.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, NamedTuple

from .._core.sync_or_async import SyncOrAsync

NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


class _Layer(NamedTuple):
    fields: Mapping[str, Any]  # everything pushed so far, merged, read-only
    below: _Layer | None  # what pop() goes back to


pushed_layer: ContextVar[_Layer | None] = ContextVar("aioreqctx.log_context", default=None)
"""The current layer; the log-field code reads it directly, as cheap as it gets."""


def pushed_fields() -> Mapping[str, Any]:
    """The fields pushed in the current context (innermost wins); empty when none."""
    layer = pushed_layer.get()
    return NO_FIELDS if layer is None else layer.fields


def _layer_over(below: _Layer | None, fields: dict[str, Any]) -> _Layer:
    merged = fields if below is None else {**below.fields, **fields}
    return _Layer(MappingProxyType(merged), below)


class _Block(SyncOrAsync[Mapping[str, Any]]):
    """One ``with log_context(...)`` block: its fields are pushed on entry and gone on exit."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields
        self._token: Token[_Layer | None] | None = None

    def __enter__(self) -> Mapping[str, Any]:
        if self._token is not None:
            raise RuntimeError("this log_context block is already open; create one per use")
        layer = _layer_over(pushed_layer.get(), self._fields)
        self._token = pushed_layer.set(layer)
        return layer.fields

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None, "log_context block exited without being entered"
        pushed_layer.reset(self._token)
        self._token = None


class LogContext:
    """The logging context: ``log_context(**fields)`` for a block, ``push``/``pop`` without one."""

    __slots__ = ()

    def __call__(self, **fields: Any) -> SyncOrAsync[Mapping[str, Any]]:
        """A ``with``/``async with`` block during which every log line carries ``fields``."""
        return _Block(fields)

    def push(self, **fields: Any) -> None:
        """Add ``fields`` to every log line of this task (and tasks it starts) until ``pop()``."""
        pushed_layer.set(_layer_over(pushed_layer.get(), fields))

    def pop(self) -> None:
        """Remove the fields of the latest ``push()`` made in this context."""
        layer = pushed_layer.get()
        if layer is None:
            raise RuntimeError(
                "log_context.pop() without a matching push() in this task or its parents; "
                "use `with log_context(...)` to scope fields to a block"
            )
        pushed_layer.set(layer.below)

    @property
    def fields(self) -> Mapping[str, Any]:
        """The fields pushed in the current context, read-only."""
        return pushed_fields()


log_context = LogContext()
"""``aioreqctx.log_context``: push fields onto every log line, for stdlib and structlog alike."""
