"""``aioreqctx.setup(app, ...)``: everything aioreqctx hooks into one aiohttp application.

In the style of ``aiohttp_session.setup``: the middleware (outermost), the
``on_response_prepare`` handler that labels streaming and WebSocket responses, and the
observers that request events, the in-flight registry and lifecycle events need. Each option
left at its default installs nothing, so the request path costs only what is asked for. Every
option is checked here, against one table, so a mistake is refused before the app serves, by
the option's name. ``task_factory=`` puts a task factory on the loop that serves the app,
for as long as it serves (``factory_while_serving``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .._core.emit import logger
from .._core.factories import TaskFactory
from .._core.options import RULES, Rule, check_all, exactly
from .._core.pool import install_default_executor
from ..events import LifecycleCollector, LifecycleEvent, NoopCollector, as_collector
from ..log.buffer import LogBuffer
from ..log.debug import DebugOnDemand
from .inflight import InFlightRegistry
from .log_buffer import LogLinesObserver
from .middleware import MIDDLEWARE_OPTIONS, RequestIdMiddleware
from .observers import RequestObserver
from .outliving import accepts_seconds, outliving_task_detector
from .request_events import RequestEvents
from .server_events import ServerEvents

MIDDLEWARE: web.AppKey[RequestIdMiddleware] = web.AppKey("aioreqctx.middleware")


def _is_collector(value: Any) -> bool:
    return value is None or callable(value) or callable(getattr(value, "record", None))


OPTIONS: dict[str, Rule] = {
    # setup's own options
    "collector": (_is_collector, "a LifecycleCollector, a function taking one event, or None"),
    "worker_id": (lambda value: value is None or exactly(int)(value), "an int or None"),
    "request_events": (
        lambda value: type(value) is bool or isinstance(value, RequestEvents),
        "True, False or a RequestEvents",
    ),
    "registry": (
        lambda value: value is None or isinstance(value, InFlightRegistry),
        "an InFlightRegistry",
    ),
    "task_factory": (
        lambda value: value is None or callable(value),
        "a task factory (loop, coro, **kwargs) or None",
    ),
    "warn_outliving_tasks": (accepts_seconds, "a number of seconds > 0, or None (off)"),
    "log_buffer": (
        lambda value: value is None or isinstance(value, LogBuffer),
        "an aioreqctx.log.LogBuffer or None",
    ),
    "debug_on_demand": (
        lambda value: value is None or isinstance(value, DebugOnDemand),
        "an aioreqctx.log.DebugOnDemand or None",
    ),
    # RequestIdMiddleware's fields, checked by the rules the middleware itself uses
    **{name: RULES[name] for name in MIDDLEWARE_OPTIONS},
}
"""Every option ``setup`` takes: what it accepts, and how the error describes it."""


def setup(
    app: web.Application,
    *,
    collector: LifecycleCollector | Callable[[LifecycleEvent], None] | None = None,
    worker_id: int | None = None,
    request_events: RequestEvents | bool = False,
    registry: InFlightRegistry | None = None,
    task_factory: TaskFactory | None = None,
    warn_outliving_tasks: float | None = None,
    log_buffer: LogBuffer | None = None,
    debug_on_demand: DebugOnDemand | None = None,
    **options: Any,
) -> RequestIdMiddleware:
    """Install the middleware (outermost) and the ``on_response_prepare`` handler on ``app``.

    Use this rather than the bare middleware when the app streams, serves WebSockets or must
    label aiohttp's own 500 pages. Options are ``RequestIdMiddleware``'s fields, plus
    ``collector`` (lifecycle events, ``aioreqctx.lifecycle``; the default installs nothing)
    and the ``worker_id`` its events carry (default: the process ID), ``request_events``
    (``True`` or a ``RequestEvents``: request_started/finished/failed lines), ``registry``
    (an ``InFlightRegistry`` of the requests in flight) and ``task_factory`` (put on the loop
    that serves the app while it runs, so the tasks handlers spawn go through it, with an
    ``IsolatedThreadPoolExecutor`` as the loop's default executor), ``warn_outliving_tasks``
    (seconds: warn once per coroutine function about a task still running that long after the
    request that started it finished; off by default, 30 is a sensible value),
    ``log_buffer`` (an ``aioreqctx.log.LogBuffer``: each request's DEBUG lines are written
    only if it fails) and ``debug_on_demand`` (an ``aioreqctx.log.DebugOnDemand``: a trusted
    request asking with its header is logged at DEBUG).
    """
    check_all(
        "setup()",
        {
            "collector": collector,
            "worker_id": worker_id,
            "request_events": request_events,
            "registry": registry,
            "task_factory": task_factory,
            "warn_outliving_tasks": warn_outliving_tasks,
            "log_buffer": log_buffer,
            "debug_on_demand": debug_on_demand,
            **options,
        },
        OPTIONS,
    )
    if app.middlewares.frozen:  # frozenlist's documented flag
        raise RuntimeError(
            "aioreqctx.setup() was called on an application that has started (AppRunner.setup() "
            "or web.run_app froze its middlewares and signals): call it while building the app"
        )
    if MIDDLEWARE in app:
        raise RuntimeError(
            "aioreqctx.setup() was already called for this application: call it once, "
            "with every option"
        )
    _refuse_a_second_middleware(app, installed=0)
    observers: list[RequestObserver] = list(options.pop("observers", ()))
    buffer_observer = None
    if log_buffer is not None or debug_on_demand is not None:
        # first: the lines it writes come before other observers' lines
        buffer_observer = LogLinesObserver(log_buffer, debug_on_demand)
        observers.insert(0, buffer_observer)
    if request_events is True:
        request_events = RequestEvents()
    if isinstance(request_events, RequestEvents):
        observers.append(request_events)
    if registry is not None:
        observers.append(registry)
    collector = as_collector(collector)
    events = None
    if not isinstance(collector, NoopCollector):
        events = ServerEvents(collector, worker_id)
        observers.append(events)
    options["observers"] = tuple(observers)
    middleware = RequestIdMiddleware(**options)
    if events is not None:
        events.install(app)
    object.__setattr__(middleware, "_labelled_on_prepare", True)
    app.middlewares.insert(0, middleware)
    app.on_response_prepare.append(middleware.on_response_prepare)
    app.on_startup.append(_refuse_a_second_middleware_at_startup)
    if task_factory is not None:
        app.cleanup_ctx.append(factory_while_serving(task_factory))
    if warn_outliving_tasks is not None:
        app.cleanup_ctx.append(outliving_task_detector(warn_outliving_tasks))
    if buffer_observer is not None:
        app.cleanup_ctx.append(buffer_observer.hook_while_serving)
    app[MIDDLEWARE] = middleware
    return middleware


def _refuse_a_second_middleware(app: web.Application, *, installed: int) -> None:
    """Two ID middlewares would give each request two IDs (events log one, the handler sees
    the other): refused, before or after ``setup`` added its own."""
    found = sum(isinstance(middleware, RequestIdMiddleware) for middleware in app.middlewares)
    if found > installed:
        raise RuntimeError(
            "this application has aioreqctx's RequestIdMiddleware in its middlewares as well as "
            "the one setup() installs, so each request would get two IDs: remove it from "
            "web.Application(middlewares=[...]) and keep setup(app, ...), which installs it"
        )


async def _refuse_a_second_middleware_at_startup(app: web.Application) -> None:
    _refuse_a_second_middleware(app, installed=1)
    _refuse_one_in_a_subapp(app)


def _refuse_one_in_a_subapp(app: web.Application) -> None:
    """aiohttp runs a sub-application's middlewares after its parent's, so an ID middleware
    there would give the sub-application's requests a second ID."""
    for resource in app.router.resources():
        subapp = resource.get_info().get("app")
        if not isinstance(subapp, web.Application):
            continue
        if MIDDLEWARE in subapp or any(
            isinstance(middleware, RequestIdMiddleware) for middleware in subapp.middlewares
        ):
            raise RuntimeError(
                "a sub-application mounted with add_subapp() or add_domain() has aioreqctx's "
                "middleware too (setup() or middlewares=[...]), so its requests would get two "
                "IDs: call setup() on the main application only; its middleware covers every "
                "sub-application"
            )
        _refuse_one_in_a_subapp(subapp)


def factory_while_serving(
    task_factory: TaskFactory,
) -> Callable[[Any], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` entry: ``task_factory`` on the running loop while the app runs.

    A different factory already on the loop is named in a warning and replaced until the app
    stops, then put back. The loop's default executor becomes an ``IsolatedThreadPoolExecutor``
    (and stays: the loop shuts it down when it closes).
    """

    async def install(app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        previous = loop.get_task_factory()
        if previous is not None and previous is not task_factory:
            logger.warning(
                "the loop already has the task factory %s; setup(task_factory=%s) "
                "replaces it while the application runs. To keep both, pass "
                "task_factory=aioreqctx.task_factory_for('copy', inner=<the other factory>)",
                _name_of(previous),
                _name_of(task_factory),
            )
        loop.set_task_factory(task_factory)
        install_default_executor(loop)
        try:
            yield
        finally:
            if loop.get_task_factory() is task_factory:
                loop.set_task_factory(previous)

    return install


def _name_of(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", None)
    name = getattr(factory, "__qualname__", None) or repr(factory)
    return f"{module}.{name}" if module else name
