"""structlog's side of log buffering, for both documented set-ups.

Pure structlog: ``buffering_bound_logger(logging.INFO)`` where the set-up has
``make_filtering_bound_logger(logging.INFO)``; its below-level methods keep lines for a
buffering request instead of doing nothing. Outside a buffering request such a call costs one
ContextVar lookup more than structlog's no-op; inside one, the event is processed (timestamped,
its fields added, rendered) when it is logged and its output is kept.

Through stdlib logging: ``filter_by_level_or_buffer`` where the set-up has
``structlog.stdlib.filter_by_level``; the stdlib logger then keeps the line (``buffer.py``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger

from .buffer import active_lines

_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


_LEVEL_OF = {name: level for level, name in _NAMES.items()} | {
    "exception": logging.ERROR,
    "warn": logging.WARNING,
    "fatal": logging.CRITICAL,
}


def filter_by_level_or_buffer(
    logger: logging.Logger, method_name: str, event_dict: EventDict
) -> EventDict:
    """``structlog.stdlib.filter_by_level``, letting below-level events through for a buffering
    request (the stdlib logger keeps them); the first processor, as that one is."""
    if not logger.disabled:
        level = _LEVEL_OF.get(method_name, logging.CRITICAL)
        if level >= logger.getEffectiveLevel():
            return event_dict
        lines = active_lines.get()
        if lines is not None and lines.wants(level):
            return event_dict
    raise structlog.DropEvent


def _interpolated(event: str, args: tuple[Any, ...]) -> str:
    return event % args if args else event


def _kept_method(level: int, name: str) -> Callable[..., None]:
    def kept(self: Any, event: str, *args: Any, **kw: Any) -> None:
        lines = active_lines.get()
        if lines is None or not lines.wants(level):
            return
        if lines.direct:  # debug on demand: logged as any enabled line
            self._proxy_to_logger(name, _interpolated(event, args), **kw)
            return
        kw["buffered"] = True
        try:
            out_args, out_kw = self._process_event(name, _interpolated(event, args), kw)
        except structlog.DropEvent:
            return
        size = sum(len(arg) for arg in out_args if isinstance(arg, str | bytes)) + 200
        emit = getattr(self._logger, name)
        if out_kw:
            emit = functools.partial(emit, **out_kw)
        lines.keep(emit, tuple(out_args), size)

    kept.__name__ = name
    return kept


def _failing_method(parent: Callable[..., Any]) -> Callable[..., Any]:
    """An ERROR-or-above method: the request failed, so its kept lines are written first."""

    @functools.wraps(parent)
    def failing(self: Any, event: str, *args: Any, **kw: Any) -> Any:
        lines = active_lines.get()
        if lines is not None and not lines.closed:
            lines.fail()
        return parent(self, event, *args, **kw)

    return failing


@functools.cache
def buffering_bound_logger(min_level: int) -> type[FilteringBoundLogger]:
    """``make_filtering_bound_logger(min_level)``, with log buffering for levels below it.

    ``structlog.configure(wrapper_class=aioreqctx.log.buffering_bound_logger(logging.INFO))``.
    A kept line carries ``buffered=True``; ``log(level, ...)`` and the async methods are not
    buffered.
    """
    if min_level not in _NAMES:
        raise ValueError(
            f"buffering_bound_logger: min_level must be one of {sorted(_NAMES)}, not {min_level!r}"
        )
    base = structlog.make_filtering_bound_logger(min_level)
    methods: dict[str, Any] = {}
    for level, name in _NAMES.items():
        if level < min_level:
            methods[name] = _kept_method(level, name)
        elif level >= logging.ERROR:
            methods[name] = _failing_method(getattr(base, name))
    # base.exception calls self.error, which is the failing one
    if "warning" in methods:
        methods["warn"] = methods["warning"]
    if "info" in methods:
        methods["msg"] = methods["info"]
    methods["fatal"] = methods["critical"]
    return type(f"Buffering{base.__name__}", (base,), methods)
