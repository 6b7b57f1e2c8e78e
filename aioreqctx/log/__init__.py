"""The logging integration: the request's fields on every stdlib or structlog line.

Nothing here imports the aiohttp server; structlog is loaded only by its processors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core.lazy import lazy_names

if TYPE_CHECKING:
    from .buffer import LogBuffer
    from .debug import DebugOnDemand
    from .logging_context import log_context
    from .processors import add_event_fields, add_request_context, request_context_processor
    from .stdlib import RequestContextFilter, install_log_record_factory
    from .structlog_buffer import buffering_bound_logger, filter_by_level_or_buffer
    from .tracebacks import format_exception

__all__ = (
    "DebugOnDemand",
    "LogBuffer",
    "RequestContextFilter",
    "add_event_fields",
    "add_request_context",
    "buffering_bound_logger",
    "filter_by_level_or_buffer",
    "format_exception",
    "install_log_record_factory",
    "log_context",
    "request_context_processor",
)

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".buffer": ("LogBuffer",),
        ".debug": ("DebugOnDemand",),
        ".logging_context": ("log_context",),
        ".processors": ("add_event_fields", "add_request_context", "request_context_processor"),
        ".stdlib": ("RequestContextFilter", "install_log_record_factory"),
        ".structlog_buffer": ("buffering_bound_logger", "filter_by_level_or_buffer"),
        ".tracebacks": ("format_exception",),
    },
)
