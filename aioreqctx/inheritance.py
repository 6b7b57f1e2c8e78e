"""How a child task's mapping derives from its parent's: share it, copy it, or layer over it.

Each policy takes the parent's mapping (``None`` when the child has no parent: it was created
outside any task, from a loop callback or by a server for a new connection) and returns the
child's. aiotask-context calls these "context factories"; its two public ones are thin aliases
in ``aioreqctx.compat``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .layered import LayeredContext
from .store import Context

Inherit = Callable[[Context | None], Context]

logger = logging.getLogger("aioreqctx")

# Values deep-copying would return unchanged: the request-ID case copies with one dict() call.
_IMMUTABLE_TYPES = frozenset({str, int, float, bool, bytes, complex, type(None)})
_warned_uncopyable: set[type] = set()


def share(parent: Context | None) -> Context:
    """The child uses the parent's own mapping: writes on either side are seen by both."""
    return {} if parent is None else parent


def copy_of(parent: Context | None) -> Context:
    """The child gets a deep copy taken now: no write or in-place change crosses over later."""
    return {} if parent is None else snapshot(parent)


def layer_over(parent: Context | None) -> Context:
    """The child gets a ChainMap layer: its writes shadow, the parent's later writes show."""
    if parent is None:
        return LayeredContext()
    if isinstance(parent, LayeredContext):
        return parent.new_layer()
    return LayeredContext({}, parent)


def snapshot(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``mapping`` as a dict; immutable values are shared, not copied."""
    copied = dict(mapping)
    if _IMMUTABLE_TYPES.issuperset(map(type, copied.values())):
        return copied
    memo: dict[int, Any] = {}
    for key, value in list(copied.items()):
        if type(value) not in _IMMUTABLE_TYPES:
            copied[key] = _deep_copy_or_share(key, value, memo)
    return copied


def _deep_copy_or_share(key: str, value: Any, memo: dict[int, Any]) -> Any:
    try:
        return copy.deepcopy(value, memo)
    except Exception as error:  # noqa: BLE001 - any failure means "cannot copy": share instead
        if type(value) not in _warned_uncopyable:
            _warned_uncopyable.add(type(value))
            logger.warning(
                "aioreqctx: context value %r of type %s cannot be deep-copied (%s); child tasks "
                "share this object. Store a copyable value to isolate children.",
                key,
                type(value).__qualname__,
                error,
            )
        return value
