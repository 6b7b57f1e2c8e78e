"""How a child task's mapping derives from its parent's: share it, copy it, or layer over it.

Each policy takes the parent's mapping (``None`` when the child has no parent: it was created
outside any task, from a loop callback or by a server for a new connection) and returns the
child's. aiotask-context calls these "context factories"; its two public ones are thin aliases
in ``aioreqctx.compat``.
"""

from __future__ import annotations

from collections.abc import Callable

from .layered import LayeredContext
from .snapshot import snapshot
from .store import Context

Inherit = Callable[[Context | None], Context]


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
    return LayeredContext.over(parent)
