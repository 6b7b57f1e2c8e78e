"""structlog processors: the request's fields on each event, in O(1); aioreqctx's events as fields.

structlog's own ``merge_contextvars`` walks every ContextVar of the context on each call
(platform notes, section 4); ``add_request_context`` reads aioreqctx's two ContextVars and
nothing else. Place it in ``structlog.configure(processors=[...])`` before the renderer.
``add_event_fields`` is for the stdlib bridge (``ProcessorFormatter``'s ``foreign_pre_chain``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from structlog.typing import EventDict, Processor

from .fields import DEFAULT_REQUEST_ID, field_adder


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
    return field_adder(context_keys, default, extra_fields, owner="request_context_processor()")


add_request_context = request_context_processor()
"""The processor with defaults: ``structlog.configure(processors=[add_request_context, ...])``."""


def add_event_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """For ``ProcessorFormatter(foreign_pre_chain=[add_event_fields, ...])``: aioreqctx's own
    events written to stdlib logging (the access log, request and lifecycle events) arrive as
    their event name and fields, not as their one-line ``event key=value`` message.

    Those records carry the fields in ``event_fields``; other records pass through untouched.
    Their values win over fields added from the context, so put it first in the chain.
    """
    record = event_dict.get("_record")
    fields = getattr(record, "event_fields", None)
    if isinstance(fields, dict):
        event_dict.update(fields)
        event_dict["event"] = getattr(record, "event", event_dict["event"])
    return event_dict
