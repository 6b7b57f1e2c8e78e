"""Where a task waits: the chain of coroutines it is suspended in, outermost first.

On 3.14 asyncio documents ``capture_call_graph`` (what ``python -m asyncio pstree`` shows): its
call stack, and the tasks awaiting this one. Before 3.14 the chain is read from the coroutines
themselves: each suspended coroutine's ``cr_await`` is the awaitable it waits on, down to the
future at the bottom (``task.get_stack()`` stops at the first frame of a suspended task). On
3.11-3.13 offer no documented way to the task at the bottom of a chain (``await other``).
Computed only when asked: walking frames is for a person looking, not for every request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import FrameType
from typing import Any

DEPTH_LIMIT = 64
"""Coroutines followed down one chain; a deeper one is cut (and says so)."""

_capture: Callable[..., Any] | None = getattr(asyncio, "capture_call_graph", None)


def _frame(frame: FrameType | None) -> str:
    if frame is None:
        return "<finished>"
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)


def _walk(awaitable: Any) -> list[str]:
    """The frames of the coroutines from ``awaitable`` down."""
    frames: list[str] = []
    while len(frames) < DEPTH_LIMIT:
        if hasattr(awaitable, "cr_await"):  # a coroutine
            frames.append(_frame(awaitable.cr_frame))
            awaitable = awaitable.cr_await
        elif hasattr(awaitable, "gi_yieldfrom"):  # a generator-based awaitable
            frames.append(_frame(awaitable.gi_frame))
            awaitable = awaitable.gi_yieldfrom
        else:
            return frames
    frames.append(f"... (cut at {DEPTH_LIMIT} frames)")
    return frames


def await_chain(task: asyncio.Task[Any]) -> dict[str, Any]:
    """``{"task", "frames", "awaited_by"}`` for ``task``: its name, its coroutines' frames
    (``file:line in function``, outermost first) and the tasks awaiting it (3.14 only)."""
    if _capture is None:
        return {"task": task.get_name(), "frames": _walk(task.get_coro()), "awaited_by": []}
    graph = _capture(task)  # 3.14: call_stack holds the innermost frame first
    frames = [] if graph is None else [_frame(e.frame) for e in reversed(graph.call_stack)]
    awaited_by = [] if graph is None else [_name(parent.future) for parent in graph.awaited_by]
    return {"task": task.get_name(), "frames": frames, "awaited_by": awaited_by}
