"""The request-ID policy: where an incoming ID may come from, what is valid, how one is made.

An incoming ID ends up in log lines and response headers, so it is treated as untrusted input:
only 1 to 200 ASCII letters, digits and ``-_.:+/=@`` pass (UUIDs in any case, nginx
``$request_id``, ULIDs, base64-ish IDs), and a rejected value is only ever shown escaped and
truncated. ``-`` alone is reserved: it is what log lines show for "no request". Whatever a
custom validator or generator lets through must still pass ``is_safe_request_id``, the floor
that keeps an ID harmless in a header and on one log line.

A user's generator or validator (the middleware and ``ClientPropagation`` take them) is never
trusted either: an ID it makes or accepts must pass the floor, a generator that raises or
returns something else is replaced by ``new_request_id`` for that call, and a validator that
raises or answers something other than a truth value counts as "invalid". Each misbehaving
callback is reported once, the first time, on the ``aioreqctx`` logger (with its traceback if it
raised): never once per request. The stock callbacks are returned unwrapped, so the default
configuration pays nothing.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

from .emit import logger, safe_text

NO_REQUEST_ID = "-"
"""What log lines show for "no request"; never accepted as a request's ID."""

_VALID_ID = re.compile(r"(?!-\Z)[A-Za-z0-9\-_.:+/=@]{1,200}")
# The floor: visible ASCII only (no space, control character, line separator or non-ASCII).
_SAFE_ID = re.compile(r"(?!-\Z)[\x21-\x7e]{1,1024}")
SAFE_ID_LIMIT = 1024
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
ESCAPED_LIMIT = 64


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


class _ReportOnce:
    """Logs the first misbehaviour of one callback; later ones stay silent."""

    __slots__ = ("_lock", "_reported", "callback")

    def __init__(self, callback: Callable[..., object]) -> None:
        self.callback = callback
        self._reported = False
        self._lock = threading.Lock()

    def __call__(self, problem: str, *, traceback: bool = False) -> None:
        with self._lock:
            if self._reported:
                return
            self._reported = True
        logger.error(
            "%r %s (reported once; later occurrences are handled the same way without a log line)",
            self.callback,
            problem,
            exc_info=traceback,
        )


def checked_generator(generator: Callable[[], str]) -> Callable[[], str]:
    """``generator`` whose every output is a safe ID: a UUID4 replaces anything else."""
    if generator is new_request_id:
        return new_request_id
    report = _ReportOnce(generator)

    def generate() -> str:
        try:
            made = generator()
        except Exception:  # noqa: BLE001 - any failure of a user's callback is handled alike
            report("raised while making a request ID; a UUID4 is used instead", traceback=True)
            return new_request_id()
        if isinstance(made, str) and is_safe_request_id(made):
            return made
        shown = escaped(made) if isinstance(made, str) else escaped(repr(made))
        report(f'returned "{shown}", not a safe request ID; a UUID4 is used instead')
        return new_request_id()

    return generate


def checked_validator(validator: Callable[[str], bool]) -> Callable[[str], bool]:
    """``validator`` that only ever accepts safe IDs, and treats its own failures as "no"."""
    if validator is is_valid_request_id:
        return validator
    report = _ReportOnce(validator)

    def accepts(candidate: str) -> bool:
        if not is_safe_request_id(candidate):
            return False
        try:
            verdict: object = validator(candidate)
        except Exception:  # noqa: BLE001 - any failure of a user's callback is handled alike
            report(
                "raised while checking a request ID; the ID is treated as invalid", traceback=True
            )
            return False
        if verdict is None or isinstance(verdict, bool | re.Match):
            return bool(verdict)
        report(
            f'returned "{escaped(repr(verdict))}", not True or False; the ID is treated as invalid'
        )
        return False

    return accepts
