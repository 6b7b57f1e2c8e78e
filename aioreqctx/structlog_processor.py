"""A structlog processor that adds the request's fields to each event, in O(1).

structlog's own ``merge_contextvars`` walks every ContextVar of the context on each call
(platform notes, section 4); this one reads aioreqctx's two ContextVars and nothing else.
Place it in ``structlog.configure(processors=[...])`` before the renderer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

from .log_fields import DEFAULT_REQUEST_ID, LogFields


class RequestContextProcessor:
    """Adds ``request_id``, the configured context keys, pushed and metadata fields.

    Keys the event already has win. ``RequestContextProcessor(context_keys={"user.id":
    "user_id"}, default=None)`` configures it; ``aioreqctx.add_request_context`` is the default.
    """

    __slots__ = ("_add_fields",)

    def __init__(
        self, context_keys: Mapping[str, str] | None = None, default: Any = DEFAULT_REQUEST_ID
    ) -> None:
        self._add_fields = LogFields(context_keys, default).add_to

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        self._add_fields(event_dict)
        return event_dict


add_request_context = RequestContextProcessor()
"""The processor with defaults: ``structlog.configure(processors=[add_request_context, ...])``."""
