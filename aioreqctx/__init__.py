"""Per-request context for asyncio and aiohttp, and a drop-in successor of aiotask-context.

``import aioreqctx as context`` offers everything aiotask-context 0.6.1 did, working on
Python 3.11 to 3.14, under uvloop and with eager tasks.
"""

from .collectors import BufferedCollector, LoggingCollector
from .compat import (
    PY37,
    asyncio_current_task,
    chainmap_context_factory,
    dict_context_factory,
    logger,
    task_factory,
)
from .factories import (
    EAGER_TASKS_SUPPORTED,
    TaskFactory,
    chainmap_task_factory,
    copying_task_factory,
    task_factory_for,
)
from .ids import is_valid_request_id, new_request_id, trace_id_of
from .keys import OPERATIONS, REJECTED_REQUEST_ID, REQUEST_ID, START_MONOTONIC, START_TIME
from .layered import LayeredContext
from .lifecycle import (
    ClientDisconnected,
    ConnectionCompleted,
    ConnectionOpened,
    LifecycleCollector,
    LifecycleEvent,
    NoopCollector,
    RequestStarted,
    ResponseCompleted,
    next_connection_id,
)
from .middleware import (
    REQUEST_CONTEXT,
    UNHANDLED_ERROR,
    RequestIdMiddleware,
    request_id_middleware,
    setup,
)
from .observers import RequestObserver
from .store import NO_LOOP_EXCEPTION_MSG, Context, clear, get, scope, set  # noqa: A004
from .threads import bind_context, run_in_executor
from .timing import OperationTimings, elapsed_ms, timed_operation

__all__ = [
    "EAGER_TASKS_SUPPORTED",
    "NO_LOOP_EXCEPTION_MSG",
    "OPERATIONS",
    "PY37",
    "REJECTED_REQUEST_ID",
    "REQUEST_CONTEXT",
    "REQUEST_ID",
    "START_MONOTONIC",
    "START_TIME",
    "UNHANDLED_ERROR",
    "BufferedCollector",
    "ClientDisconnected",
    "ConnectionCompleted",
    "ConnectionOpened",
    "Context",
    "LayeredContext",
    "LifecycleCollector",
    "LifecycleEvent",
    "LoggingCollector",
    "NoopCollector",
    "OperationTimings",
    "RequestIdMiddleware",
    "RequestObserver",
    "RequestStarted",
    "ResponseCompleted",
    "TaskFactory",
    "asyncio_current_task",
    "bind_context",
    "chainmap_context_factory",
    "chainmap_task_factory",
    "clear",
    "copying_task_factory",
    "dict_context_factory",
    "elapsed_ms",
    "get",
    "is_valid_request_id",
    "logger",
    "new_request_id",
    "next_connection_id",
    "request_id_middleware",
    "run_in_executor",
    "scope",
    "set",
    "setup",
    "task_factory",
    "task_factory_for",
    "timed_operation",
    "trace_id_of",
]
