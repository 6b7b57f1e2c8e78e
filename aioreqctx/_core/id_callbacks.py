"""A user's ID generator or validator, with its output re-checked before anything uses it.

The middleware and ``ClientPropagation`` both take such callbacks, and an ID ends up in
headers and log lines, so a callback is never trusted: an ID it makes or accepts must pass the
floor (``is_safe_request_id``), a generator that raises or returns something else is replaced
by ``new_request_id`` for that call, and a validator that raises or answers something other
than a truth value counts as "invalid". Each misbehaving callback is reported once, the first
time, on the ``aioreqctx`` logger (with its traceback if it raised): never once per request.
The stock callbacks are returned unwrapped, so the default configuration pays nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from .ids import escaped, is_safe_request_id, is_valid_request_id, new_request_id

logger = logging.getLogger("aioreqctx")


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
