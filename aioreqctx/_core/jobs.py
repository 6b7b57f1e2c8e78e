"""``unit_of_work()``: a request's context, ID, timing and events for work that is no request.

Background jobs, CLI commands and queue consumers deserve the same correlation as HTTP
requests: an ID on every log line, a duration, a start and an end event, a place in the
in-flight registry. ``unit_of_work()`` opens a fresh context (``aioreqctx.scope``) holding
the keys the middleware sets, and restores the previous context on exit, so jobs nest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from time import perf_counter, time
from types import TracebackType
from typing import Any

from .. import keys
from .emit import reported_if_failing
from .ids import escaped, is_valid_request_id, new_request_id
from .jsonsafe import safe_text
from .request_view import Registry, RequestContext, error_fields
from .store import scope
from .sync_or_async import SyncOrAsync
from .timing import OperationTimings

logger = logging.getLogger("aioreqctx")


class unit_of_work(SyncOrAsync[RequestContext]):  # noqa: N801 - used like contextlib's lower-case context managers
    """Run a block as one unit of work with its own context; ``with`` or ``async with``.

    ``request_id``: the ID to use (from a queue message, say); checked like an incoming header
    (``is_valid_request_id``): an invalid one is replaced by a new UUID4 and kept, escaped,
    under ``REJECTED_REQUEST_ID``. None (default) makes a new one.
    ``name``: what the work is, shown in events and in the registry's ``path``.
    ``logger``: where ``request_start`` / ``request_success`` / ``request_error`` go (the names
    ccproxy uses; ``aioreqctx.requests`` by default; a stdlib or structlog logger).
    ``registry``: an ``InFlightRegistry`` to list the work in while it runs.
    ``metadata``: initial ``add_metadata`` fields, carried by every log line of the work.

    Yields the ``RequestContext``. An exception is logged (ERROR, with its traceback; a
    cancellation or other ``BaseException`` at WARNING without one) and propagates.
    """

    __slots__ = ("_context", "_logger", "_metadata", "_name", "_registry", "_request_id", "_scope")

    def __init__(
        self,
        request_id: str | None = None,
        *,
        name: str = "job",
        logger: logging.Logger | str | Any = None,
        registry: Registry | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self._request_id = request_id
        self._name = name
        self._logger = logger
        self._registry = registry
        self._metadata = dict(metadata or {})
        self._scope: scope | None = None
        self._context: RequestContext | None = None

    def __enter__(self) -> RequestContext:
        if self._scope is not None:
            raise RuntimeError("this unit_of_work is already open; create a new one per use")
        values: dict[str, Any] = {
            keys.REQUEST_ID: self._request_id,
            keys.START_MONOTONIC: perf_counter(),
            keys.START_TIME: time(),
            keys.OPERATIONS: OperationTimings(),
        }
        if not (isinstance(self._request_id, str) and is_valid_request_id(self._request_id)):
            values[keys.REQUEST_ID] = new_request_id()
            if self._request_id is not None:
                values[keys.REJECTED_REQUEST_ID] = escaped(safe_text(self._request_id))
                logger.warning(
                    'unit_of_work(%s): invalid request_id "%s" replaced',
                    escaped(self._name),
                    values[keys.REJECTED_REQUEST_ID],
                )
        if self._metadata:
            values[keys.METADATA] = dict(self._metadata)
        self._scope = scope(values)
        mapping = self._scope.__enter__()
        self._context = context = RequestContext(mapping, logger=self._logger)
        try:
            if self._registry is not None:
                self._registry.add(mapping, method=None, path=self._name)
            with reported_if_failing("the start of %s", self._name):
                context.log(logging.INFO, "request_start", {"name": self._name, **self._metadata})
        except BaseException:  # nothing stays open: not the context, not the registry entry
            self._close(context)
            raise
        return context

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._scope is not None, "__exit__ without __enter__"
        assert self._context is not None, "__exit__ without __enter__"
        context, self._context = self._context, None
        fields: dict[str, Any] = {"name": self._name}
        try:
            with reported_if_failing("the end of %s", self._name):
                if exc is None:
                    context.log(logging.INFO, "request_success", fields)
                else:  # a cancellation (or any BaseException) is no bug: no traceback
                    is_bug = isinstance(exc, Exception)
                    fields.update(error_fields(exc, traceback=is_bug))
                    level = logging.ERROR if is_bug else logging.WARNING
                    context.log(level, "request_error", fields)
        finally:
            self._close(context)

    def _close(self, context: RequestContext) -> None:
        """Leave the registry and restore the previous context."""
        assert self._scope is not None, "closing a unit_of_work that is not open"
        open_scope, self._scope, self._context = self._scope, None, None
        if self._registry is not None:
            self._registry.remove(context.mapping)
        open_scope.__exit__(None, None, None)
