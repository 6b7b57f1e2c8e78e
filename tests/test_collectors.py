"""Events, connection IDs and the ready-made collectors, without a server."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

import aioreqctx as context
from aioreqctx.events import as_collector


def completed(n: int = 0, *, path: str = "/p", duration_ms: float = 1.0) -> Any:
    return context.events.ResponseCompleted(
        connection_id=n,
        worker_id=1,
        request_id=f"r{n}",
        method="GET",
        path=path,
        status=200,
        bytes_sent=10,
        duration_ms=duration_ms,
        streaming=False,
    )


def in_threads(count: int, target: Any) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def test_events_are_frozen_and_stamped_with_both_clocks() -> None:
    before = time.time_ns()
    event = completed()
    assert before <= event.wall_time_ns <= time.time_ns()
    assert abs(event.timestamp_ns - time.monotonic_ns()) < 10**9
    with pytest.raises(AttributeError):
        event.status = 500
    assert not hasattr(event, "__dict__")


def test_connection_ids_are_unique_across_threads() -> None:
    ids: list[list[int]] = [[] for _ in range(8)]

    def take(i: int) -> None:
        ids[i].extend(context.events.next_connection_id() for _ in range(2000))

    in_threads(8, take)
    every = [n for chunk in ids for n in chunk]
    assert len(set(every)) == len(every) == 16000


def test_functions_are_collectors_and_other_things_are_refused() -> None:
    seen: list[Any] = []
    as_collector(seen.append).record(completed())
    assert len(seen) == 1
    assert isinstance(as_collector(None), context.events.NoopCollector)
    with pytest.raises(TypeError, match="record"):
        as_collector(42)  # type: ignore[arg-type]


def test_buffered_collector_loses_and_duplicates_nothing_under_8_threads() -> None:
    batches: list[list[Any]] = []
    collector = context.BufferedCollector(max_buffer_size=97, on_flush=batches.append)

    def record(i: int) -> None:
        for n in range(2000):
            collector.record(completed(i * 10_000 + n))

    in_threads(8, record)
    batches.append(collector.flush())
    ids = [event.connection_id for batch in batches for event in batch]
    assert sorted(ids) == sorted(i * 10_000 + n for i in range(8) for n in range(2000))
    assert all(len(batch) == 97 for batch in batches[:-1])
    assert len(collector) == 0


def test_on_flush_runs_outside_the_lock_and_may_record_and_flush() -> None:
    inside = threading.Event()
    release = threading.Event()
    reentered: list[Any] = []

    def on_flush(batch: list[Any]) -> None:
        collector.record(completed(99))  # would deadlock if the lock were held
        reentered.extend(collector.flush())
        inside.set()
        release.wait(10)

    collector = context.BufferedCollector(max_buffer_size=2, on_flush=on_flush)
    collector.record(completed(1))
    flusher = threading.Thread(target=collector.record, args=(completed(2),))
    flusher.start()
    assert inside.wait(10)
    # The callback is still running: another thread can record meanwhile.
    other = threading.Thread(target=collector.record, args=(completed(3),))
    other.start()
    other.join(10)
    assert not other.is_alive()
    release.set()
    flusher.join(10)
    assert [event.connection_id for event in reentered] == [99]
    assert [event.connection_id for event in collector.flush()] == [3]


def test_a_failing_on_flush_is_logged_and_recording_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(batch: list[Any]) -> None:
        raise RuntimeError("sink down")

    collector = context.BufferedCollector(max_buffer_size=1, on_flush=broken)
    collector.record(completed())
    collector.record(completed())
    assert caplog.text.count("on_flush callback failed") == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_buffer_size": -1}, ValueError),
        ({"max_buffer_size": "10"}, ValueError),
        ({"on_flush": 3}, TypeError),
    ],
)
def test_buffered_collector_rejects_bad_options(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        context.BufferedCollector(**options)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lifecycle_log() -> Iterator[list[logging.LogRecord]]:
    handler = Keep()
    log = logging.getLogger("aioreqctx.lifecycle")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield handler.records
    log.removeHandler(handler)
    log.setLevel(logging.NOTSET)


def test_logging_collector_writes_json_with_true_wall_clock_time(
    lifecycle_log: list[logging.LogRecord],
) -> None:
    collector = context.LoggingCollector(slow_request_threshold_ms=100.0)
    collector.record(completed(1, duration_ms=5.0))
    collector.record(completed(2, duration_ms=250.0))
    collector.record(
        context.events.ClientDisconnected(
            connection_id=3, worker_id=1, request_id=None, during_streaming=False
        )
    )
    assert [r.levelno for r in lifecycle_log] == [logging.DEBUG, logging.INFO, logging.WARNING]
    lines = [json.loads(r.getMessage()) for r in lifecycle_log]
    assert lines[1]["event"] == "response_completed"
    assert lines[1]["request_id"] == "r2"
    assert lines[1]["duration_ms"] == 250.0
    assert lines[2] == lines[2] | {"event": "client_disconnected", "request_id": None}
    for line in lines:
        stamped = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
        assert abs(stamped - time.time()) < 1


def test_logging_collector_text_lines_are_escaped(
    lifecycle_log: list[logging.LogRecord],
) -> None:
    context.LoggingCollector(log_format="text").record(completed(path="/a\nforged=1"))
    (record,) = lifecycle_log
    line = record.getMessage()
    assert line.startswith("response_completed time=")
    assert "\n" not in line
    assert 'path="/a\\nforged=1"' in line
    assert record.event_fields["status"] == 200  # type: ignore[attr-defined]


def test_logging_collector_skips_health_checks_and_filtered_levels(
    lifecycle_log: list[logging.LogRecord],
) -> None:
    collector = context.LoggingCollector(health_check_path="/health")
    started = context.events.RequestStarted(
        connection_id=1, worker_id=1, request_id="h", method="GET", path="/health",
        http_version="1.1",
    )  # fmt: skip
    collector.record(started)
    collector.record(completed(path="/health"))
    assert lifecycle_log == []
    collector.record(completed(path="/other"))
    assert len(lifecycle_log) == 1

    logging.getLogger("aioreqctx.lifecycle").setLevel(logging.WARNING)
    unformattable = completed(path=object())  # type: ignore[arg-type]
    collector.record(unformattable)  # filtered: never formatted, so no TypeError
    logging.getLogger("aioreqctx.lifecycle").setLevel(logging.DEBUG)
    with pytest.raises(TypeError, match="JSON serializable"):
        collector.record(unformattable)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"log_format": "xml"}, ValueError),
        ({"slow_request_threshold_ms": -1}, ValueError),
        ({"logger": 5}, TypeError),
    ],
)
def test_logging_collector_rejects_bad_options(options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        context.LoggingCollector(**options)


def test_buffered_collector_is_bounded_by_default_and_counts_what_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = context.BufferedCollector()
    assert collector.max_buffer_size == 1000

    def record(i: int) -> None:
        for n in range(1000):
            collector.record(completed(i * 10_000 + n))

    in_threads(4, record)
    assert len(collector) == 1000
    assert collector.dropped == 3000
    kept = collector.flush()
    assert len({event.connection_id for event in kept}) == 1000
    assert caplog.text.count("BufferedCollector is full") == 1
    collector.record(completed(1))
    assert [event.connection_id for event in collector.flush()] == [1]
