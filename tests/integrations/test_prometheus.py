"""PrometheusCollector's metrics after real traffic, read back from a private registry."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry

import aioreqctx as context
from aioreqctx.integrations.prometheus import PrometheusCollector

from ..conftest import LoopFactory, run
from ..support.http_helpers import get_request, raw_exchange, serving
from ..web.test_server_events import Handlers, until


def test_metrics_follow_requests_connections_and_disconnects(loop_factory: LoopFactory) -> None:
    registry = CollectorRegistry()
    handlers = Handlers()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"aioreqctx_{name}", labels)

    async def main() -> None:
        app = web.Application()
        context.setup(app, collector=PrometheusCollector(registry=registry))
        app.router.add_get("/ok", handlers.ok)
        app.router.add_get("/stream", handlers.stream)
        async with serving(app) as port:
            responses = await raw_exchange(
                port, get_request("/ok"), get_request("/ok"), get_request("/nowhere")
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(get_request("/stream"))
            await asyncio.wait_for(reader.readuntil(b"chunk"), 10)
            assert value("requests_in_flight") == 1
            assert value("connections_active") == 1
            writer.close()
            await until(lambda: value("connections_active") == 0)
        assert value("requests_total", status="200") == 2
        assert value("requests_total", status="404") == 1
        assert value("request_duration_seconds_count") == 3
        wire = sum(len(r.body) for r in responses)
        assert (value("response_bytes_sent_total") or 0) > wire  # bodies plus headers
        assert value("client_disconnects_total") == 1
        assert value("requests_in_flight") == 0

    run(loop_factory, main)
