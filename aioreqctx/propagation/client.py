"""The request's ID (and deadline) on every outgoing aiohttp ``ClientSession`` request.

An aiohttp client middleware runs in the caller's task, so it reads the current request's
mapping with one ``ContextVar`` lookup, wherever the call is made: the handler, a task it
spawned (with any factory or none) or a thread that copied the context
(``aioreqctx.run_in_executor``) and runs its own loop. Unlike a ``TraceConfig`` it wraps the
sending of the request, so it can also hold the call to the request's deadline, and it costs
less (bench/RESULTS.md). The ``TraceConfig`` is there for sessions whose middlewares the
caller replaces per request (``session.get(url, middlewares=...)`` drops the session's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Literal

from aiohttp import ClientRequest, ClientResponse, ClientSession, ClientTimeout, TraceConfig
from aiohttp.client_middlewares import ClientHandlerType
from aiohttp.tracing import TraceRequestStartParams
from multidict import CIMultiDict, istr

from .. import keys
from .._core.deadline import DEADLINE_HEADER, format_deadline, remaining_time
from .._core.id_callbacks import checked_generator
from .._core.ids import new_request_id, sendable_id
from .._core.options import HEADER_NAME, OPTIONAL_HEADER_NAME, check
from .._core.store import current_mapping
from ..log.debug import DEBUG_HEADER, DEBUG_LOG

_DEFAULT_CLIENT_TIMEOUT = ClientTimeout(total=5 * 60, sock_connect=30)  # aiohttp's own default


class DeadlineExceeded(TimeoutError):  # noqa: N818 - it is a TimeoutError, named for what ran out
    """The request's deadline passed before an outgoing call could be sent."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientPropagation:
    """A client middleware: ``ClientSession(middlewares=(aioreqctx.ClientPropagation(),))``.

    ``header``: the outgoing header that carries the ID.
    ``outside_request``: ``"skip"`` (default) sends no ID when no request is current;
    ``"generate"`` sends a new one from ``generator`` (a call per outgoing request; its output
    is re-checked like the server side's, with a UUID4 instead of anything unsafe).
    ``deadline_header``: the header that carries the request's deadline (None: not sent). With
    a deadline the call must get its response headers in the time left (``TimeoutError``
    otherwise); pass ``timeout=aioreqctx.deadline_timeout()`` to bound reading the body too.
    ``debug_header``: the header that carries a trusted debug-on-demand request's value
    (``aioreqctx.log.DebugOnDemand``), for the downstream service to judge (None: not sent).
    A header the caller set, on the request or as a session default, is never replaced.
    """

    header: str = keys.REQUEST_ID
    outside_request: Literal["skip", "generate"] = "skip"
    generator: Callable[[], str] = new_request_id
    deadline_header: str | None = DEADLINE_HEADER
    debug_header: str | None = DEBUG_HEADER
    _header: istr = field(init=False, repr=False)
    _generate: Callable[[], str] = field(init=False, repr=False)
    _deadline_header: istr | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check("ClientPropagation", "header", self.header, HEADER_NAME)
        check("ClientPropagation", "deadline_header", self.deadline_header, OPTIONAL_HEADER_NAME)
        check("ClientPropagation", "debug_header", self.debug_header, OPTIONAL_HEADER_NAME)
        for option in ("outside_request", "generator"):
            check("ClientPropagation", option, getattr(self, option))
        object.__setattr__(self, "_header", istr(self.header))
        object.__setattr__(self, "_generate", checked_generator(self.generator))
        deadline = None if self.deadline_header is None else istr(self.deadline_header)
        object.__setattr__(self, "_deadline_header", deadline)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        deadline = self.label(request.headers)
        if deadline is None:
            return await handler(request)
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(
                f"aioreqctx: the request's deadline passed; {request.method} {request.url} "
                "was not sent"
            )
        async with asyncio.timeout(left):
            return await handler(request)

    def label(self, headers: CIMultiDict[str]) -> float | None:
        """Add the ID and deadline headers the caller did not set; return the deadline if any."""
        mapping = current_mapping.get(None)
        if mapping is None:
            request_id: str | None = None
            deadline: float | None = None
        else:
            request_id = sendable_id(mapping.get(keys.REQUEST_ID))
            deadline = mapping.get(keys.DEADLINE)
            debug = mapping.get(DEBUG_LOG)
            if debug is not None and self.debug_header is not None:
                headers.setdefault(self.debug_header, debug)
        if request_id is None and self.outside_request == "generate":
            request_id = self._generate()
        if request_id is not None and self._header not in headers:
            headers[self._header] = request_id
        if deadline is None or self._deadline_header is None:
            return None
        if self._deadline_header not in headers:
            headers[self._deadline_header] = format_deadline(deadline - time.monotonic())
        return deadline

    def trace_config(self) -> TraceConfig:
        """The same headers from a ``TraceConfig`` (which cannot time the call out)."""

        async def on_request_start(
            session: ClientSession, context: SimpleNamespace, params: TraceRequestStartParams
        ) -> None:
            self.label(params.headers)

        trace_config = TraceConfig()
        trace_config.on_request_start.append(on_request_start)
        return trace_config


def deadline_timeout(base: ClientTimeout = _DEFAULT_CLIENT_TIMEOUT) -> ClientTimeout:
    """``base`` with its ``total`` cut to the time left, for a whole call including its body.

    Pass it as ``session.get(url, timeout=deadline_timeout())``. Without a deadline it is
    ``base`` unchanged. Once the deadline has passed, ``total`` is one millisecond: aiohttp
    reads 0 as "no limit".
    """
    left = remaining_time()
    if left is None:
        return base
    total = max(left, 0.001) if base.total is None else max(min(left, base.total), 0.001)
    return ClientTimeout(
        total=total,
        connect=base.connect,
        sock_read=base.sock_read,
        sock_connect=base.sock_connect,
        ceil_threshold=base.ceil_threshold,
    )
