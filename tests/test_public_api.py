"""The public API, pinned: the top level and each namespace's ``__all__``, and that every name
listed there can be read (most of them load on first use)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import aioreqctx

ROOT = Path(__file__).resolve().parent.parent

TOP_LEVEL = (
    # The context.
    "REQUEST_ID",
    "Context",
    "clear",
    "get",
    "keys",
    "scope",
    "set",
    # Tasks and threads.
    "LayeredContext",
    "TaskFactory",
    "bind_context",
    "chainmap_task_factory",
    "copying_task_factory",
    "loop_factory",
    "run_in_executor",
    "task_factory",
    "task_factory_for",
    # A unit of work.
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
    "OptionError",
    # Logging.
    "RequestContextFilter",
    "add_request_context",
    "install_log_record_factory",
    "log_context",
    "request_context_processor",
    # Lifecycle events.
    "BufferedCollector",
    "LoggingCollector",
    # Propagation.
    "ClientPropagation",
    "DeadlineExceeded",
    "JobEvents",
    "JobPropagation",
    "deadline_timeout",
    # The aiohttp server.
    "AccessLogger",
    "DeadlineObserver",
    "InFlightRegistry",
    "RequestEvents",
    "RequestIdMiddleware",
    "RequestObserver",
    "setup",
    # aiotask-context 0.6.1.
    "NO_LOOP_EXCEPTION_MSG",
    "PY37",
    "asyncio_current_task",
    "chainmap_context_factory",
    "dict_context_factory",
    "logger",
    "__version__",
)

NAMESPACES = {
    "aioreqctx.web": {
        "CLIENT_CLOSED_REQUEST",
        "CONTEXT_MAPPING",
        "UNHANDLED_ERROR",
        "UNTRUSTED_PEER",
        "AccessLogger",
        "DeadlineObserver",
        "InFlightEntry",
        "InFlightRegistry",
        "RequestEvents",
        "RequestIdMiddleware",
        "RequestObserver",
        "access_logger_for",
        "from_loopback",
        "header_token",
        "level_for_status",
        "message_scope",
        "messages",
        "request_id_middleware",
        "setup",
    },
    "aioreqctx.log": {
        "DebugOnDemand",
        "LogBuffer",
        "RequestContextFilter",
        "add_event_fields",
        "add_request_context",
        "buffering_bound_logger",
        "filter_by_level_or_buffer",
        "format_exception",
        "install_log_record_factory",
        "log_context",
        "request_context_processor",
    },
    "aioreqctx.events": {
        "BufferedCollector",
        "ClientDisconnected",
        "ConnectionCompleted",
        "ConnectionOpened",
        "LifecycleCollector",
        "LifecycleEvent",
        "LoggingCollector",
        "NoopCollector",
        "RequestStarted",
        "ResponseCompleted",
    },
    "aioreqctx.propagation": {
        "DEADLINE_HEADER",
        "ClientPropagation",
        "DeadlineExceeded",
        "JobEvents",
        "JobPropagation",
        "JobScope",
        "deadline_timeout",
    },
}


def test_the_top_level_lists_the_curated_names_grouped_by_layer() -> None:
    assert aioreqctx.__all__ == TOP_LEVEL
    assert len(set(TOP_LEVEL)) == len(TOP_LEVEL)


@pytest.mark.parametrize("name", sorted(NAMESPACES))
def test_each_namespace_lists_its_names(name: str) -> None:
    assert set(importlib.import_module(name).__all__) == NAMESPACES[name]


@pytest.mark.parametrize("module_name", ["aioreqctx", *sorted(NAMESPACES)])
def test_every_listed_name_resolves_and_is_offered_by_dir(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    assert set(module.__all__) <= set(dir(module))


def test_a_top_level_name_from_a_namespace_is_the_namespace_object() -> None:
    for name in TOP_LEVEL:
        for namespace in NAMESPACES:
            module = importlib.import_module(namespace)
            if name in module.__all__:
                assert getattr(aioreqctx, name) is getattr(module, name), (name, namespace)


def test_namespaces_are_reachable_as_attributes_after_a_plain_import() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import aioreqctx\n"
            "print(aioreqctx.log.format_exception.__module__,"
            " aioreqctx.events.NoopCollector.__module__,"
            " aioreqctx.propagation.JobScope.__module__, aioreqctx.web.setup.__module__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [
        "aioreqctx.log.tracebacks",
        "aioreqctx.events",
        "aioreqctx.propagation.jobs",
        "aioreqctx.web.app",
    ]


@pytest.mark.parametrize("module", [aioreqctx, aioreqctx.web, aioreqctx.events])
def test_an_unknown_name_is_an_attribute_error_naming_the_module(module: ModuleType) -> None:
    with pytest.raises(AttributeError, match=f"module '{module.__name__}' has no attribute 'nope'"):
        module.nope  # noqa: B018


@pytest.mark.parametrize("old", ["request_context", "REQUEST_CONTEXT", "json_safe", "JobScope"])
def test_names_that_left_the_top_level_are_gone_from_it(old: str) -> None:
    assert not hasattr(aioreqctx, old)


def test_star_import_gives_exactly_the_listed_names() -> None:
    namespace: dict[str, object] = {}
    exec("from aioreqctx import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(TOP_LEVEL)


def test_no_docs_page_names_a_private_path() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    offending = [page.name for page in pages if re.search(r"aioreqctx\._(?!_)", page.read_text())]
    assert offending == []
