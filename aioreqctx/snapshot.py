"""Deep copies of a context that cost one ``dict()`` call when every value is immutable.

``copying_task_factory`` promises aiotask-context's deep-copy semantics (a child's in-place
change to a list never reaches its parent), but ``copy.deepcopy`` of a whole mapping costs
microseconds per task, and a request context usually holds only strings and numbers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("aioreqctx")

# Values that deep-copying would return unchanged.
_IMMUTABLE_TYPES = frozenset({str, int, float, bool, bytes, complex, type(None)})
_warned_uncopyable: set[type] = set()


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
