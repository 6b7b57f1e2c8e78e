"""Per-request context for asyncio and aiohttp, and a drop-in successor of aiotask-context.

``import aioreqctx as context`` offers everything aiotask-context 0.6.1 did, working on
Python 3.11 to 3.14, under uvloop and with eager tasks.

The whole public API at a glance, by layer. The rest is public in its namespace:
``aioreqctx.keys``, ``aioreqctx.log``, ``aioreqctx.events``, ``aioreqctx.propagation``,
``aioreqctx.web``, ``aioreqctx.testing``, ``aioreqctx.integrations.*``. The context engine is
imported here; the names of the other layers load on first use, so a job worker or a plain
asyncio program that never touches the server does not pay for aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import keys
from ._core.deadline import remaining_time
from ._core.detach import Captured, capture, detach, detached
from ._core.factories import (
    TaskFactory,
    chainmap_task_factory,
    copying_task_factory,
    loop_factory,
    task_factory_for,
)
from ._core.ids import is_safe_request_id, is_valid_request_id, new_request_id
from ._core.layered import LayeredContext
from ._core.lazy import lazy_names
from ._core.options import OptionError
from ._core.pool import IsolatedThreadPoolExecutor
from ._core.store import NO_LOOP_EXCEPTION_MSG, Context, clear, get, scope, set  # noqa: A004
from ._core.threads import bind_context, run_in_executor
from ._core.timing import OperationTimings, elapsed_ms, timed_operation
from ._core.unit_of_work import RequestContext, unit_of_work
from .compat import (
    PY37,
    asyncio_current_task,
    chainmap_context_factory,
    dict_context_factory,
    logger,
    task_factory,
)
from .keys import REQUEST_ID

if TYPE_CHECKING:
    from . import events as events
    from . import log as log
    from . import propagation as propagation
    from . import web as web
    from .events import BufferedCollector, LoggingCollector
    from .log import (
        RequestContextFilter,
        add_request_context,
        install_log_record_factory,
        log_context,
        request_context_processor,
    )
    from .propagation import (
        ClientPropagation,
        DeadlineExceeded,
        JobEvents,
        JobPropagation,
        deadline_timeout,
    )
    from .web import (
        AccessLogger,
        DeadlineObserver,
        InFlightRegistry,
        RequestEvents,
        RequestIdMiddleware,
        RequestObserver,
        setup,
    )

__version__ = "0.1.0"

__all__ = (  # noqa: RUF022 - grouped by layer, sorted within a group
    # The context: one mapping per unit of work, read and written from any of its tasks.
    "REQUEST_ID",
    "Context",
    "clear",
    "get",
    "keys",
    "scope",
    "set",
    # Tasks and threads: how the context reaches the work a unit of work starts.
    "LayeredContext",
    "TaskFactory",
    "bind_context",
    "chainmap_task_factory",
    "copying_task_factory",
    "loop_factory",
    "run_in_executor",
    "task_factory",
    "task_factory_for",
    # Work that outlives its request: detached tasks, hand-off to long-lived workers, pools.
    "Captured",
    "IsolatedThreadPoolExecutor",
    "capture",
    "detach",
    "detached",
    # A unit of work: an HTTP request, a job, a CLI command; its ID, timings and deadline.
    "OperationTimings",
    "RequestContext",
    "elapsed_ms",
    "remaining_time",
    "timed_operation",
    "unit_of_work",
    # The request-ID policy.
    "is_safe_request_id",
    "is_valid_request_id",
    "new_request_id",
    # A misconfiguration, refused at set-up by every constructor, names the option.
    "OptionError",
    # Logging (aioreqctx.log).
    "RequestContextFilter",
    "add_request_context",
    "install_log_record_factory",
    "log_context",
    "request_context_processor",
    # Lifecycle events (aioreqctx.events).
    "BufferedCollector",
    "LoggingCollector",
    # Propagation: aiohttp client calls and job queues (aioreqctx.propagation).
    "ClientPropagation",
    "DeadlineExceeded",
    "JobEvents",
    "JobPropagation",
    "deadline_timeout",
    # The aiohttp server (aioreqctx.web).
    "AccessLogger",
    "DeadlineObserver",
    "InFlightRegistry",
    "RequestEvents",
    "RequestIdMiddleware",
    "RequestObserver",
    "setup",
    # aiotask-context 0.6.1, for ``import aioreqctx as context`` (with the factories and
    # get/set/clear above).
    "NO_LOOP_EXCEPTION_MSG",
    "PY37",
    "asyncio_current_task",
    "chainmap_context_factory",
    "dict_context_factory",
    "logger",
    "__version__",
)

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        ".events": ("events", "BufferedCollector", "LoggingCollector"),
        ".log": (
            "log",
            "RequestContextFilter",
            "add_request_context",
            "install_log_record_factory",
            "log_context",
            "request_context_processor",
        ),
        ".propagation": (
            "propagation",
            "ClientPropagation",
            "DeadlineExceeded",
            "JobEvents",
            "JobPropagation",
            "deadline_timeout",
        ),
        ".web": (
            "web",
            "AccessLogger",
            "DeadlineObserver",
            "InFlightRegistry",
            "RequestEvents",
            "RequestIdMiddleware",
            "RequestObserver",
            "setup",
        ),
    },
)
