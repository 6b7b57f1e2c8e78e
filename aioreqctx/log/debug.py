"""Debug on demand: one request logged at DEBUG, when it asks and is trusted to.

A request carrying the configured header (``X-Debug-Log`` by default) gets ``DebugLines``
instead of a buffer: its lines below the loggers' level are built and written at once, as if
the loggers were at DEBUG for it alone. Only a trusted request gets this: one from
``trusted_networks`` or whose header value the ``verifier`` accepts (an HMAC token, say); from
anyone else the header is ignored and counted, never an error. The accepted value travels: it
is kept in the request's context (``DEBUG_LOG``), ``ClientPropagation`` sends it downstream
and jobs carry it, where each side applies its own rule again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .._core.ids import Network, is_trusted, is_valid_request_id, parse_networks
from .buffer import DebugLines

DEBUG_HEADER = "X-Debug-Log"
"""The header that asks for debug on demand, unless told otherwise."""

DEBUG_LOG = "aioreqctx.debug_log"
"""Context key: the accepted debug-on-demand value of the running request or job."""

logger = logging.getLogger("aioreqctx")


@dataclass(frozen=True, kw_only=True, eq=False)
class DebugOnDemand:
    """Which requests may ask for DEBUG logging, and at what level they get it.

    ``header``: the request header that asks. ``trusted_networks``: CIDRs whose peers are
    believed. ``verifier``: ``verifier(value) -> bool``, for any peer (and for jobs). At least
    one of the two is required. ``level``: the lowest level written for such a request.
    ``ignored`` counts the requests that asked and were not trusted. On the job side, a
    carried value is believed when the verifier accepts it, or without a verifier (the queue
    is the application's own).
    """

    header: str = DEBUG_HEADER
    trusted_networks: tuple[str, ...] = ()
    verifier: Callable[[str], bool] | None = None
    level: int = logging.DEBUG
    _networks: tuple[Network, ...] = field(init=False, repr=False)
    _ignored: list[int] = field(init=False, repr=False, default_factory=lambda: [0])

    def __post_init__(self) -> None:
        if not isinstance(self.header, str) or not is_valid_request_id(self.header):
            raise ValueError(f"DebugOnDemand: header {self.header!r} is not a valid header name")
        networks: object = self.trusted_networks
        if isinstance(networks, str):
            raise ValueError("DebugOnDemand: trusted_networks must be a tuple of CIDR strings")
        object.__setattr__(self, "_networks", parse_networks(self.trusted_networks))
        if self.verifier is not None and not callable(self.verifier):
            raise TypeError(f"DebugOnDemand: verifier must be callable, not {self.verifier!r}")
        if not self._networks and self.verifier is None:
            raise ValueError(
                "DebugOnDemand needs trusted_networks or a verifier: without either, anyone "
                "could turn DEBUG logging on"
            )
        if type(self.level) is not int or self.level <= 0:
            raise ValueError(f"DebugOnDemand: level must be a positive int, not {self.level!r}")

    @property
    def ignored(self) -> int:
        """Requests that asked for DEBUG and were not trusted."""
        return self._ignored[0]

    def accepts(self, value: str, peer: str | None) -> bool:
        """Whether a request from ``peer`` asking with ``value`` is logged at DEBUG."""
        if is_valid_request_id(value) and (
            (self._networks and is_trusted(peer, self._networks)) or self._verified(value)
        ):
            return True
        self._ignored[0] += 1
        return False

    def accepts_carried(self, value: object) -> bool:
        """Whether a job that carried ``value`` is logged at DEBUG."""
        if not isinstance(value, str) or not is_valid_request_id(value):
            return False
        return self.verifier is None or self._verified(value)

    def _verified(self, value: str) -> bool:
        if self.verifier is None:
            return False
        try:
            return self.verifier(value) is True
        except Exception:
            logger.exception(
                "DebugOnDemand verifier %r failed; the header is ignored", self.verifier
            )
            return False

    def lines(self) -> DebugLines:
        """What a trusted request logs through: every line from ``level`` up, at once."""
        return DebugLines(self.level)
