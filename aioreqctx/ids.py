"""The request-ID policy: where an incoming ID may come from, what is valid, how one is made.

An incoming ID ends up in log lines and response headers, so it is treated as untrusted input:
only 1 to 200 ASCII letters, digits and ``-_.:+/=@`` pass (UUIDs in any case, nginx
``$request_id``, ULIDs, base64-ish IDs), and a rejected value is only ever shown escaped and
truncated. ``-`` alone is reserved: it is what log lines show for "no request". Whatever a
custom validator or generator lets through must still pass ``is_safe_request_id``, the floor
that keeps an ID harmless in a header and on one log line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable

NO_REQUEST_ID = "-"
"""What log lines show for "no request"; never accepted as a request's ID."""

_VALID_ID = re.compile(r"(?!-\Z)[A-Za-z0-9\-_.:+/=@]{1,200}")
# The floor: visible ASCII only (no space, control character, line separator or non-ASCII).
_SAFE_ID = re.compile(r"(?!-\Z)[\x21-\x7e]{1,1024}")
SAFE_ID_LIMIT = 1024
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
ESCAPED_LIMIT = 64

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_valid_request_id(value: str) -> bool:
    """The default validator: 1-200 characters of ``A-Z a-z 0-9 - _ . : + / = @``, not ``-``."""
    return _VALID_ID.fullmatch(value) is not None


def is_safe_request_id(value: str) -> bool:
    """The floor under every ID: 1-1024 visible ASCII characters (``!`` to ``~``), not ``-``.

    Such a value cannot split a header or a log line, whatever a custom validator accepted.
    """
    return _SAFE_ID.fullmatch(value) is not None


def trace_id_of(traceparent: str) -> str | None:
    """The trace-id of a W3C ``traceparent`` header (version 00), or None if malformed."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match.group(1) == _ZERO_TRACE_ID:
        return None
    return match.group(1)


# New IDs are made 256 at a time, from one os.urandom call, by C-level slicing of a template
# (one ID: os.urandom(16) plus formatting, the syscall and the formatting each cost more than a
# list.pop). The ready IDs are per process: a forked child drops its parent's, or both would
# hand out the same IDs.
_BATCH = 256
_TEMPLATE = b"xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx\n"
_WIDTH = len(_TEMPLATE)
# RFC 9562: the version digit is 4 (in the template); the variant digit is one of 8, 9, a, b,
# from a random hex digit by this table.
_VARIANT_AT = _TEMPLATE.index(b"V")
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab" * 4)
# (position in the template, position in the 32 random hex digits) of every random digit; the
# random digit under the fixed version digit 4 (number 12) is left out.
_RANDOM_DIGITS = tuple(
    zip(
        (i for i, c in enumerate(_TEMPLATE) if c == ord("x")),
        (j for j in range(32) if j not in (12, 16)),
        strict=True,
    )
)
_ready: list[str] = []
os.register_at_fork(after_in_child=_ready.clear)


def _make_batch() -> list[str]:
    digits = os.urandom(16 * _BATCH).hex().encode("ascii")
    ids = bytearray(_TEMPLATE * _BATCH)
    for at, source in _RANDOM_DIGITS:
        ids[at::_WIDTH] = digits[source::32]
    ids[_VARIANT_AT::_WIDTH] = digits[16::32].translate(_VARIANT)
    return ids.decode("ascii").split()


def new_request_id() -> str:
    """A random UUID4 string, like ``str(uuid.uuid4())`` at a fraction of the cost."""
    try:
        return _ready.pop()
    except IndexError:
        _ready.extend(_make_batch())
        return _ready.pop()


def escaped(raw: str, limit: int = ESCAPED_LIMIT) -> str:
    """``raw`` made safe for one log line or context value: escaped, at most ``limit`` chars."""
    shown = raw[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')
    if len(raw) > limit:
        shown += f"...(+{len(raw) - limit} chars)"
    return shown


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings as networks; raises ValueError naming the bad entry."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as error:
            raise ValueError(
                f"trusted_networks: {cidr!r} is not a network; use CIDR such as '10.0.0.0/8'"
            ) from error
    return tuple(networks)


def is_trusted(remote: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether a peer address (``request.remote``) is inside one of ``networks``."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in network for network in networks)
