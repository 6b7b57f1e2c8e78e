"""Tracebacks for text logs in which no exception message can forge a log line.

An exception message is often built from request input (``ValueError(f"bad id {raw}")``),
and a plain ``logging.Formatter`` prints it raw, so a client can end the traceback and start a
line of its own. ``format_exception`` renders a traceback as ``traceback`` does, but with every
line break and control character in what the exception supplies escaped (``\\n``,
``\\u2028``): its message, its notes, a ``SyntaxError``'s text, message and file name.
``RequestContextFilter`` and ``install_log_record_factory`` put that text on each record that
has a traceback (``record.exc_text``, which ``logging.Formatter`` prints as it is). Inside an
exception group's traceback messages stay as they are: ``traceback`` already starts every
line there with a ``|`` margin, so none can pass for a log line.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from types import TracebackType

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
"""A ``LogRecord``'s ``exc_info`` (all None for ``exc_info=True`` outside an ``except``)."""

# Everything str.splitlines() breaks on, every other C0/C1 control character but the tab.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_line_breaks(text: str) -> str:
    """``text`` with line breaks and control characters written as Python escapes."""
    return _UNSAFE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def format_exception(exc_info: ExcInfo) -> str:
    """The traceback ``logging.Formatter.formatException`` prints, with every part that comes
    from an exception escaped: its message, its notes (``add_note``), and a ``SyntaxError``'s
    text, message and file name."""
    if exc_info[1] is None:
        return "".join(traceback.format_exception(*exc_info)).removesuffix("\n")
    top = traceback.TracebackException(*exc_info, compact=True)
    parts = list(_chain(top, exc_info[1]))
    for part, _ in parts:
        _escape_parts(part)
    text = "".join(top.format())
    for part, error in parts:
        try:
            message = str(error)
        except Exception:  # noqa: BLE001 - traceback prints its own placeholder for it
            continue
        if not _UNSAFE.search(message):
            continue
        block = "".join(part.format_exception_only())
        start = block.find(message)
        if start >= 0:
            safe = block[:start] + escape_line_breaks(message) + block[start + len(message) :]
            text = text.replace(block, safe)
    return text.removesuffix("\n")


def _escape_parts(part: traceback.TracebackException) -> None:
    """Escape, on the rendering only, the notes and a ``SyntaxError``'s own fields."""
    notes = part.__notes__
    if isinstance(notes, list | tuple):
        part.__notes__ = [_escaped_note(note) for note in notes]
    for name in ("text", "msg", "filename"):
        value = getattr(part, name, None)
        if isinstance(value, str) and _UNSAFE.search(value.rstrip("\n")):
            setattr(part, name, escape_line_breaks(value.rstrip("\n")))


def _escaped_note(note: object) -> str:
    try:
        return escape_line_breaks(str(note))
    except Exception:  # noqa: BLE001 - traceback's own placeholder for it
        return "<note str() failed>"


def _chain(
    top: traceback.TracebackException, error: BaseException
) -> Iterator[tuple[traceback.TracebackException, BaseException]]:
    """Each exception the traceback shows (causes and contexts), once, with its rendering."""
    seen: list[BaseException] = []
    part: traceback.TracebackException | None = top
    current: BaseException | None = error
    while part is not None and current is not None and not any(current is k for k in seen):
        seen.append(current)
        yield part, current
        if current.__cause__ is not None or current.__suppress_context__:
            part, current = part.__cause__, current.__cause__
        else:
            part, current = part.__context__, current.__context__
