"""``aioreqctx.setup(app, ...)``: everything aioreqctx hooks into one aiohttp application.

In the style of ``aiohttp_session.setup``: the middleware (outermost), the
``on_response_prepare`` handler that labels streaming and WebSocket responses, and the
observers that request events, the in-flight registry and lifecycle events need. Each option
left at its default installs nothing, so the request path costs only what is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .inflight import InFlightRegistry
from .lifecycle import LifecycleCollector, LifecycleEvent, NoopCollector, as_collector
from .middleware import RequestIdMiddleware
from .observers import RequestObserver
from .request_events import RequestEvents
from .server_events import ServerEvents

MIDDLEWARE: web.AppKey[RequestIdMiddleware] = web.AppKey("aioreqctx.middleware")


def setup(
    app: web.Application,
    *,
    collector: LifecycleCollector | Callable[[LifecycleEvent], None] | None = None,
    worker_id: int | None = None,
    request_events: RequestEvents | bool = False,
    registry: InFlightRegistry | None = None,
    **options: Any,
) -> RequestIdMiddleware:
    """Install the middleware (outermost) and the ``on_response_prepare`` handler on ``app``.

    Use this rather than the bare middleware when the app streams, serves WebSockets or must
    label aiohttp's own 500 pages. Options are ``RequestIdMiddleware``'s fields, plus
    ``collector`` (lifecycle events, ``aioreqctx.lifecycle``; the default installs nothing)
    and the ``worker_id`` its events carry (default: the process ID), ``request_events``
    (``True`` or a ``RequestEvents``: request_started/finished/failed lines) and ``registry``
    (an ``InFlightRegistry`` of the requests in flight).
    """
    if MIDDLEWARE in app:
        raise RuntimeError("aioreqctx.setup() was already called for this application")
    observers: list[RequestObserver] = list(options.pop("observers", ()))
    if request_events is True:
        request_events = RequestEvents()
    if isinstance(request_events, RequestEvents):
        observers.append(request_events)
    elif request_events is not False:
        raise TypeError(
            f"request_events must be True, False or a RequestEvents, not {request_events!r}"
        )
    if registry is not None:
        if not isinstance(registry, InFlightRegistry):
            raise TypeError(f"registry must be an InFlightRegistry, not {registry!r}")
        observers.append(registry)
    collector = as_collector(collector)
    events = None
    if not isinstance(collector, NoopCollector):
        events = ServerEvents(collector, worker_id)
        observers.append(events)
    options["observers"] = tuple(observers)
    middleware = RequestIdMiddleware(**options)
    if events is not None:
        events.install(app)
    object.__setattr__(middleware, "_labelled_on_prepare", True)
    app.middlewares.insert(0, middleware)
    app.on_response_prepare.append(middleware.on_response_prepare)
    app[MIDDLEWARE] = middleware
    return middleware
