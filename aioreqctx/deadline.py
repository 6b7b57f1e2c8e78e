"""Request deadlines, talisker style: how long the request may still take, across services.

A deadline comes from the incoming ``X-Request-Deadline`` header, from a per-app budget, or
both (the earlier one wins). On the wire it is an absolute RFC 3339 UTC timestamp, such as
``2026-05-01T12:00:03.250Z``, as talisker sends it: every hop compares it with its own clock,
so the time spent on the network is counted, and clocks must be roughly in sync (NTP). The
header is untrusted input: it follows the ID's trust rule (ignored from peers outside
``trusted_networks``), a malformed value is ignored (logged once, escaped), and one further
away than ``max_budget`` is cut down to it. In the context the deadline is a
``time.monotonic()`` instant (``keys.DEADLINE``), so later wall-clock jumps do not move it.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from aiohttp import ClientTimeout, web

from . import keys
from .ids import escaped, is_valid_request_id
from .middleware import UNTRUSTED_PEER
from .store import Context, current_mapping

DEADLINE_HEADER = "X-Request-Deadline"
"""The header that carries a request's deadline, an RFC 3339 time: read by ``DeadlineObserver``,
sent by ``ClientPropagation`` on outgoing calls."""

# RFC 3339 date-time: seconds mandatory, 1-6 fraction digits, "Z" or a numeric offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_DEFAULT_CLIENT_TIMEOUT = ClientTimeout(total=5 * 60, sock_connect=30)  # aiohttp's own default

_TIMER_SLACK = 0.001

logger = logging.getLogger("aioreqctx")


def parse_deadline(raw: str) -> float | None:
    """Seconds from now until RFC 3339 time ``raw`` (negative if past); None if malformed."""
    text = raw.strip()
    if _RFC3339.fullmatch(text) is None:
        return None
    try:
        moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:  # well-formed but impossible, such as month 13
        return None
    return moment.timestamp() - time.time()


def format_deadline(remaining: float) -> str:
    """The header value for a deadline ``remaining`` seconds from now (millisecond precision)."""
    moment = datetime.fromtimestamp(time.time() + remaining, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def remaining_time() -> float | None:
    """Seconds left before the current request's deadline (0.0 once passed); None if it has none."""
    mapping = current_mapping.get(None)
    deadline: float | None = None if mapping is None else mapping.get(keys.DEADLINE)
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def deadline_expired(mapping: Context) -> bool:
    """Whether the request behind ``mapping`` had a deadline that has (all but) passed.

    A millisecond of slack: uvloop's timers have millisecond resolution, so a call cut off
    at the deadline may end a little before ``time.monotonic()`` reaches it.
    """
    deadline = mapping.get(keys.DEADLINE)
    return deadline is not None and deadline - time.monotonic() < _TIMER_SLACK


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
        if self.header is not None and (
            not isinstance(self.header, str)
            or not is_valid_request_id(self.header)
            or ":" in self.header
        ):
            raise ValueError(f"header: {self.header!r} is not a valid HTTP header name")
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
