"""A ChainMap whose lookups stay O(1) however deep the chain of spawned tasks grows.

``chainmap_task_factory`` gives every child task a new layer over its parent's mapping: the
child's writes shadow the parent's values and the parent's later writes stay visible to the
child. A plain ``ChainMap`` walks every layer on each lookup (about 0.5 us at depth 10), so each
layer here caches its flattened view and rebuilds it only after a write made through aioreqctx
(``aioreqctx.set``/``clear`` or any mutation of a ``LayeredContext``). Every such write ticks a
process-wide write clock; a cache remembers the tick it was built at.
"""

from __future__ import annotations

import itertools
from collections import ChainMap
from collections.abc import Iterator, MutableMapping
from typing import Any

_ticks = itertools.count(1)
# One slot, replaced (never incremented) by each write: ``next()`` on a count is atomic, so two
# racing writers on a free-threaded build still leave a value no stale cache has recorded.
_write_clock = [0]


def note_write() -> None:
    """Invalidate every cached view; called after any write that a layer may be built over."""
    _write_clock[0] = next(_ticks)


class LayeredContext(ChainMap[str, Any]):
    """The mapping a task gets from ``chainmap_task_factory``: a ``ChainMap`` with cached reads."""

    _cache: tuple[int, dict[str, Any]]

    def __init__(self, *maps: MutableMapping[str, Any]) -> None:
        super().__init__(*maps)
        self._cache = (-1, {})

    def new_layer(self) -> LayeredContext:
        """An empty child layer over this one; cheaper than ``new_child()`` on the spawn path."""
        child = LayeredContext.__new__(LayeredContext)
        child.maps = [{}, *self.maps]
        child._cache = (-1, {})
        return child

    def _flat(self) -> dict[str, Any]:
        built_at, flat = self._cache
        clock = _write_clock[0]
        if built_at != clock:
            flat = {}
            for layer in reversed(self.maps):
                flat.update(layer)
            self._cache = (clock, flat)
        return flat

    def get(self, key: str, default: Any = None) -> Any:
        return self._flat().get(key, default)

    def __getitem__(self, key: str) -> Any:
        flat = self._flat()
        if key in flat:
            return flat[key]
        return self.__missing__(key)

    def __contains__(self, key: object) -> bool:
        return key in self._flat()

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())

    def __setitem__(self, key: str, value: Any) -> None:
        self.maps[0][key] = value
        note_write()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        note_write()

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        note_write()
        return item

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        note_write()
        return value

    def clear(self) -> None:
        self.maps[0].clear()
        note_write()

    def __ior__(self, other: Any) -> LayeredContext:  # type: ignore[override, misc]
        self.maps[0].update(other)
        note_write()
        return self
