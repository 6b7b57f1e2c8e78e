"""Lifecycle events as Prometheus metrics: install the ``prometheus`` extra (prometheus-client).

Counts what operators graph first: responses by status, their durations and bytes, requests
and connections in flight, and client disconnects. prometheus-client's metrics are
thread-safe, so the collector is too.
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
    ``response_bytes_sent_total``, ``requests_in_flight``, ``connections_active`` and
    ``client_disconnects_total``. One instance per registry: names register once.
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

    def record(self, event: LifecycleEvent) -> None:
        if isinstance(event, ResponseCompleted):
            self.requests_in_flight.dec()
            self.requests_total.labels(status=str(event.status)).inc()
            self.request_duration.observe(event.duration_ms / 1000.0)
            self.bytes_sent.inc(event.bytes_sent)
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
