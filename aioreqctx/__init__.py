"""Per-request context for asyncio and aiohttp, and a drop-in successor of aiotask-context.

``import aioreqctx as context`` offers everything aiotask-context 0.6.1 did, working on
Python 3.11 to 3.14, under uvloop and with eager tasks.
"""

__version__ = "0.1.0"

from ._collectors import BufferedCollector, LoggingCollector
from ._core.deadline import (
    DEADLINE_HEADER,
    DeadlineObserver,
    deadline_timeout,
    remaining_time,
)
from ._core.factories import (
    EAGER_TASKS_SUPPORTED,
    TaskFactory,
    chainmap_task_factory,
    copying_task_factory,
    task_factory_for,
)
from ._core.ids import is_safe_request_id, is_valid_request_id, new_request_id, trace_id_of
from ._core.jobs import request_context
from ._core.jsonsafe import json_safe
from ._core.layered import LayeredContext
from ._core.request_view import RequestContext
from ._core.serving_loop import loop_factory
from ._core.store import NO_LOOP_EXCEPTION_MSG, Context, clear, get, scope, set  # noqa: A004
from ._core.threads import bind_context, run_in_executor
from ._core.timing import OperationTimings, elapsed_ms, timed_operation
from .compat import (
    PY37,
    asyncio_current_task,
    chainmap_context_factory,
    dict_context_factory,
    logger,
    task_factory,
)
from .events import (
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
from .keys import (
    DEADLINE,
    JOB_ATTEMPT,
    JOB_ID,
    JOB_NAME,
    OPERATIONS,
    PARENT_JOB_ID,
    REJECTED_REQUEST_ID,
    REQUEST_ID,
    START_MONOTONIC,
    START_TIME,
)
from .log.logging_context import LogContext, log_context
from .log.processors import add_event_fields, add_request_context, request_context_processor
from .log.stdlib import RequestContextFilter, install_log_record_factory
from .propagation.client import ClientPropagation, DeadlineExceeded
from .propagation.jobs import JobEvents, JobPropagation, JobScope
from .web.access_log import AccessLogger, access_logger_for
from .web.app import setup
from .web.inflight import InFlightEntry, InFlightRegistry
from .web.middleware import (
    CLIENT_CLOSED_REQUEST,
    REQUEST_CONTEXT,
    UNHANDLED_ERROR,
    UNTRUSTED_PEER,
    RequestIdMiddleware,
    request_id_middleware,
)
from .web.observers import RequestObserver
from .web.request_events import RequestEvents, level_for_status

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "DEADLINE",
    "DEADLINE_HEADER",
    "EAGER_TASKS_SUPPORTED",
    "JOB_ATTEMPT",
    "JOB_ID",
    "JOB_NAME",
    "NO_LOOP_EXCEPTION_MSG",
    "OPERATIONS",
    "PARENT_JOB_ID",
    "PY37",
    "REJECTED_REQUEST_ID",
    "REQUEST_CONTEXT",
    "REQUEST_ID",
    "START_MONOTONIC",
    "START_TIME",
    "UNHANDLED_ERROR",
    "UNTRUSTED_PEER",
    "AccessLogger",
    "BufferedCollector",
    "ClientDisconnected",
    "ClientPropagation",
    "ConnectionCompleted",
    "ConnectionOpened",
    "Context",
    "DeadlineExceeded",
    "DeadlineObserver",
    "InFlightEntry",
    "InFlightRegistry",
    "JobEvents",
    "JobPropagation",
    "JobScope",
    "LayeredContext",
    "LifecycleCollector",
    "LifecycleEvent",
    "LogContext",
    "LoggingCollector",
    "NoopCollector",
    "OperationTimings",
    "RequestContext",
    "RequestContextFilter",
    "RequestEvents",
    "RequestIdMiddleware",
    "RequestObserver",
    "RequestStarted",
    "ResponseCompleted",
    "TaskFactory",
    "__version__",
    "access_logger_for",
    "add_event_fields",
    "add_request_context",
    "asyncio_current_task",
    "bind_context",
    "chainmap_context_factory",
    "chainmap_task_factory",
    "clear",
    "copying_task_factory",
    "deadline_timeout",
    "dict_context_factory",
    "elapsed_ms",
    "get",
    "install_log_record_factory",
    "is_safe_request_id",
    "is_valid_request_id",
    "json_safe",
    "level_for_status",
    "log_context",
    "logger",
    "loop_factory",
    "new_request_id",
    "next_connection_id",
    "remaining_time",
    "request_context",
    "request_context_processor",
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
