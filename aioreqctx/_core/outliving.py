"""The detector of tasks that outlive the unit of work (request, job) whose context they carry.

A sweep, every quarter of the threshold, looks at the loop's tasks; nothing runs per request.
A task is stamped by a unit when its context holds that unit's ``REQUEST_ID`` (detached work
and start-up tasks hold none, so they are never reported, nor is a ``captured.activate()``
block, work handed off on purpose). The unit is in flight while one of
its tasks is awaiting, at any depth, one of ``unit_codes`` (the middleware's ``__call__``); the
first sweep that finds none marks it finished, and a stamped task still running ``seconds``
later is reported, once per coroutine function. What it keeps is bounded: the finished units
that still have tasks, and at most ``MAX_REPORTED`` coroutine functions.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from time import monotonic
from types import CodeType
from typing import Any

from .. import keys
from .detach import handed_off
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


class OutlivingTaskDetector:
    """Warns once per coroutine function about a task still running ``seconds`` after the unit
    of work that stamped it finished; ``unit_codes`` are the code objects of the coroutines that
    run a unit (while one of them is being awaited, the unit is in flight)."""

    __slots__ = ("_finished", "_reported", "seconds", "unit_codes")

    def __init__(self, seconds: float, unit_codes: Collection[CodeType]) -> None:
        self.seconds = seconds
        self.unit_codes = frozenset(unit_codes)
        self._finished: dict[Unit, float] = {}
        self._reported: set[CodeType] = set()

    @property
    def interval(self) -> float:
        """How often ``run`` sweeps."""
        return self.seconds / 4

    async def run(self) -> None:
        """Sweep the running loop's tasks every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.sweep(asyncio.all_tasks(), monotonic())

    def sweep(self, tasks: Iterable[asyncio.Task[Any]], now: float) -> None:
        """Note the units that finished since the last sweep; report the tasks outliving one."""
        in_flight: set[Unit] = set()
        stamped: list[tuple[asyncio.Task[Any], Unit, Any]] = []
        for task in tasks:
            if task.done():
                continue
            mapping = stamp_of(task)
            if (
                mapping is None
                or (request_id := mapping.get(keys.REQUEST_ID)) is None
                or id(mapping) in handed_off
            ):
                continue
            unit = (request_id, mapping.get(keys.START_MONOTONIC))
            if self._runs_a_unit(task.get_coro()):
                in_flight.add(unit)
            else:
                stamped.append((task, unit, request_id))
        finished: dict[Unit, float] = {}
        for task, unit, request_id in stamped:
            if unit in in_flight:
                continue
            ended = finished[unit] = self._finished.get(unit, now)
            if now - ended >= self.seconds:
                self._report(task, request_id, now - ended)
        self._finished = finished  # forgets the units none of whose tasks is left

    def _runs_a_unit(self, coro: Any) -> bool:
        for _ in range(_MAX_DEPTH):
            code = getattr(coro, "cr_code", None)
            if code is None:
                return False
            if code in self.unit_codes:
                return True
            coro = coro.cr_await
        return False

    def _report(self, task: asyncio.Task[Any], request_id: Any, outlived: float) -> None:
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None or code in self._reported or len(self._reported) >= MAX_REPORTED:
            return
        self._reported.add(code)
        logger.warning(
            "task %r (%s, defined at %s:%d) still runs %.1f s after the request %s that "
            "started it finished, and carries that request's context: its log lines show "
            "that request's ID. Start it with aioreqctx.detached(...) (or inside "
            "`with aioreqctx.detach():`), or at start-up",
            task.get_name(),
            code.co_qualname,
            code.co_filename,
            code.co_firstlineno,
            outlived,
            request_id,
        )
