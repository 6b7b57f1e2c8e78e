"""The request's fields on stdlib ``LogRecord`` attributes, so ``%(request_id)s`` always formats.

Two ways in. ``RequestContextFilter`` goes on the *handlers* (a filter on a logger never sees
records that propagate up from its child loggers, and a format string naming a missing field
loses the record: platform notes, pitfall 18). ``install_log_record_factory()`` instead stamps
every record of every library when it is created, which also suits handlers that format
records later in another thread (``QueueListener``). Both also render a record's traceback
with its exception messages escaped (``aioreqctx.log.format_exception``), so request input
in a message cannot forge a line in a text log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .fields import DEFAULT_REQUEST_ID, field_adder
from .tracebacks import format_exception


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
