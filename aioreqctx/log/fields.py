"""The fields every log line of a request carries, worked out in one place for stdlib and structlog,
and ``log_context``, which pushes fields of its own for a block.

A line gets, in this order of precedence (a name already present is never overwritten, so a
field the log call passed explicitly always wins): ``request_id`` (and, in detached work only,
``origin_request_id``), the configured context keys, the pushed logging context
(``aioreqctx.log_context``), then the request's metadata
(``keys.METADATA``), then the fields of ``extra_fields``, if given (the OpenTelemetry
integration's ``otel_log_fields`` adds the active span's ``trace_id`` and ``span_id``).
Reading them costs two ContextVar lookups, however many ContextVars the context holds.

``with aioreqctx.log_context(user="x"): ...`` (or ``.push()``/``.pop()``, talisker's
``Context.logging``) keeps its fields in a ContextVar of their own, holding an immutable layer
that is replaced, never changed: a task or thread sees what was pushed in its own context and in
the context it was started from, and concurrent requests never see each other's fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from types import MappingProxyType
from typing import Any, NamedTuple

from .. import keys
from .._core.detach import unit_scoped
from .._core.ids import NO_REQUEST_ID, logged_id
from .._core.options import check
from .._core.store import current_mapping
from .._core.sync_or_async import SyncOrAsync

NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


class _Layer(NamedTuple):
    fields: Mapping[str, Any]  # everything pushed so far, merged, read-only
    below: _Layer | None  # what pop() goes back to


pushed_layer: ContextVar[_Layer | None] = ContextVar("aioreqctx.log_context", default=None)
"""The current layer; the log-field code reads it directly, as cheap as it gets."""
unit_scoped(pushed_layer, None)  # detached work drops a request's fields; a hand-off keeps them


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


DEFAULT_REQUEST_ID = NO_REQUEST_ID


FieldAdder = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]
"""``add(logger, method_name, target) -> target``: adds the fields to ``target`` and returns it.

Shaped like a structlog processor, so structlog calls it with no wrapper around it (each Python
call frame on this path is a measurable share of the cost); the stdlib filter passes a record's
``__dict__``."""


def field_adder(
    context_keys: Mapping[str, str] | None = None,
    default: Any = DEFAULT_REQUEST_ID,
    extra_fields: Callable[[], Mapping[str, Any]] | None = None,
    *,
    owner: str,
) -> FieldAdder:
    """The function that adds the request's fields to a log line.

    ``context_keys`` maps a context key (as used with ``aioreqctx.set``) to the field name it
    gets on log lines, e.g. ``{"user.id": "user_id"}``. ``default`` stands in for the request ID
    and for every configured key the context lacks, so a format string such as
    ``%(request_id)s %(user_id)s`` always has its fields. ``extra_fields`` is called for every
    line and its fields added (one it returns as None gets ``default`` too), e.g.
    ``aioreqctx.integrations.otel.otel_log_fields`` for the active span's ``trace_id`` and
    ``span_id`` (OpenTelemetry's span lookup costs about twice everything else here).
    ``owner`` names the caller in the error a bad option gets.
    """
    pairs = _checked(owner, context_keys)
    current = current_mapping.get
    pushed = pushed_layer.get
    request_id_key, metadata_key = keys.REQUEST_ID, keys.METADATA
    origin_key = keys.ORIGIN_REQUEST_ID
    if extra_fields is not None and not callable(extra_fields):
        raise TypeError(f"extra_fields must be callable (() -> mapping), not {extra_fields!r}")

    def add_fields(  # noqa: PLR0912 - one frame per log line (module docstring)
        logger: Any, method_name: str, target: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        mapping = current(None)
        metadata = None
        if mapping is None:
            target.setdefault("request_id", default)
            if pairs:
                for _, name in pairs:
                    target.setdefault(name, default)
        else:
            request_id = mapping.get(request_id_key)
            if type(request_id) is not str or not (
                request_id.isascii() and request_id.isprintable()
            ):  # none, or stored by the program, not the middleware: escaped (ids.logged_id)
                request_id = default if request_id is None else logged_id(request_id)
            target.setdefault("request_id", request_id)
            if pairs:  # a test is cheaper than starting a loop over nothing
                for key, name in pairs:
                    target.setdefault(name, mapping.get(key, default))
            metadata = mapping.get(metadata_key)
            origin = mapping.get(origin_key)
            if origin is not None:  # detached work: the request or job that started it
                target.setdefault("origin_request_id", origin)
        layer = pushed()
        if layer is not None:
            for name, value in layer.fields.items():
                target.setdefault(name, value)
        if metadata and isinstance(metadata, dict):
            for name, value in metadata.items():
                target.setdefault(name, value)
        if extra_fields is not None:
            for name, value in extra_fields().items():
                target.setdefault(name, default if value is None else value)
        return target

    return add_fields


def _checked(owner: str, context_keys: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    check(owner, "context_keys", context_keys)
    pairs = tuple((context_keys or {}).items())
    for key, name in pairs:
        if not isinstance(key, str) or not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"context_keys entry {key!r}: {name!r} is not usable; map each context key "
                "(a string) to a field name that is a Python identifier, e.g. "
                "{'user.id': 'user_id'}"
            )
        if name == "request_id":
            raise ValueError("context_keys may not map to 'request_id': that field is built in")
    return pairs
