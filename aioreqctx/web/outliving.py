"""``setup(app, warn_outliving_tasks=seconds)``: report tasks that outlive their request.

The detector (``_core.outliving``) sweeps the serving loop's tasks while the app runs; a
request is in flight while its task awaits the middleware, so requests pay nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._core.outliving import OutlivingTaskDetector
from .middleware import RequestIdMiddleware


def accepts_seconds(value: Any) -> bool:
    """``warn_outliving_tasks``: None (off) or a positive number of seconds."""
    return value is None or (type(value) in (int, float) and value > 0)


def outliving_task_detector(seconds: float) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry sweeping for outliving tasks while the app runs."""
    detector = OutlivingTaskDetector(seconds, {RequestIdMiddleware.__call__.__code__})

    async def sweeping(app: Any) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(detector.run(), name="aioreqctx-outliving-task-detector")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    return sweeping
