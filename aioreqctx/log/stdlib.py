"""The request's fields on stdlib ``LogRecord`` attributes, so ``%(request_id)s`` always formats,
and tracebacks in which no exception message can forge a log line.

Two ways in. ``RequestContextFilter`` goes on the *handlers* (a filter on a logger never sees
records that propagate up from its child loggers, and a format string naming a missing field
loses the record: logging reports a formatting error instead of the line).
``install_log_record_factory()`` instead stamps every record of every library when it is
created, which also suits handlers that format records later in another thread
(``QueueListener``).

Both also render a record's traceback with ``format_exception`` (``record.exc_text``, which
``logging.Formatter`` prints as it is). An exception message is often built from request input
(``ValueError(f"bad id {raw}")``), and a plain ``logging.Formatter`` prints it raw, so a client
can end the traceback and start a line of its own. ``format_exception`` renders a traceback as
``traceback`` does, but with every line break and control character in what the exception
supplies escaped (``\\n``, ``\\u2028``): its message, its notes, a ``SyntaxError``'s text,
message and file name. Inside an exception group's traceback messages stay as they are:
``traceback`` already starts every line there with a ``|`` margin, so none can pass for a log
line.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from .fields import DEFAULT_REQUEST_ID, field_adder


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` (and the other request fields) to every record; never drops one.

    From ``dictConfig``: ``"filters": {"request": {"()": "aioreqctx.RequestContextFilter"}}``
    plus ``"filters": ["request"]`` on each handler. Attributes the record already has (its own,
    or ones passed with ``extra=``) are kept. A record's traceback is rendered with its
    exception messages escaped (``record.exc_text``, which formatters print as it is).
    """

    def __init__(
        self,
        name: str = "",
        context_keys: Mapping[str, str] | None = None,
        default: Any = DEFAULT_REQUEST_ID,
        extra_fields: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(name)
        self._add_fields = field_adder(
            context_keys, default, extra_fields, owner="RequestContextFilter"
        )

    def filter(self, record: logging.LogRecord) -> bool:
        self._add_fields(None, "", record.__dict__)
        if record.exc_info:  # re-rendered: a handler before this one may have cached it raw
            record.exc_text = format_exception(record.exc_info)
        return True


RecordFactory = Callable[..., logging.LogRecord]


def install_log_record_factory(
    context_keys: Mapping[str, str] | None = None,
    default: Any = DEFAULT_REQUEST_ID,
    extra_fields: Callable[[], Mapping[str, Any]] | None = None,
) -> Callable[[], None]:
    """Make every new ``LogRecord`` carry the request fields; returns the call that undoes it.

    The factory in place is kept and called first, so other libraries' factories go on working.
    Undoing restores it if nothing was installed on top since; otherwise ours only stops adding
    fields, so the later factory keeps its chain.
    """
    add_fields = field_adder(
        context_keys, default, extra_fields, owner="install_log_record_factory()"
    )
    previous = logging.getLogRecordFactory()
    active = True

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if active:
            add_fields(None, "", record.__dict__)
            if record.exc_info and not record.exc_text:
                record.exc_text = format_exception(record.exc_info)
        return record

    def uninstall() -> None:
        nonlocal active
        active = False
        if logging.getLogRecordFactory() is make_record:
            logging.setLogRecordFactory(previous)

    logging.setLogRecordFactory(make_record)
    return uninstall


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
