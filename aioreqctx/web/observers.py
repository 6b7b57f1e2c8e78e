"""What the middleware tells other parts of aioreqctx (and users) about each request.

Request events, the in-flight registry and lifecycle collectors all need the same two moments:
the request's context is open, and the request has ended (returned, raised or was cancelled).
The middleware calls every observer at both, in the request's task and context; with none
configured it does not look for them, so the default path stays as short as it can be.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from .._core.store import Context


class RequestObserver(Protocol):
    """Told when a request starts and ends; pass instances as ``setup(app, observers=...)``."""

    def request_started(self, request: web.Request, mapping: Context) -> None:
        """The request's context is open; its ID is ``mapping["X-Request-ID"]``."""

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        """The middleware is done with the request.

        ``response`` is what goes back (None when an exception propagates: a raised
        ``web.HTTPException`` is in ``error``, and so is a cancellation or disconnect).
        For an unhandled exception both are set: the 500 that answers it and the exception.
        The response may not be written yet; its bytes are known when the request task ends.
        """
