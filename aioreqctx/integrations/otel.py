"""OpenTelemetry: install the ``otel`` extra (``opentelemetry-api``).

Two ways across: ``otel_log_fields()`` gives a log line the active span's ``trace_id`` and
``span_id`` (pass it as ``extra_fields=`` to the logging integration, to sit next to the request
ID), and ``SpanRequestIdObserver`` puts the request ID on the span that is active when a request
starts. aioreqctx never starts spans: that span belongs to whatever traces the server (a tracing
middleware placed outside aioreqctx's, or an enclosing span).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .._core.store import Context
from ..web.middleware import OWN_RECORD
from . import missing_extra

try:
    from opentelemetry import trace
except ImportError as error:
    raise missing_extra("otel") from error

SPAN_ATTRIBUTE = "request.id"
_NO_SPAN: dict[str, str | None] = {"trace_id": None, "span_id": None}


def otel_log_fields() -> dict[str, str | None]:
    """``{"trace_id": 32 hex, "span_id": 16 hex}`` of the active span; both None if none.

    None makes the logging integrations write their ``default`` there, so a format string that
    names ``%(trace_id)s`` formats outside a span too. The dict of Nones is shared: copy it
    before changing it.
    """
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return _NO_SPAN
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }


@dataclass(frozen=True, kw_only=True, eq=False)
class SpanRequestIdObserver:
    """A request observer that sets ``attribute`` = the request ID on the span active at start.

    ``setup(app, observers=(SpanRequestIdObserver(),))``. Only a recording span is touched.
    """

    attribute: str = SPAN_ATTRIBUTE

    def __post_init__(self) -> None:
        if not isinstance(self.attribute, str) or not self.attribute:
            raise ValueError(f"attribute must be a non-empty string, not {self.attribute!r}")

    def request_started(self, request: web.Request, mapping: Context) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(self.attribute, request[OWN_RECORD][0])

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        """Nothing to do: the span is ended by whoever started it."""
