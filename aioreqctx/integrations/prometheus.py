"""Lifecycle events as Prometheus metrics: install the ``prometheus`` extra (prometheus-client).

Counts what operators graph first: responses by status, their durations and bytes, requests
and connections in flight, client disconnects, and what requests used of their dependencies
(the totals behind each request's wide line: SQL queries, HTTP calls, jobs, warnings).
prometheus-client's metrics are thread-safe, so the collector is too.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..events import (
    ClientDisconnected,
    ConnectionCompleted,
    ConnectionOpened,
    LifecycleEvent,
    RequestStarted,
    ResponseCompleted,
)
from . import missing_extra

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as error:
    raise missing_extra("prometheus") from error


class PrometheusCollector:
    """Metrics named ``<namespace>_...`` (default ``aioreqctx_``) in ``registry``.

    ``requests_total{status}``, ``request_duration_seconds`` (histogram, ``buckets``),
    ``response_bytes_sent_total``, ``requests_in_flight``, ``connections_active``,
    ``client_disconnects_total`` and, labelled by ``name`` (``db_queries``, ``http_calls``,
    ``jobs``, ``log_warnings``, ``log_errors``: one label value per name the code records, never
    per request), ``dependency_uses_total``, ``dependency_seconds_total`` and
    ``dependency_errors_total``. One instance per registry: names register once.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry = REGISTRY,
        namespace: str = "aioreqctx",
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        ns, reg = namespace, registry
        self.requests_total = Counter(
            "requests_total",
            "Responses written to the end, by status",
            ["status"],
            namespace=ns,
            registry=reg,
        )
        self.request_duration = Histogram(
            "request_duration_seconds",
            "From the request reaching the app to its response written",
            buckets=buckets,
            namespace=ns,
            registry=reg,
        )
        self.bytes_sent = Counter(
            "response_bytes_sent",
            "Response bytes written (headers and body)",
            namespace=ns,
            registry=reg,
        )
        self.requests_in_flight = Gauge(
            "requests_in_flight", "Requests being handled", namespace=ns, registry=reg
        )
        self.connections_active = Gauge(
            "connections_active", "Open connections", namespace=ns, registry=reg
        )
        self.client_disconnects = Counter(
            "client_disconnects",
            "Requests whose client left before the response ended",
            namespace=ns,
            registry=reg,
        )

        self.dependency_uses = Counter(
            "dependency_uses",
            "Uses of a dependency by responses written (queries, outgoing calls, jobs queued)",
            ["name"],
            namespace=ns,
            registry=reg,
        )
        self.dependency_seconds = Counter(
            "dependency_seconds",
            "Time responses written spent in a dependency",
            ["name"],
            namespace=ns,
            registry=reg,
        )
        self.dependency_errors = Counter(
            "dependency_errors",
            "Failed uses of a dependency by responses written",
            ["name"],
            namespace=ns,
            registry=reg,
        )

    def record(self, event: LifecycleEvent) -> None:
        if isinstance(event, ResponseCompleted):
            self.requests_in_flight.dec()
            self.requests_total.labels(status=str(event.status)).inc()
            self.request_duration.observe(event.duration_ms / 1000.0)
            self.bytes_sent.inc(event.bytes_sent)
            for name, used in event.usage.items():  # empty for a request that used nothing
                self.dependency_uses.labels(name=name).inc(used.uses)
                if used.total_ms:
                    self.dependency_seconds.labels(name=name).inc(used.total_ms / 1000.0)
                if used.errors:
                    self.dependency_errors.labels(name=name).inc(used.errors)
        elif isinstance(event, RequestStarted):
            self.requests_in_flight.inc()
        elif isinstance(event, ClientDisconnected):
            self.client_disconnects.inc()
            if event.request_id is not None:
                self.requests_in_flight.dec()
        elif isinstance(event, ConnectionOpened):
            self.connections_active.inc()
        elif isinstance(event, ConnectionCompleted):
            self.connections_active.dec()
