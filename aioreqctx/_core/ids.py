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

from .jsonsafe import safe_text

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


match_valid_request_id = _VALID_ID.fullmatch
"""``is_valid_request_id`` without the call around it (a match or None): for the middleware,
which checks every incoming ID."""


def is_safe_request_id(value: str) -> bool:
    """The floor under every ID: 1-1024 visible ASCII characters (``!`` to ``~``), not ``-``.

    Such a value cannot split a header or a log line, whatever a custom validator accepted.
    """
    return _SAFE_ID.fullmatch(value) is not None


def sendable_id(value: object) -> str | None:
    """A request ID read back from the context, if it may go into a header or a job carrier.

    The context is the program's to write (aiotask-context's example middleware puts the raw
    incoming header there), so what it holds passes the floor where it is written out: a value
    that fails it is not sent, as if there were no ID.
    """
    return value if type(value) is str and _SAFE_ID.fullmatch(value) is not None else None


def logged_id(value: object) -> str:
    """A request ID read back from the context, as one log line may show it: escaped unless it
    is printable ASCII, so a value the program stored cannot start a forged line."""
    if type(value) is str and value.isascii() and value.isprintable():
        return value
    return escaped(value if isinstance(value, str) else safe_text(value), limit=SAFE_ID_LIMIT)


def trace_id_of(traceparent: str) -> str | None:
    """The trace-id of a W3C ``traceparent`` header (version 00), or None if malformed."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match.group(1) == _ZERO_TRACE_ID:
        return None
    return match.group(1)


_BATCH_SIZE = 1024
_made_ahead: list[str] = []
"""IDs made ahead, taken from the end. ``list.pop`` and ``list.extend`` are atomic (with the GIL
and in free-threaded builds alike), so threads share it and no two calls get the same ID."""
# A batch is the hex of 16 random bytes per ID in groups of four digits,
# "aaaa-bbbb-cccc-dddd-eeee-ffff-gggg-hhhh-": 40 characters where the UUID has 36
# ("aaaabbbb-cccc-dddd-eeee-ffffgggghhhh"). Three of the dashes go, the last becomes a ",".
_STRIDE = 40
_JOINED_DASHES = (4, 29, 34)
_VERSION_DIGIT = 15
_VARIANT_DIGIT = 20
# RFC 9562 variant bits: the first hex digit of the fourth group is one of 8, 9, a, b.
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def new_request_id() -> str:
    """A random UUID4 string like ``str(uuid.uuid4())``, cheaper than ``os.urandom(16).hex()``.

    ``uuid4`` pays one ``os.urandom`` system call and a formatting per ID; here 1024 IDs are
    made at once (one ``os.urandom``, a few whole-batch byte operations, no loop per ID) and
    each call takes one. A forked child forgets its parent's batch (``os.register_at_fork``).
    """
    try:
        return _made_ahead.pop()
    except IndexError:  # once per batch (or when another thread took the last one)
        _made_ahead.extend(_make_batch())
        return new_request_id()


def _make_batch() -> list[str]:
    count = _BATCH_SIZE
    text = bytearray(os.urandom(16 * count).hex("-", 2).encode("ascii") + b"-")
    text[_VERSION_DIGIT::_STRIDE] = b"4" * count
    text[_VARIANT_DIGIT::_STRIDE] = text[_VARIANT_DIGIT::_STRIDE].translate(_VARIANT)
    for position in _JOINED_DASHES:
        text[position::_STRIDE] = b"\0" * count
    text[_STRIDE - 1 :: _STRIDE] = b"," * count
    del text[-1]
    return text.translate(None, b"\0").decode("ascii").split(",")


os.register_at_fork(after_in_child=_made_ahead.clear)


def escaped(raw: str, limit: int = ESCAPED_LIMIT) -> str:
    """``raw`` made safe for one log line or context value: escaped, at most ``limit`` chars."""
    if (  # the usual value, which escaping leaves as it is: no encoding round trip
        type(raw) is str
        and len(raw) <= limit
        and raw.isascii()
        and raw.isprintable()
        and "\\" not in raw
        and '"' not in raw
    ):
        return raw
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


def peer_address(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer address (``request.remote``) as an IP address, None for none (a Unix socket).

    An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``: an IPv4 peer of a dual-stack socket) is
    the IPv4 address it stands for, so every rule on peers gives one answer on every Python
    (3.13's ``is_loopback`` unmaps it, 3.11's and 3.12's do not).
    """
    if remote is None:
        return None
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(remote: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether a peer address (``request.remote``) is inside one of ``networks``."""
    address = peer_address(remote)
    return address is not None and any(address in network for network in networks)
