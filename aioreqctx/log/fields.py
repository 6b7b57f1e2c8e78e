"""The fields every log line of a request carries, worked out in one place for stdlib and structlog.

A line gets, in this order of precedence (a name already present is never overwritten, so a
field the log call passed explicitly always wins): ``request_id``, the configured context keys,
the pushed logging context (``aioreqctx.log_context``), then the request's metadata
(``keys.METADATA``), then the fields of ``extra_fields``, if given (the OpenTelemetry
integration's ``otel_log_fields`` adds the active span's ``trace_id`` and ``span_id``).
Reading them costs two ContextVar lookups, however many ContextVars the context holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from .. import keys
from .._core.ids import NO_REQUEST_ID, logged_id
from .._core.options import check
from .._core.store import current_mapping
from .logging_context import pushed_layer

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
