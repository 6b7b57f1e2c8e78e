"""Deep copies of a context that cost one ``dict()`` call when every value is immutable.

``copying_task_factory`` promises aiotask-context's deep-copy semantics (a child's in-place
change to a list never reaches its parent), but ``copy.deepcopy`` of a whole mapping costs
microseconds per task, and a request context usually holds only strings and numbers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("aioreqctx")

COPIED_AS_IS: set[type] = {str, int, float, bool, bytes, complex, type(None)}
"""The types a copy shares: those whose deep copy would be the value itself (immutable ones), and
those whose deep copy is the value itself by design (one record per unit of work, such as its
OperationTimings). Added to in place, so a module that imported it sees every later addition."""
_warned_uncopyable: set[type] = set()


def shared_when_copied(kind: type[T]) -> type[T]:
    """Class decorator for a type whose ``__deepcopy__`` returns the value itself: a copied
    context shares it, so a context holding one still copies in one ``dict()`` call."""
    COPIED_AS_IS.add(kind)
    return kind


def flat_copy(mapping: Mapping[str, Any]) -> dict[str, Any] | None:
    """``dict(mapping)`` when every value is in ``COPIED_AS_IS`` (the copy is then already deep),
    else None."""
    copied = dict(mapping)
    return copied if COPIED_AS_IS.issuperset(map(type, copied.values())) else None


def snapshot(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``mapping`` as a dict; immutable values are shared, not copied.

    Values are copied one key at a time with one memo, so two keys that refer to the same
    object still do in the copy. A value that cannot be deep-copied is shared instead, and the
    memo entries its failed attempt added (half-built copies) are thrown away with it, and
    only those, only then: another key that refers to the same object then fails too and
    shares the original, rather than getting an empty shell. The memo is never copied, so a
    snapshot costs one deep copy however many mutable values it holds.
    """
    flat = flat_copy(mapping)
    if flat is not None:
        return flat
    copied = dict(mapping)
    memo: dict[int, Any] = {}
    for key, value in copied.items():
        if type(value) not in COPIED_AS_IS:
            size = len(memo)
            try:
                copied[key] = copy.deepcopy(value, memo)
            except Exception as error:  # noqa: BLE001 - any failure means "cannot copy": share
                _roll_back(memo, size)
                _warn_shared(key, value, error)
    return copied


def _roll_back(memo: dict[int, Any], size: int) -> None:
    """Forget what a failed copy added to ``memo`` (its newest entries: a deep copy only ever
    adds to it), so no later key gets a half-built copy; the rest of the table is untouched."""
    for added in list(islice(reversed(memo), len(memo) - size)):
        del memo[added]


def _warn_shared(key: str, value: Any, error: Exception) -> None:
    if type(value) not in _warned_uncopyable:
        _warned_uncopyable.add(type(value))
        logger.warning(
            "context value %r of type %s cannot be deep-copied (%s); child tasks "
            "share this object. Store a copyable value to isolate children.",
            key,
            type(value).__qualname__,
            error,
        )
