"""``async for msg in aioreqctx.web.messages(ws)``: each WebSocket message a unit of work.

A WebSocket connection is one request to the middleware, so without this every message of a
chat or RPC connection would run under the handshake's one ID. Each message received here runs
in a child scope: a new ID (``REQUEST_ID``), the connection's ID as ``PARENT_REQUEST_ID`` (and
as the ``parent_request_id`` field of every log line), its own start and timed operations, and
the connection's other keys. The scope lasts until the next message is read or the connection
ends; tasks the handler starts for a message inherit it. With ``events=`` (a ``RequestEvents``)
each message logs ``message_started`` and ``message_finished``, or ``message_failed`` when its
handling raised out of ``async with messages(...)``. ``message_scope()`` opens the same
kind of scope by hand, for each event a server-sent-events handler pushes.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import WSMessage, web

from .. import keys
from .._core.emit import reported_if_failing
from .._core.ids import checked_generator, new_request_id
from .._core.store import Context, current_mapping, scope
from .._core.sync_or_async import SyncOrAsync
from .._core.unit_of_work import start_values
from .inflight import InFlightRegistry
from .request_events import RequestEvents


def _connection() -> Context:
    connection = current_mapping.get(None)
    if connection is None or keys.REQUEST_ID not in connection:
        raise RuntimeError(
            "aioreqctx.web.messages(ws) and message_scope() must be used in the handler of the "
            "connection's request, under aioreqctx's middleware (setup(app))"
        )
    return connection


def _message_seed(connection: Context, message_id: str) -> Context:
    """A message's first mapping: the connection's keys, its own ID, start and timings."""
    parent_id = connection[keys.REQUEST_ID]
    metadata: Any = connection.get(keys.METADATA)
    return {
        **connection,
        **start_values(message_id),
        keys.PARENT_REQUEST_ID: parent_id,
        keys.METADATA: {
            **(metadata if isinstance(metadata, dict) else {}),
            "parent_request_id": parent_id,
        },
    }


def message_scope(*, generator: Callable[[], str] = new_request_id) -> scope:
    """A child scope of the current request for one message or event (``with``/``async with``):
    its own ID from ``generator``, the request's ID as ``PARENT_REQUEST_ID``."""
    if not callable(generator):
        raise TypeError(f"generator must be callable, not {generator!r}")
    return scope(_message_seed(_connection(), checked_generator(generator)()))


class messages(SyncOrAsync["messages"]):  # noqa: N801 - used like a function: async for msg in messages(ws)
    """The messages of ``ws``, each handled in a child scope with its own ID.

    Create it in the handler that prepared ``ws`` (the connection's request context).
    ``registry``: the app's ``InFlightRegistry``, to list the message in progress (method
    ``MESSAGE``, the connection's path). ``generator``: makes the messages' IDs. ``events``:
    a ``RequestEvents`` that logs each message's start and end (its ID, the connection's as
    ``parent_request_id``, its duration and what it used). Leaving the loop early keeps the
    last message's scope until ``close()`` or the handler's end. Iterated inside
    ``async with messages(ws) as incoming:``, a message whose handling raises is closed with
    that error (``message_failed``); a bare ``async for`` never learns of it.
    """

    __slots__ = (
        "_connection",
        "_events",
        "_generate",
        "_mapping",
        "_path",
        "_registry",
        "_scope",
        "_ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        registry: InFlightRegistry | None = None,
        generator: Callable[[], str] = new_request_id,
        events: RequestEvents | None = None,
    ) -> None:
        connection = _connection()
        if registry is not None and not isinstance(registry, InFlightRegistry):
            raise TypeError(f"registry must be an InFlightRegistry or None, not {registry!r}")
        if events is not None and not isinstance(events, RequestEvents):
            raise TypeError(f"events must be a RequestEvents or None, not {events!r}")
        if not callable(generator):
            raise TypeError(f"generator must be callable, not {generator!r}")
        self._ws = ws
        self._connection: Context = connection
        self._registry = registry
        self._events = events
        self._generate = checked_generator(generator)
        self._path = "" if registry is None else (registry.path_of(connection) or "")
        self._scope: scope | None = None
        self._mapping: Context = {}

    def __aiter__(self) -> messages:
        return self

    def __enter__(self) -> messages:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(exc)

    async def __anext__(self) -> WSMessage:
        self.close()
        message = await self._ws.__anext__()  # StopAsyncIteration when the connection closes
        self._scope = scope(_message_seed(self._connection, self._generate()))
        self._mapping = self._scope.__enter__()
        if self._registry is not None:
            self._registry.add(self._mapping, method="MESSAGE", path=self._path)
        if self._events is not None:
            with reported_if_failing("the start of message %s", self._mapping[keys.REQUEST_ID]):
                self._events.message_started(self._mapping)
        return message

    def close(self, error: BaseException | None = None) -> None:
        """End the current message's scope (the next read does it too); ``error``: what its
        handling raised, for its ``message_failed`` line."""
        open_scope, self._scope = self._scope, None
        if open_scope is None:
            return
        try:
            if self._events is not None:
                with reported_if_failing("the end of message %s", self._mapping[keys.REQUEST_ID]):
                    self._events.message_finished(self._mapping, error)
        finally:
            if self._registry is not None:
                self._registry.remove(self._mapping)
            open_scope.__exit__(None, None, None)
