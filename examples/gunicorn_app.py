"""An aiohttp app for gunicorn's aiohttp worker: each worker process builds its own app.

    gunicorn -c examples/gunicorn.conf.py --chdir examples gunicorn_app:create_app

Every response carries ``X-Request-ID``; ``/whoami`` also reports the ID the handler saw, the
worker's process ID, so a client can tell the workers apart, and the ``worker_id`` of the
lifecycle events this worker has recorded (kept in a ``BufferedCollector`` of at most
``EVENTS_KEPT`` events, which counts what it had to drop; ``/whoami`` empties it).
"""

from __future__ import annotations

import os

from aiohttp import web

import aioreqctx as context

EVENTS: web.AppKey[context.BufferedCollector] = web.AppKey("events", context.BufferedCollector)
EVENTS_KEPT = 256  # a bound, so a worker that is never asked cannot grow without limit


async def whoami(request: web.Request) -> web.Response:
    events = request.app[EVENTS]
    dropped = events.dropped
    kept = events.flush()
    return web.json_response(
        {
            "request_id": context.get(context.REQUEST_ID),
            "pid": os.getpid(),
            "lifecycle_worker_ids": sorted({event.worker_id for event in kept}),
            "lifecycle_events": len(kept),
            "lifecycle_events_dropped": dropped,
        }
    )


async def create_app() -> web.Application:
    """The app factory gunicorn calls in each worker, after the fork."""
    app = web.Application()
    app[EVENTS] = context.BufferedCollector(max_buffer_size=EVENTS_KEPT)
    context.setup(app, collector=app[EVENTS])
    app.router.add_get("/whoami", whoami)
    return app
