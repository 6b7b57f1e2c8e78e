"""What leaves the process with the request: its ID and deadline on aiohttp client calls and on
queued jobs. Nothing here imports the aiohttp server; the job side needs no aiohttp at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core.lazy import lazy_names

if TYPE_CHECKING:
    from .._core.deadline import DEADLINE_HEADER
    from .client import ClientPropagation, DeadlineExceeded, deadline_timeout
    from .jobs import JobEvents, JobPropagation, JobScope

__all__ = (
    "DEADLINE_HEADER",
    "ClientPropagation",
    "DeadlineExceeded",
    "JobEvents",
    "JobPropagation",
    "JobScope",
    "deadline_timeout",
)

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".._core.deadline": ("DEADLINE_HEADER",),
        ".client": ("ClientPropagation", "DeadlineExceeded", "deadline_timeout"),
        ".jobs": ("JobEvents", "JobPropagation", "JobScope"),
    },
)
