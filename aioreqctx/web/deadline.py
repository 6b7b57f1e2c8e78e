"""``DeadlineObserver``: each request's deadline, from its header and the app's budget.

The wire format and ``remaining_time`` are in the core, so that jobs and the client use them
without loading the server.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from aiohttp import web

from .. import keys
from .._core.deadline import DEADLINE_HEADER, parse_deadline
from .._core.ids import escaped
from .._core.options import OPTIONAL_HEADER_NAME, check
from .._core.store import Context
from .middleware import UNTRUSTED_PEER

logger = logging.getLogger("aioreqctx")


@dataclass(frozen=True, kw_only=True, eq=False)
class DeadlineObserver:
    """A request observer that gives each request its deadline: ``setup(app, observers=(...,))``.

    ``header``: the incoming header to read (None: ignore incoming deadlines). Like the ID,
    it is ignored from peers outside the middleware's ``trusted_networks``.
    ``budget``: seconds each request may take from its start (None: no per-app budget).
    ``max_budget``: the furthest an incoming deadline may lie (seconds from now).
    """

    header: str | None = DEADLINE_HEADER
    budget: float | None = None
    max_budget: float = 300.0

    def __post_init__(self) -> None:
        check("DeadlineObserver", "header", self.header, OPTIONAL_HEADER_NAME)
        for option in ("budget", "max_budget"):
            value = getattr(self, option)
            if option == "budget" and value is None:
                continue
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{option} must be a positive number of seconds, not {value!r}")

    def request_started(self, request: web.Request, mapping: Context) -> None:
        now = time.monotonic()
        deadline = None if self.budget is None else now + self.budget
        trusted = UNTRUSTED_PEER not in request
        raw = request.headers.get(self.header) if self.header is not None and trusted else None
        if raw is not None:
            left = parse_deadline(raw)
            if left is None:
                logger.warning(
                    "invalid %s header from %s ignored (expected an RFC 3339 UTC time "
                    'such as 2026-05-01T12:00:03.250Z): "%s"',
                    self.header,
                    request.remote,
                    escaped(raw),
                )
            else:
                incoming = now + min(left, self.max_budget)
                deadline = incoming if deadline is None else min(deadline, incoming)
        if deadline is not None:
            mapping[keys.DEADLINE] = deadline

    def request_finished(
        self,
        request: web.Request,
        mapping: Context,
        response: web.StreamResponse | None,
        error: BaseException | None,
    ) -> None:
        """Nothing to do: the deadline ends with the request's mapping."""
