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

import re
import time
from datetime import UTC, datetime

from .. import keys
from .store import Context, current_mapping

DEADLINE_HEADER = "X-Request-Deadline"
"""The header that carries a request's deadline, an RFC 3339 time: read by ``DeadlineObserver``,
sent by ``ClientPropagation`` on outgoing calls."""

# RFC 3339 date-time: seconds mandatory, 1-6 fraction digits, "Z" or a numeric offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})"
)

_TIMER_SLACK = 0.001
_FURTHEST = 365 * 86400.0


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
    """The header value for a deadline ``remaining`` seconds from now (millisecond precision).

    A deadline further than a year away (or as long ago) is written as a year: whatever ended
    up in the context, a date past year 9999 never makes the caller raise.
    """
    remaining = min(max(remaining, -_FURTHEST), _FURTHEST)
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
