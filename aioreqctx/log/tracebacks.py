"""Tracebacks for text logs in which no exception message can forge a log line.

An exception message is often built from request input (``ValueError(f"bad id {raw}")``),
and a plain ``logging.Formatter`` prints it raw, so a client can end the traceback and start a
line of its own. ``format_exception`` renders a traceback as ``traceback`` does, but with every
line break and control character inside an exception's message escaped (``\\n``, ``\\u2028``).
``RequestContextFilter`` and ``install_log_record_factory`` put that text on each record that
has a traceback (``record.exc_text``, which ``logging.Formatter`` prints as it is). Inside an
exception group's traceback messages stay as they are: ``traceback`` already starts every
line there with a ``|`` margin, so none can pass for a log line.
"""

from __future__ import annotations

import re
import traceback
from types import TracebackType

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
"""A ``LogRecord``'s ``exc_info`` (all None for ``exc_info=True`` outside an ``except``)."""

# Everything str.splitlines() breaks on, every other C0/C1 control character but the tab.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_line_breaks(text: str) -> str:
    """``text`` with line breaks and control characters written as Python escapes."""
    return _UNSAFE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def format_exception(exc_info: ExcInfo) -> str:
    """The traceback ``logging.Formatter.formatException`` prints, messages escaped."""
    text = "".join(traceback.format_exception(*exc_info))
    if exc_info[1] is None:
        return text.removesuffix("\n")
    for error in _chain(exc_info[1]):
        try:
            message = str(error)
        except Exception:  # noqa: BLE001 - traceback prints its own placeholder for it
            continue
        if not _UNSAFE.search(message):
            continue
        block = "".join(traceback.format_exception_only(type(error), error))
        start = block.find(message)
        if start >= 0:
            safe = block[:start] + escape_line_breaks(message) + block[start + len(message) :]
            text = text.replace(block, safe)
    return text.removesuffix("\n")


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions its traceback shows (causes and contexts), each once."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and not any(current is known for known in seen):
        seen.append(current)
        cause = current.__cause__
        current = (
            cause if cause is not None or current.__suppress_context__ else current.__context__
        )
    return seen
