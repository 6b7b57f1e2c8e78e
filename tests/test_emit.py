"""Events reach stdlib and structlog loggers as one safe line or as key/value pairs."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
import structlog

import aioreqctx
from aioreqctx._core import emit
from aioreqctx._core.emit import event_sink, logfmt_value

from .support.log_capture import ListHandler, attached


class Unprintable:
    def __str__(self) -> str:
        raise AssertionError("formatted although the level is filtered out")


def test_stdlib_line_is_one_line_and_fields_are_attributes() -> None:
    logger = logging.getLogger("tests.emit.stdlib")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    records: list[logging.LogRecord] = []
    handler.addFilter(lambda record: not records.append(record))  # type: ignore[func-returns-value]
    logger.addHandler(handler)
    try:
        sink = event_sink("tests.emit.stdlib")
        sink(logging.INFO, "request_finished", {"path": "/a\nFAKE line", "name": "x", "n": 3})
        sink(logging.DEBUG, "filtered", {"value": Unprintable()})
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == 'request_finished path="/a\\nFAKE line" name=x n=3\n'
    (record,) = records
    assert record.name == "tests.emit.stdlib"  # a field called "name" does not clobber it
    assert record.event_fields == {"path": "/a\nFAKE line", "name": "x", "n": 3}  # type: ignore[attr-defined]
    assert record.path == "/a\nFAKE line"  # type: ignore[attr-defined]


def test_structlog_gets_the_fields_as_keywords() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with structlog.testing.capture_logs() as captured:
            sink = event_sink(structlog.get_logger())
            sink(logging.WARNING, "request_finished", {"status": 404})
            sink(logging.DEBUG, "filtered", {"value": Unprintable()})
    finally:
        structlog.reset_defaults()
    assert captured == [{"event": "request_finished", "status": 404, "log_level": "warning"}]


def test_values_are_bare_only_when_safe() -> None:
    assert logfmt_value("abc-123") == "abc-123"
    assert logfmt_value(None) == "-"
    assert logfmt_value("") == '""'
    assert logfmt_value('a "b"\r\n') == '"a \\"b\\"\\r\\n"'


def test_anything_else_is_refused() -> None:
    with pytest.raises(TypeError, match="structlog logger"):
        event_sink(42)


def test_stdlib_event_with_a_record_factory_that_adds_the_same_field() -> None:
    """install_log_record_factory stamps request_id on every record; the access log's own
    request_id field used to make logging raise KeyError ("Attempt to overwrite")."""
    uninstall = aioreqctx.install_log_record_factory()
    handler = ListHandler("%(request_id)s %(message)s")
    try:
        with attached("tests.emit.factory", handler):
            event_sink("tests.emit.factory")(logging.INFO, "access", {"request_id": "r-1"})
    finally:
        uninstall()
    assert handler.lines == ["r-1 access request_id=r-1"]
    assert handler.records[0].event_fields == {"request_id": "r-1"}  # type: ignore[attr-defined]


def test_the_logging_guide_lists_every_logger_aioreqctx_writes_to() -> None:
    page = (Path(__file__).resolve().parent.parent / "docs" / "logging.md").read_text()
    listed = re.findall(r"^\| `(aioreqctx[a-z.]*)` \|", page, flags=re.MULTILINE)
    table = [
        emit.logger.name,
        emit.REQUESTS_LOGGER,
        emit.JOBS_LOGGER,
        emit.REGISTRY_LOGGER,
        emit.OPERATIONS_LOGGER,
        emit.LIFECYCLE_LOGGER,
        emit.SQL_LOGGER,
    ]
    assert listed == table
    sources = (Path(__file__).resolve().parent.parent / "aioreqctx").rglob("*.py")
    # Outside the table no module names one of aioreqctx's loggers (the one allowed here is
    # in a module another branch is rewriting at the time of writing).
    elsewhere = {
        path.name
        for path in sources
        if path.name != "emit.py" and re.search(r'getLogger\("aioreqctx', path.read_text())
    }
    assert elsewhere <= {"snapshot.py"}
