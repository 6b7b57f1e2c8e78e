"""Write one structured event to the logger the application already uses: stdlib or structlog.

Access lines, request events and lifecycle events are key/value records. A structlog logger
gets them as keyword arguments, so its processors and renderer decide the output. A stdlib
logger gets a one-line message (``event key=value ...``, values quoted and escaped so a
client-controlled value cannot start a new line) and the fields as record attributes, for
formatters that render JSON. Nothing is formatted when the level is filtered out. A field
named ``exc_info`` (an exception) is the record's traceback, not a ``key=value`` pair.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

EventSink = Callable[[int, str, Mapping[str, Any]], None]
"""``sink(level, event, fields)``: write one event at a stdlib level number."""

# Attributes a LogRecord already has; ``extra`` may not overwrite them (logging raises KeyError).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_BARE_VALUE = re.compile(r"[A-Za-z0-9\-_.:+/=@]*")


def event_sink(target: logging.Logger | str | Any) -> EventSink:
    """A sink for a stdlib logger (or its name) or a structlog logger (anything with ``.log``)."""
    if isinstance(target, str):
        target = logging.getLogger(target)
    if isinstance(target, logging.Logger):
        return _stdlib_sink(target)
    if callable(getattr(target, "log", None)):
        return _structlog_sink(target)
    raise TypeError(
        f"expected a logging.Logger, a logger name or a structlog logger, not {target!r}"
    )


def logfmt_value(value: Any) -> str:
    """``value`` for a ``key=value`` line: bare when safe, otherwise JSON-quoted (escaped)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    if text and _BARE_VALUE.fullmatch(text):
        return text
    return json.dumps(text)


def _stdlib_sink(logger: logging.Logger) -> EventSink:
    def sink(level: int, event: str, fields: Mapping[str, Any]) -> None:
        if not logger.isEnabledFor(level):
            return
        exc_info = fields.get("exc_info")
        if exc_info is not None:
            fields = {key: value for key, value in fields.items() if key != "exc_info"}
        line = " ".join([event, *(f"{key}={logfmt_value(value)}" for key, value in fields.items())])
        path, line_number, function, _ = logger.findCaller()
        record = logger.makeRecord(
            logger.name, level, path, line_number, "%s", (line,), _exc_tuple(exc_info), function
        )
        # Set after the record exists, not through ``extra=``: a record factory (such as
        # install_log_record_factory's) may already have put request_id there, and ``extra``
        # refuses to overwrite anything. The event's own value is the true one, so it wins.
        attributes = record.__dict__
        for key, value in fields.items():
            if key not in _RECORD_ATTRIBUTES:
                attributes[key] = value
        attributes["event"] = event
        attributes["event_fields"] = dict(fields)
        logger.handle(record)

    return sink


def _exc_tuple(exc_info: Any) -> Any:
    """``exc_info`` as ``Logger.log`` would pass it to a record: a tuple, or None."""
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        return (type(exc_info), exc_info, exc_info.__traceback__)
    return exc_info if isinstance(exc_info, tuple) else sys.exc_info()


def _structlog_sink(logger: Any) -> EventSink:
    is_enabled_for: Callable[[int], bool] | None = getattr(logger, "is_enabled_for", None)

    def sink(level: int, event: str, fields: Mapping[str, Any]) -> None:
        if is_enabled_for is None or is_enabled_for(level):
            logger.log(level, event, **fields)

    return sink


def enabled_check(logger: Any) -> Callable[[int], bool]:
    """Whether a level would be written, so a filtered event costs no field building."""
    if isinstance(logger, logging.Logger):
        return logger.isEnabledFor
    check: Callable[[int], bool] | None = getattr(logger, "is_enabled_for", None)
    return check if callable(check) else lambda level: True


@contextlib.contextmanager
def reported_if_failing(what: str, *args: object) -> Iterator[None]:
    """Run a block that only logs; if a log sink raises (a user's structlog processor or logging
    filter), report it once on the ``aioreqctx`` logger, as a failing observer is, instead of
    failing the unit of work. Should the report fail too, that error propagates."""
    try:
        yield
    except Exception:
        logging.getLogger("aioreqctx").exception(f"logging {what} failed", *args)
