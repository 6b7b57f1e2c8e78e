"""A structlog processor that adds the request's fields to each event, in O(1).

structlog's own ``merge_contextvars`` walks every ContextVar of the context on each call
(platform notes, section 4); this one reads aioreqctx's two ContextVars and nothing else.
Place it in ``structlog.configure(processors=[...])`` before the renderer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from structlog.typing import Processor

from .log_fields import DEFAULT_REQUEST_ID, field_adder


def request_context_processor(
    context_keys: Mapping[str, str] | None = None,
    default: Any = DEFAULT_REQUEST_ID,
    extra_fields: Callable[[], Mapping[str, Any]] | None = None,
) -> Processor:
    """A processor adding ``request_id``, the configured context keys, the pushed logging
    context and the request's metadata; keys the event already has win.

    ``request_context_processor(context_keys={"user.id": "user_id"}, default=None)``;
    ``aioreqctx.add_request_context`` is the one with every default.
    """
    return field_adder(context_keys, default, extra_fields)


add_request_context = request_context_processor()
"""The processor with defaults: ``structlog.configure(processors=[add_request_context, ...])``."""
