"""The fields every log line of a request carries, worked out in one place for stdlib and structlog.

A line gets, in this order of precedence (a name already present is never overwritten, so a
field the log call passed explicitly always wins): ``request_id``, the configured context keys,
the pushed logging context (``aioreqctx.log_context``), then the request's metadata
(``keys.METADATA``). Reading them costs two ContextVar lookups, however many ContextVars the
context holds; outside a request only the defaults and the pushed fields are added.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from . import keys
from .logging_context import pushed_layer
from .store import current_mapping

DEFAULT_REQUEST_ID = "-"


class LogFields:
    """Which request fields go on a log line, and their values when there is no request.

    ``context_keys`` maps a context key (as used with ``aioreqctx.set``) to the field name it
    gets on log lines, e.g. ``{"user.id": "user_id"}``. ``default`` stands in for the request ID
    and for every configured key the context lacks, so a format string such as
    ``%(request_id)s %(user_id)s`` always has its fields.
    """

    __slots__ = ("_context_keys", "default")

    def __init__(
        self, context_keys: Mapping[str, str] | None = None, default: Any = DEFAULT_REQUEST_ID
    ) -> None:
        pairs = tuple((context_keys or {}).items())
        for key, name in pairs:
            if not isinstance(key, str) or not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"context_keys entry {key!r}: {name!r} is not usable; map each context key "
                    "(a string) to a field name that is a Python identifier, e.g. "
                    "{'user.id': 'user_id'}"
                )
        if any(name == "request_id" for _, name in pairs):
            raise ValueError("context_keys may not map to 'request_id': that field is built in")
        self._context_keys = pairs
        self.default = default

    def add_to(self, target: MutableMapping[str, Any]) -> None:
        """Add the current request's fields to ``target``, leaving names it already has alone."""
        default = self.default
        mapping = current_mapping.get(None)
        if mapping is None:
            target.setdefault("request_id", default)
            for _, name in self._context_keys:
                target.setdefault(name, default)
            metadata = None
        else:
            target.setdefault("request_id", mapping.get(keys.REQUEST_ID, default))
            for key, name in self._context_keys:
                target.setdefault(name, mapping.get(key, default))
            metadata = mapping.get(keys.METADATA)
        layer = pushed_layer.get()
        if layer is not None:
            for name, value in layer.fields.items():
                target.setdefault(name, value)
        if metadata and isinstance(metadata, dict):
            for name, value in metadata.items():
                target.setdefault(name, value)
