"""``setup(app, warn_outliving_tasks=seconds)``: report tasks that outlive their request.

The detector (``_core.outliving``) sweeps the serving loop's tasks while the app runs; a
request is in flight while its task awaits the middleware, so requests pay nothing for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from .._core.outliving import OutlivingTaskDetector
from .middleware import RequestIdMiddleware


def outliving_task_detector(seconds: float) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry sweeping for outliving tasks while the app runs."""
    detector = OutlivingTaskDetector(seconds, {RequestIdMiddleware.__call__.__code__})

    async def sweeping(app: Any) -> AsyncIterator[None]:
        detector.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            detector.stop()

    return sweeping
