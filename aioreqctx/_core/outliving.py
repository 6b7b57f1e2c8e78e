"""The detector of tasks that outlive the unit of work (request, job) whose context they carry.

A sweep, every quarter of the threshold, looks at the loop's tasks; nothing runs per request.
A task is stamped by a unit when its context holds that unit's ``REQUEST_ID`` (detached work
and start-up tasks hold none, so they are never reported, nor is a ``captured.activate()``
block, work handed off on purpose, which holds ``HANDED_OFF``). A detector watches either
requests or jobs (a job's mapping holds ``JOB_ID``). A request is in flight while one of its
tasks is awaiting, at any depth, one of ``unit_codes`` (the middleware's ``__call__``); a job
while its ``JobScope`` has its unit in ``open_units``. The first sweep that finds a unit not in
flight marks it finished, and a stamped task still running ``seconds`` later is reported, once
per coroutine function. What it keeps is bounded: the open jobs, the finished units that still
have tasks, and at most ``MAX_REPORTED`` coroutine functions.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from time import monotonic
from types import CodeType
from typing import Any

from .. import keys
from .emit import logger
from .store import current_mapping

MAX_REPORTED = 1000
"""At most this many coroutine functions are remembered as reported (then none is reported)."""

_MAX_DEPTH = 64
Unit = tuple[Any, Any]
"""A unit of work as its tasks' mappings tell it: its ID and its start instant."""

stamp_of: Callable[[asyncio.Task[Any]], Mapping[str, Any] | None]
if sys.version_info >= (3, 12):

    def stamp_of(task: asyncio.Task[Any]) -> Mapping[str, Any] | None:
        """The mapping ``task`` reads: its own, or the one its Context holds."""
        owned = getattr(task, "context", None)
        return owned if owned is not None else task.get_context().get(current_mapping)

else:  # 3.11 has no Task.get_context(): only a task that owns a mapping can be read

    def stamp_of(task: asyncio.Task[Any]) -> Mapping[str, Any] | None:
        """The mapping ``task`` owns (a factory's, or its copy after its first write)."""
        return getattr(task, "context", None)


def unit_of(mapping: Mapping[str, Any]) -> Unit:
    """The unit of work a mapping (or a copy of it, a child task's) belongs to."""
    return mapping.get(keys.REQUEST_ID), mapping.get(keys.START_MONOTONIC)


class OutlivingTaskDetector:
    """Warns once per coroutine function about a task still running ``seconds`` after the unit
    of work that stamped it finished. It watches requests (``unit_codes``: the code objects of
    the coroutines that run one; while one of them is being awaited, it is in flight) or, with
    ``jobs=True``, jobs (in flight while in ``open_units``, which ``JobScope`` keeps)."""

    __slots__ = (
        "_finished",
        "_handle",
        "_jobs",
        "_reported",
        "open_units",
        "seconds",
        "unit_codes",
    )

    def __init__(
        self, seconds: float, unit_codes: Collection[CodeType] = (), *, jobs: bool = False
    ) -> None:
        self.seconds = seconds
        self.unit_codes = frozenset(unit_codes)
        self.open_units: set[Unit] = set()
        self._jobs = jobs
        self._finished: dict[Unit, float] = {}
        self._reported: set[CodeType] = set()
        self._handle: asyncio.TimerHandle | None = None

    @property
    def interval(self) -> float:
        """How often the detector sweeps once started."""
        return self.seconds / 4

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Sweep ``loop``'s tasks every ``interval`` seconds until ``stop()`` or the loop closes.

        A timer, not a task: nothing is left pending when a loop closes without cancelling its
        tasks, and its lines (run in an empty ``contextvars.Context``) belong to no unit."""
        self._handle = loop.call_later(
            self.interval, self._tick, loop, context=contextvars.Context()
        )

    def stop(self) -> None:
        """Stop sweeping."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self.sweep(asyncio.all_tasks(loop), monotonic())
        finally:
            self.start(loop)

    def sweep(self, tasks: Iterable[asyncio.Task[Any]], now: float) -> None:
        """Note the units that finished since the last sweep; report the tasks outliving one."""
        in_flight: set[Unit] = set()
        stamped: list[tuple[asyncio.Task[Any], Unit, Mapping[str, Any]]] = []
        for task in tasks:
            if task.done():
                continue
            mapping = stamp_of(task)
            if (
                mapping is None
                or mapping.get(keys.REQUEST_ID) is None
                or (keys.JOB_ID in mapping) is not self._jobs
                or keys.HANDED_OFF in mapping
            ):
                continue
            unit = unit_of(mapping)
            if unit in self.open_units or self._runs_a_unit(task.get_coro()):
                in_flight.add(unit)
            else:
                stamped.append((task, unit, mapping))
        finished: dict[Unit, float] = {}
        for task, unit, mapping in stamped:
            if unit in in_flight:
                continue
            ended = finished[unit] = self._finished.get(unit, now)
            if now - ended >= self.seconds:
                self._report(task, mapping, now - ended)
        self._finished = finished  # forgets the units none of whose tasks is left

    def _runs_a_unit(self, coro: Any) -> bool:
        if not self.unit_codes:
            return False
        for _ in range(_MAX_DEPTH):
            code = getattr(coro, "cr_code", None)
            if code is None:
                return False
            if code in self.unit_codes:
                return True
            coro = coro.cr_await
        return False

    def _report(self, task: asyncio.Task[Any], mapping: Mapping[str, Any], outlived: float) -> None:
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None or code in self._reported or len(self._reported) >= MAX_REPORTED:
            return
        self._reported.add(code)
        request_id = mapping.get(keys.REQUEST_ID)
        unit, start = (
            (
                f"job {mapping.get(keys.JOB_NAME)} (id {mapping.get(keys.JOB_ID)}, request "
                f"{request_id})",
                "the worker's start-up",
            )
            if self._jobs
            else (f"request {request_id}", "start-up")
        )
        logger.warning(
            "task %r (%s, defined at %s:%d) still runs %.1f s after the %s that started it "
            "finished, and carries its context: its log lines show that request's ID. Start it "
            "with aioreqctx.detached(...) (or inside `with aioreqctx.detach():`), or at %s",
            task.get_name(),
            code.co_qualname,
            code.co_filename,
            code.co_firstlineno,
            outlived,
            unit,
            start,
        )
