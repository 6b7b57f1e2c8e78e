"""The registry of requests in flight: which requests and jobs run, since when, doing what.

When a service hangs or slows down, the first question is what it is busy with. The registry
answers it: every running request's ID, method, path, age and current ``timed_operation``.
It is a ``RequestObserver`` (``aioreqctx.setup(app, observers=(registry,))``) and
``unit_of_work(registry=...)`` jobs can join it. An entry whose end never comes (a bug, a
lost task) is dropped once it is older than ``max_age_seconds`` and logged once, so the registry
cannot grow without bound.

It is cheap enough to leave on (bench/observers.py): a request costs one plain tuple, one dict
insertion and one dict pop, keyed by the identity of the request's mapping (IDs may repeat; a
live mapping's identity cannot). No lock: a single dict operation and ``dict.copy()`` are atomic
on CPython, with the GIL and in free-threaded builds alike, so threads may use it too; every
reader works on a copy and ``pop`` tolerates a key already gone.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple

from aiohttp import hdrs, web

from .._core.await_chain import await_chain
from .._core.emit import event_sink
from .._core.ids import peer_address
from .._core.jsonsafe import JsonValue, json_safe
from .._core.options import HEADER_NAME, Rule, check
from .._core.store import Context, running_task
from .._core.timing import OperationTimings
from ..keys import OPERATIONS, REQUEST_ID, START_MONOTONIC, START_TIME

REGISTRY_LOGGER = "aioreqctx.inflight"


class InFlightEntry(NamedTuple):
    """One running request or job. ``started`` is ``perf_counter()``, ``start_time`` wall time."""

    request_id: str
    method: str | None
    path: str
    started: float
    start_time: float | None
    timings: OperationTimings | None
    route: str | None = None
    task: asyncio.Task[Any] | None = None
    long_lived: bool = False
    """A WebSocket or server-sent-events connection: never dropped as stale."""

    def age_seconds(self, now: float | None = None) -> float:
        return (perf_counter() if now is None else now) - self.started

    def current_operation(self) -> str | None:
        """The ``timed_operation`` it is inside now (the latest started, if several)."""
        return None if self.timings is None else self.timings.current_operation()

    def to_dict(self, now: float | None = None, *, chain: bool = False) -> dict[str, JsonValue]:
        """Its fields as JSON data; with ``chain``, where its task waits (``await_chain``)."""
        fields: dict[str, JsonValue] = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "age_seconds": round(self.age_seconds(now), 6),
            "start_time": self.start_time,
            "current_operation": self.current_operation(),
            "long_lived": self.long_lived,
        }
        if chain:
            task = self.task
            fields["await_chain"] = (
                None if task is None or task.done() else json_safe(await_chain(task))
            )
        return fields


_STARTED = InFlightEntry._fields.index("started")
_PATH = InFlightEntry._fields.index("path")
_LONG_LIVED = InFlightEntry._fields.index("long_lived")


def route_of(request: web.Request) -> str:
    """The request's route: its resource's pattern (``/users/{id}``), the same for every
    request it serves; ``-`` for a request no resource matched (a 404)."""
    resource = request.match_info.route.resource
    return "-" if resource is None else resource.canonical


def from_loopback(request: web.Request) -> bool:
    """The default ``allow``: the peer is on this machine (127.0.0.0/8, ::1, or
    ``::ffff:127.0.0.1`` on a dual-stack socket, on every Python).

    Behind a reverse proxy on the same machine every request comes from loopback: pass an
    ``allow`` of your own there (``header_token``, the proxy's client address).
    """
    address = peer_address(request.remote)  # None: a Unix socket's peer, or no address
    return address is not None and address.is_loopback


def header_token(header: str, token: str) -> Callable[[web.Request], bool]:
    """An ``allow`` letting in requests whose ``header`` holds ``token`` (compared in constant
    time). A token that is not a non-empty string is refused here: the guard
    ``lambda r: r.headers.get(header) == os.environ.get("OPS_TOKEN")`` lets in everyone who
    sends no header while the variable is unset (``None == None``)."""
    check("header_token()", "header", header, HEADER_NAME)
    check("header_token()", "token", token, _SECRET)
    expected = token.encode("utf-8", "surrogateescape")

    def allow(request: web.Request) -> bool:
        sent = request.headers.get(header)
        return sent is not None and hmac.compare_digest(
            sent.encode("utf-8", "surrogateescape"), expected
        )

    return allow


_SECRET: Rule = (
    lambda value: isinstance(value, str) and value != "",
    "a non-empty string (None means its environment variable is unset)",
)


class InFlightRegistry:
    """The requests and jobs running now; a ``RequestObserver``.

    ``max_age_seconds``: entries older than this are dropped (each logged once, WARNING
    ``inflight_stale`` on ``logger``) when the registry is read, and at most every quarter of
    that age when a request starts. ``allow``: which requests ``handler`` answers (others get
    403); by default only those from a loopback address. ``name_tasks``: rename each
    request's task ``req:<request ID>``, so that ``python -m asyncio ps`` (3.14) shows which
    request a task serves (one ``set_name`` per request).
    """

    def __init__(
        self,
        *,
        max_age_seconds: float = 300.0,
        logger: logging.Logger | str | Any = REGISTRY_LOGGER,
        allow: Callable[[web.Request], bool] = from_loopback,
        name_tasks: bool = False,
    ) -> None:
        if not (isinstance(max_age_seconds, int | float) and 0 < max_age_seconds < math.inf):
            raise ValueError(
                f"max_age_seconds must be a positive number of seconds, not {max_age_seconds!r}"
            )
        if not callable(allow):
            raise TypeError(f"allow must be callable (request -> bool), not {allow!r}")
        self.max_age_seconds = float(max_age_seconds)
        self.allow = allow
        self.name_tasks = name_tasks
        self._log = event_sink(logger)
        # Plain tuples in InFlightEntry's field order: building the named tuple waits for a read.
        self._entries: dict[int, tuple[Any, ...]] = {}
        self._sweep_every = self.max_age_seconds / 4
        self._next_sweep = perf_counter() + self._sweep_every

    def add(
        self,
        mapping: Context,
        *,
        method: str | None,
        path: str,
        route: str | None = None,
        long_lived: bool = False,
    ) -> None:
        """Register the unit of work whose context is ``mapping`` (until ``remove(mapping)``),
        run by the current task; a ``long_lived`` one (a WebSocket, an event stream) is never
        dropped as stale."""
        get = mapping.get
        timings = get(OPERATIONS)
        started = get(START_MONOTONIC)
        if type(started) is not float:
            started = perf_counter()
        request_id = get(REQUEST_ID)
        self._entries[id(mapping)] = (
            request_id if type(request_id) is str else str(request_id),
            method,
            path,
            started,  # a request's start is microseconds ago: the clock need not be read again
            get(START_TIME),
            timings if type(timings) is OperationTimings else None,
            route,
            running_task(),
            long_lived,
        )
        if started >= self._next_sweep:
            self.drop_stale(perf_counter())

    def remove(self, mapping: Context) -> None:
        """Forget ``mapping``'s entry; nothing happens if it is not (or no longer) there."""
        self._entries.pop(id(mapping), None)

    def path_of(self, mapping: Context) -> str | None:
        """The path ``mapping``'s unit of work was registered with, if it is registered."""
        values = self._entries.get(id(mapping))
        return None if values is None else str(values[_PATH])

    def request_started(self, request: web.Request, mapping: Context) -> None:
        headers = request.headers
        long_lived = headers.get(
            hdrs.UPGRADE, ""
        ).lower() == "websocket" or "text/event-stream" in headers.get(hdrs.ACCEPT, "")
        self.add(
            mapping,
            method=request.method,
            path=request.path,
            route=route_of(request),
            long_lived=long_lived,
        )
        if self.name_tasks:
            task = running_task()
            if task is not None:
                task.set_name(f"req:{mapping.get(REQUEST_ID)}")

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        self.remove(mapping)

    def count(self) -> int:
        """How many requests and jobs are running (stale ones dropped first)."""
        self.drop_stale()
        return len(self._entries)

    def entries(self) -> list[InFlightEntry]:
        """The running requests and jobs, oldest first (stale ones dropped first)."""
        self.drop_stale()
        entries = [InFlightEntry(*values) for values in self._entries.copy().values()]
        return sorted(entries, key=lambda entry: entry.started)

    def drop_stale(self, now: float | None = None) -> int:
        """Drop the entries older than ``max_age_seconds``, logging each; how many there were."""
        now = perf_counter() if now is None else now
        oldest_allowed = now - self.max_age_seconds
        self._next_sweep = now + self._sweep_every
        stale = [
            key
            for key, v in self._entries.copy().items()
            if v[_STARTED] < oldest_allowed and not v[_LONG_LIVED]
        ]
        dropped = [values for key in stale if (values := self._entries.pop(key, None))]
        for values in dropped:
            fields = InFlightEntry(*values).to_dict(now, chain=True)
            fields["max_age_seconds"] = self.max_age_seconds
            self._log(logging.WARNING, "inflight_stale", fields)
        return len(dropped)

    def to_dict(self, *, chains: bool = False) -> dict[str, Any]:
        """The running requests and jobs; with ``chains``, where each one's task waits."""
        now = perf_counter()
        requests = [entry.to_dict(now, chain=chains) for entry in self.entries()]
        return {
            "count": len(requests),
            "max_age_seconds": self.max_age_seconds,
            "requests": requests,
        }

    async def handler(self, request: web.Request) -> web.Response:
        """An aiohttp handler that answers with ``to_dict()`` as JSON, to requests ``allow``
        lets through (403 otherwise); ``?chains=1`` adds each one's await chain. It shows
        every in-flight path and request ID: mount it only on an internal route, for example
        ``app.router.add_get("/_internal/inflight", registry.handler)``."""
        if not self.allow(request):
            raise web.HTTPForbidden(text="403: the in-flight registry is not served to this peer")
        body = json.dumps(json_safe(self.to_dict(chains=request.query.get("chains") == "1")))
        return web.Response(text=body, content_type="application/json")
