"""Where aioreqctx writes, and what it writes there: events, error fields, JSON-safe values.

Access lines, request events and lifecycle events are key/value records. A structlog logger
gets them as keyword arguments, so its processors and renderer decide the output. A stdlib
logger gets a one-line message (``event key=value ...``, values quoted and escaped so a
client-controlled value cannot start a new line) and the fields as record attributes, for
formatters that render JSON. Nothing is formatted when the level is filtered out. A field
named ``exc_info`` (an exception) is the record's traceback, not a ``key=value`` pair.

Metadata and counters are added by application code, so they can hold anything: bytes, sets,
objects whose ``repr`` raises, structures that contain themselves. A diagnostic (a log line, the
in-flight registry's page) must never fail because of one odd value, so ``json_safe`` gives
every value a JSON form or, failing that, a short text that says what it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

# Every logger aioreqctx writes to, in one table (docs/logging.md lists them), as aiohttp's log.py.
logger = logging.getLogger("aioreqctx")
"""aioreqctx's own messages: misconfiguration, rejected input, a failing observer or callback."""
REQUESTS_LOGGER = "aioreqctx.requests"
"""Request events, ``unit_of_work``'s start and end, and ``RequestContext.log_event``."""
JOBS_LOGGER = "aioreqctx.jobs"
"""``job_started`` / ``job_finished`` from the job-queue propagation."""
REGISTRY_LOGGER = "aioreqctx.inflight"
"""The in-flight registry's ``inflight_stale`` warnings."""
OPERATIONS_LOGGER = "aioreqctx.operations"
"""``operation_finished`` (DEBUG) for each ``timed_operation``."""
LIFECYCLE_LOGGER = "aioreqctx.lifecycle"
"""``LoggingCollector``'s lifecycle events."""
SQL_LOGGER = "aioreqctx.sql"
"""The asyncpg integration's ``slow_query`` warnings."""

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
        logger.exception(f"logging {what} failed", *args)


def error_fields(error: BaseException, *, traceback: bool = True) -> dict[str, Any]:
    """What an event about ``error`` carries: its type, its message (the sink escapes it) and,
    unless told not to (a cancellation is no bug), its traceback as ``exc_info``."""
    fields: dict[str, Any] = {"error": type(error).__name__, "error_message": safe_text(error)}
    if traceback:
        fields["exc_info"] = error
    return fields


MAX_DEPTH = 32
MAX_TEXT = 1000

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def json_safe(value: Any) -> JsonValue:
    """``value`` as plain JSON data; never raises, whatever ``value`` is."""
    return _convert(value, set(), 0)


def safe_text(value: Any, limit: int = MAX_TEXT) -> str:
    """``str(value)`` (``repr`` if that fails), at most ``limit`` characters; never raises."""
    for render in (str, repr):
        try:
            text = render(value)
        except Exception:  # noqa: BLE001 - a broken __str__/__repr__ is the case handled here
            continue
        if isinstance(text, str):
            text = str.__str__(text)
            return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"
    return f"<unprintable {type(value).__qualname__}>"


def _convert(value: Any, ancestors: set[int], depth: int) -> JsonValue:
    # Exact types first: subclasses may override the methods this relies on.
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value  # type: ignore[no-any-return]
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return _convert_container(value, ancestors, depth)
    return safe_text(value)


def _convert_container(value: Any, ancestors: set[int], depth: int) -> JsonValue:
    if id(value) in ancestors:
        return f"<cycle: {type(value).__qualname__}>"
    if depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH}: {type(value).__qualname__}>"
    ancestors.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {safe_text(k): _convert(v, ancestors, depth + 1) for k, v in value.items()}
        items = [_convert(item, ancestors, depth + 1) for item in value]
        if isinstance(value, set | frozenset):  # no order of its own: sort for stable output
            items.sort(key=repr)
        return items
    except Exception:  # noqa: BLE001 - a container that fails to iterate is shown as text
        return safe_text(value)
    finally:
        ancestors.discard(id(value))
