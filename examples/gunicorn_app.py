"""An aiohttp app for gunicorn's aiohttp worker: each worker process builds its own app.

    gunicorn -c examples/gunicorn.conf.py --chdir examples gunicorn_app:create_app

Every response carries ``X-Request-ID``; ``/whoami`` also reports the ID the handler saw and
the worker's process ID, so a client can tell the workers apart.
"""

from __future__ import annotations

import os

from aiohttp import web

import aioreqctx as context


async def whoami(request: web.Request) -> web.Response:
    return web.json_response({"request_id": context.get(context.REQUEST_ID), "pid": os.getpid()})


async def create_app() -> web.Application:
    """The app factory gunicorn calls in each worker, after the fork."""
    app = web.Application()
    context.setup(app)
    app.router.add_get("/whoami", whoami)
    return app
