"""Per-request context for asyncio and aiohttp, and a drop-in successor of aiotask-context.

``import aioreqctx as context`` offers everything aiotask-context 0.6.1 did, working on
Python 3.11 to 3.14, under uvloop and with eager tasks.
"""

__version__ = "0.1.0"

from .access_log import AccessLogger, access_logger_for
from .app_setup import setup
from .client import ClientPropagation, DeadlineExceeded
from .collectors import BufferedCollector, LoggingCollector
from .compat import (
    PY37,
    asyncio_current_task,
    chainmap_context_factory,
    dict_context_factory,
    logger,
    task_factory,
)
from .deadline import (
    DEADLINE_HEADER,
    DeadlineObserver,
    deadline_timeout,
    remaining_time,
)
from .factories import (
    EAGER_TASKS_SUPPORTED,
    TaskFactory,
    chainmap_task_factory,
    copying_task_factory,
    task_factory_for,
)
from .ids import is_safe_request_id, is_valid_request_id, new_request_id, trace_id_of
from .inflight import InFlightEntry, InFlightRegistry
from .job_context import JobEvents, JobPropagation, JobScope
from .jobs import request_context
from .jsonsafe import json_safe
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
from .logging_context import LogContext, log_context
from .middleware import (
    CLIENT_CLOSED_REQUEST,
    REQUEST_CONTEXT,
    UNHANDLED_ERROR,
    UNTRUSTED_PEER,
    RequestIdMiddleware,
    request_id_middleware,
)
from .observers import RequestObserver
from .request_events import RequestEvents, level_for_status
from .request_view import RequestContext
from .serving_loop import loop_factory
from .stdlib_logging import RequestContextFilter, install_log_record_factory
from .store import NO_LOOP_EXCEPTION_MSG, Context, clear, get, scope, set  # noqa: A004
from .structlog_processor import add_event_fields, add_request_context, request_context_processor
from .threads import bind_context, run_in_executor
from .timing import OperationTimings, elapsed_ms, timed_operation

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
