"""Sentry (``pip install 'aioreqctx[sentry]'``): the request's and the job's IDs on every event.

The IDs are added when an event is built, by an event processor that reads the context current
where the event was captured, instead of being set as tags on a scope when a request starts.
So nothing is paid per request, and nothing can leak: without Sentry's ``AioHttpIntegration``
every request shares one isolation scope, and a tag set there would reach the next request's
events; with it, its per-request scope changes nothing here. Tags the application set itself
on a scope are kept.

With ``AioHttpIntegration``, Sentry stops listening to the ``aiohttp.server`` logger and only
reports exceptions that reach its own wrapper; aioreqctx's middleware answers an unhandled
exception with a 500 before that, so ``UnhandledErrorReporter`` reports it instead.

Log lines (a job's ``job_failed``, the queue's own) reach Sentry through its logging
integration, which sentry-sdk 3 only makes events of when given
``LoggingIntegration(event_level=logging.ERROR)`` (sentry-sdk 2's default): docs/jobs.md's
set-up passes it, for both majors.

Only sentry-sdk's public API is used (2.x and 3.x): ``add_global_event_processor`` (Sentry's
"Event Processors" guide), ``capture_exception``, ``new_scope`` and a scope's event processor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .. import keys
from .._core.store import Context, current_mapping
from . import missing_extra

try:
    import sentry_sdk
    from sentry_sdk.integrations import Integration
    from sentry_sdk.scope import add_global_event_processor
except ImportError as error:
    raise missing_extra("sentry") from error

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

_MECHANISM = {"type": "aiohttp", "handled": False}  # what AioHttpIntegration's reports carry
_TAG_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,32}")  # what Sentry accepts as a tag key


class AioreqctxIntegration(Integration):
    """``sentry_sdk.init(..., integrations=[AioreqctxIntegration()])``.

    Every event captured inside a request or a job gets the request ID as the tag
    ``request_id_tag`` and, in a job, the job's ID as ``job_id_tag``.
    """

    identifier = "aioreqctx"

    def __init__(self, *, request_id_tag: str = "request_id", job_id_tag: str = "job_id") -> None:
        for option, tag in (("request_id_tag", request_id_tag), ("job_id_tag", job_id_tag)):
            if not isinstance(tag, str) or _TAG_KEY.fullmatch(tag) is None:
                raise ValueError(
                    f"{option}: {tag!r} is not a Sentry tag key (1-32 of A-Z a-z 0-9 _ . : -)"
                )
        self.tags = ((keys.REQUEST_ID, request_id_tag), (keys.JOB_ID, job_id_tag))

    @staticmethod
    def setup_once() -> None:
        add_global_event_processor(_add_tags)


def _add_tags(event: Event, hint: Hint) -> Event:
    """Runs where the event was captured, so the current context is the event's own."""
    mapping = current_mapping.get(None)
    if mapping is None:
        return event
    integration = sentry_sdk.get_client().get_integration(AioreqctxIntegration)
    if integration is None:  # installed by an earlier client, not by this one
        return event
    tags = event.setdefault("tags", {})
    for key, tag in integration.tags:
        value = mapping.get(key)
        if value is not None:
            tags.setdefault(tag, value)
    return event


@dataclass(frozen=True, eq=False)
class UnhandledErrorReporter:
    """A request observer that sends Sentry the exceptions the middleware answered with a 500.

    ``aioreqctx.setup(app, observers=(UnhandledErrorReporter(),))``. Each is reported as
    unhandled, as ``AioHttpIntegration`` reports what reaches it. Where Sentry's logging
    integration turns ERROR lines into events, it reported the exception already (the line
    ``aiohttp.server`` logs); Sentry's dedupe then drops this second report.
    """

    def request_started(self, request: web.Request, mapping: Context) -> None:
        """Nothing to do until the request ends."""

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        if error is None or response is None or response.status != 500:
            return  # raised HTTP errors and cancellations reach Sentry's own wrapper
        if not sentry_sdk.get_client().is_active():
            return
        with sentry_sdk.new_scope() as scope:
            scope.add_event_processor(_unhandled)
            sentry_sdk.capture_exception(error)


def _unhandled(event: Event, hint: Hint) -> Event:
    """Marks the exception raised (the last of a chain) as one the application did not handle."""
    values = event.get("exception", {}).get("values")
    if values:
        values[-1]["mechanism"] = {**values[-1].get("mechanism", {}), **_MECHANISM}
    return event
