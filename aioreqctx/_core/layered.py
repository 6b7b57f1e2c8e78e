"""A ChainMap whose lookups stay O(1) however deep the chain of spawned tasks grows.

``chainmap_task_factory`` gives every child task a new layer over its parent's mapping: the
child's writes shadow the parent's values and the parent's later writes stay visible to the
child. A plain ``ChainMap`` walks every layer on each lookup (about 0.5 us at depth 10), so each
layer here caches its flattened view and rebuilds it only after a write in its *lineage*: its
root mapping (usually a request's plain dict) and every layer built over it. A write in another
lineage (another request's) never makes these layers rebuild, so a read costs the same at any
depth whatever the rest of the process does.

A layer's writes advance its lineage's clock directly. A root is a plain dict that knows nothing
of its layers, so the lineage is registered under the root's ``id()`` when the first layer is
built over it, and ``note_write(root)`` (called by ``aioreqctx.set``/``clear`` and
``RequestContext`` after writing a plain mapping) advances it from there.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import ChainMap
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

# Ticks are unique process-wide and a clock is replaced (never incremented): ``next()`` on a
# count is atomic, so two racing writers on a free-threaded build still leave a value that no
# stale cache has recorded.
_ticks = itertools.count(1)


class Lineage:
    """The write clock shared by a root mapping and every layer built over it."""

    __slots__ = ("__weakref__", "root", "tick")

    def __init__(self, root: object) -> None:
        self.root = root  # while the lineage lives, no other object can take ``id(root)``
        self.tick = 0


class _Uncached(Lineage):
    """For a hand-built chain holding another ``LayeredContext`` above its root: no one clock
    covers every write it can see, so each read walks the layers, as a plain ChainMap does."""

    __slots__ = ()

    @property
    def tick(self) -> int:
        return next(_ticks)

    @tick.setter
    def tick(self, value: int) -> None:
        """Writes through such a chain need no clock: its reads never use a cached view."""


_UNCACHED = _Uncached(None)
_new_object = object.__new__
# A tick that no clock ever shows: a new layer builds its view on its first read.
_UNBUILT: tuple[int, dict[str, Any]] = (-1, {})

# id(root) -> its lineage, while it lives: an entry leaves when its lineage dies (with the last
# layer over its root), so ``set`` on a mapping with no layers over it finds the registry empty.
_lineage_of_root: dict[int, _RootRef] = {}
# Reentrant: a lineage can die (and its entry leave) during a collection that a registration
# in the same thread triggers while holding it.
_registry_lock = threading.RLock()


class _RootRef(weakref.ref[Lineage]):
    """A registry entry, which knows the key it is filed under."""

    __slots__ = ("key",)
    key: int

    def __new__(cls, lineage: Lineage, key: int) -> _RootRef:
        entry = super().__new__(cls, lineage, _forget)
        entry.key = key
        return entry


def _forget(entry: weakref.ref[Lineage]) -> None:
    """The lineage of ``entry`` died: remove it, unless its key has been filed anew meanwhile."""
    assert isinstance(entry, _RootRef)
    with _registry_lock:
        if _lineage_of_root.get(entry.key) is entry:
            del _lineage_of_root[entry.key]


def note_write(mapping: object) -> None:
    """``mapping`` was just written: refresh the views of the layers built over it, if any."""
    if _lineage_of_root:  # no ChainMap anywhere: the dict-mode ``set`` pays one test
        ref = _lineage_of_root.get(id(mapping))
        if ref is not None and (lineage := ref()) is not None:
            lineage.tick = next(_ticks)


def lineage_of(root: object) -> Lineage:
    """The lineage of the layers over ``root``, registered when the first one is built."""
    ref = _lineage_of_root.get(id(root))
    lineage = None if ref is None else ref()
    if lineage is not None:
        return lineage
    with _registry_lock:
        ref = _lineage_of_root.get(id(root))
        lineage = None if ref is None else ref()
        if lineage is None:
            lineage = Lineage(root)
            _lineage_of_root[id(root)] = _RootRef(lineage, id(root))
    return lineage


class LayeredContext(ChainMap[str, Any]):
    """The mapping a task gets from ``chainmap_task_factory``: a ``ChainMap`` with cached reads.

    A layer the factory makes holds no ``maps`` list and no dict of its own until something
    needs them (a write, or ``maps`` itself): until then it reads the view of the layer or
    mapping below it, so a child that never writes costs the collector one object. Built by
    hand (``LayeredContext(*maps)``), it joins the lineage of its last mapping, so
    ``new_child()``, ``parents`` and ``copy()`` stay in their original's lineage.
    """

    _lineage: Lineage
    _cache: tuple[int, dict[str, Any]] = _UNBUILT  # until the first read builds the view
    _maps: list[MutableMapping[str, Any]] | None = None  # None: nothing written here yet
    _below: MutableMapping[str, Any]  # while ``_maps`` is None: a LayeredContext, or the root

    def __init__(self, *maps: MutableMapping[str, Any]) -> None:
        super().__init__(*maps)
        root = self.maps[-1]
        if any(isinstance(layer, LayeredContext) for layer in self.maps[:-1]):
            self._lineage = _UNCACHED
        elif isinstance(root, LayeredContext):
            self._lineage = root._lineage
        else:
            self._lineage = lineage_of(root)

    @property
    def maps(self) -> list[MutableMapping[str, Any]]:
        """ChainMap's list of mappings, this layer's own first (made on first use)."""
        maps = self._maps
        return self._materialize() if maps is None else maps

    @maps.setter
    def maps(self, maps: list[MutableMapping[str, Any]]) -> None:
        self._maps = maps

    def _materialize(self) -> list[MutableMapping[str, Any]]:
        below = self._below
        maps = self._maps = [{}, *below.maps] if isinstance(below, LayeredContext) else [{}, below]
        del self._below
        return maps

    @staticmethod
    def over(root: MutableMapping[str, Any]) -> LayeredContext:
        """An empty layer over a plain mapping, in that mapping's lineage (the spawn path)."""
        layer: LayeredContext = _new_object(LayeredContext)
        layer._below = root
        layer._lineage = lineage_of(root)
        return layer

    def new_layer(self) -> LayeredContext:
        """An empty child layer over this one; cheaper than ``new_child()`` on the spawn path."""
        if self._maps is None:  # a child reads through one layer at most, never a chain of them
            self._materialize()
        # object.__new__ directly: looking ``__new__`` up through ChainMap's ABC costs 3.13 ~170 ns.
        layer: LayeredContext = _new_object(LayeredContext)
        layer._below = self
        layer._lineage = self._lineage
        return layer

    def _flat(self) -> Mapping[str, Any]:
        if self._maps is None and type(self._below) is LayeredContext:
            return self._below._flat()  # a child with nothing of its own reads its parent's view
        # (``type() is``: ``isinstance`` through ChainMap's ABC is slow; a subclass below reads
        # correctly as a root mapping would, only slower)
        built_at, flat = self._cache
        tick = self._lineage.tick
        if built_at != tick:
            flat = {}
            for layer in reversed(self._maps or [self._below]):
                flat.update(layer)
            self._cache = (tick, flat)
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

    def __bool__(self) -> bool:  # ChainMap asks `maps`, which would make a lazy layer its own
        return bool(self._flat())

    def __setitem__(self, key: str, value: Any) -> None:
        self.maps[0][key] = value
        self._lineage.tick = next(_ticks)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._lineage.tick = next(_ticks)

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._lineage.tick = next(_ticks)
        return item

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._lineage.tick = next(_ticks)
        return value

    def clear(self) -> None:
        self.maps[0].clear()
        self._lineage.tick = next(_ticks)

    def __ior__(self, other: Any) -> LayeredContext:  # type: ignore[override, misc]
        self.maps[0].update(other)
        self._lineage.tick = next(_ticks)
        return self
