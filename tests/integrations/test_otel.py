"""OpenTelemetry with the real SDK and its in-memory exporter: span attribute and log fields."""

from __future__ import annotations

import io
import logging
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.typedefs import Handler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aioreqctx as context
from aioreqctx.integrations.otel import SpanRequestIdObserver, otel_log_fields

from ..conftest import LoopFactory, run
from ..support.http_helpers import serving


def traced_app(provider: TracerProvider) -> web.Application:
    """An app whose tracing middleware sits outside aioreqctx's, as a server span would."""
    tracer = provider.get_tracer("tests")

    @web.middleware
    async def tracing(request: web.Request, handler: Handler) -> web.StreamResponse:
        with tracer.start_as_current_span("server " + request.path):
            return await handler(request)

    async def fields(request: web.Request) -> web.Response:
        with tracer.start_as_current_span("inner"):
            inner = otel_log_fields()
        return web.json_response({"server": otel_log_fields(), "inner": inner})

    app = web.Application()
    context.setup(app, observers=(SpanRequestIdObserver(),))
    app.middlewares.insert(0, tracing)
    app.router.add_get("/fields", fields)
    return app


def test_request_id_on_the_span_and_trace_ids_in_log_fields(loop_factory: LoopFactory) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    async def main() -> list[dict[str, Any]]:
        bodies = []
        async with serving(traced_app(provider)) as port, ClientSession() as client:
            for headers in ({"X-Request-ID": "otel-1"}, {}):
                url = f"http://127.0.0.1:{port}/fields"
                async with client.get(url, headers=headers) as response:
                    bodies.append(await response.json())
                    bodies[-1]["id"] = response.headers["X-Request-ID"]
        return bodies

    given, generated = run(loop_factory, main)
    servers = [span for span in exporter.get_finished_spans() if span.name == "server /fields"]
    assert [(span.attributes or {}).get("request.id") for span in servers] == [
        "otel-1",
        generated["id"],
    ]
    for span, body in zip(servers, (given, generated), strict=True):
        assert body["server"] == {
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
        }
        assert body["inner"]["trace_id"] == body["server"]["trace_id"]
        assert body["inner"]["span_id"] != body["server"]["span_id"]
    provider.shutdown()


def test_without_an_active_span_there_is_nothing() -> None:
    assert otel_log_fields() == {"trace_id": None, "span_id": None}  # the loggers' default
    observer = SpanRequestIdObserver()
    mapping: context.Context = {context.REQUEST_ID: "no-span"}
    observer.request_started(None, mapping)  # type: ignore[arg-type]  # not read without a span
    assert mapping == {context.REQUEST_ID: "no-span"}


def test_log_lines_carry_the_active_span_next_to_the_request_id() -> None:
    tracer = TracerProvider().get_tracer("tests")
    add_fields = context.request_context_processor(extra_fields=otel_log_fields)
    without = context.request_context_processor()
    with context.scope({context.REQUEST_ID: "traced-1"}):
        outside = add_fields(None, "info", {"event": "before"})
        with tracer.start_as_current_span("work") as span:
            inside = add_fields(None, "info", {"event": "inside"})
            explicit = add_fields(None, "info", {"event": "x", "trace_id": "given"})
            default = without(None, "info", {"event": "default"})
    assert default == {"event": "default", "request_id": "traced-1"}  # off unless asked for
    assert outside == {"event": "before", "request_id": "traced-1", "trace_id": "-", "span_id": "-"}
    assert inside == {
        "event": "inside",
        "request_id": "traced-1",
        "trace_id": format(span.get_span_context().trace_id, "032x"),
        "span_id": format(span.get_span_context().span_id, "016x"),
    }
    assert isinstance(explicit, dict)
    assert explicit["trace_id"] == "given"


def test_span_fields_always_format_in_stdlib_records_inside_and_outside_a_span() -> None:
    tracer = TracerProvider().get_tracer("tests")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(request_id)s %(trace_id)s %(span_id)s %(message)s"))
    handler.addFilter(context.RequestContextFilter(extra_fields=otel_log_fields, default="none"))
    log = logging.getLogger("tests.otel.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("outside")
        with tracer.start_as_current_span("work") as span:
            log.warning("inside")
    finally:
        log.removeHandler(handler)
    uninstall = context.install_log_record_factory(extra_fields=otel_log_fields)
    try:
        stamped = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "m", (), None)
    finally:
        uninstall()
    ids = span.get_span_context()
    assert stream.getvalue().splitlines() == [
        "none none none outside",
        f"none {ids.trace_id:032x} {ids.span_id:016x} inside",
    ]
    assert (stamped.trace_id, stamped.span_id) == ("-", "-")  # type: ignore[attr-defined]
