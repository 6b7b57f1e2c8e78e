"""Where the context of the running unit of work lives, and the calls that read and write it.

One ``ContextVar`` holds the current mapping. asyncio copies a task's ``contextvars.Context``
into every task, callback and ``to_thread`` call it starts, so the mapping reaches all of
them without a task factory; the factories only decide whether a child task shares the
mapping, copies it or layers over it. Holding one mapping (instead of one ContextVar per key,
as ``structlog.contextvars`` does) keeps ``get`` at a single ContextVar lookup and lets
``task.context`` be the very object that ``get``/``set`` use.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from threading import get_ident
from types import MappingProxyType
from typing import Any

from .. import keys
from .layered import _lineage_of_root as lineages
from .layered import note_write
from .snapshot import snapshot
from .sync_or_async import SyncOrAsync

Context = MutableMapping[str, Any]
"""A context: the mapping of keys to values that ``get`` reads and ``set`` writes (a plain
``dict``, or a ``LayeredContext`` under ``chainmap_task_factory``)."""

NO_LOOP_EXCEPTION_MSG = "No event loop found, key {} couldn't be set"
"""How the ``ValueError`` of ``set`` and ``clear`` begins where there is no context to write
into (aiotask-context's message, formatted with the key, so code matching on it still works)."""

current_mapping: ContextVar[Context] = ContextVar("aioreqctx.current_mapping")

untasked_writes: ContextVar[Context] = ContextVar("aioreqctx.untasked_writes")
"""The mapping that code running outside any task (a thread, a loop callback) may write into:
the one a ``scope`` opened there, or the calling task's own for a thread started with
``run_in_executor``/``bind_context``. Any other mapping such code sees belongs to someone else
(the start-up values every request copies, a request's), so its first write copies it."""

_NOTHING: Mapping[str, Any] = MappingProxyType({})
_UNSET = object()

current_task_of: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
if sys.version_info >= (3, 12):
    current_task_of = asyncio.current_task
else:  # 3.11's current_task() is Python around this dict; reading it directly is ~10x cheaper.
    current_task_of = getattr(asyncio.tasks, "_current_tasks").get  # noqa: B009


class _NoLoop:
    _thread_id = None


cached_loop: Any = _NoLoop
"""3.11: the asyncio loop last found running, read inline by ``set``; see ``running_loop``."""

CACHING_LOOPS = sys.version_info < (3, 12)
"""3.11's C lookup calls getpid() on every call (140-190 ns, most of what ``set`` cost there),
so that a forked child never sees its parent's loop; from 3.12 on it is a cheap read."""

_BaseEventLoop = asyncio.BaseEventLoop
_lookup = asyncio._get_running_loop
_other_loop: object = None


def _find_loop() -> asyncio.AbstractEventLoop | None:
    """The C lookup, its answer cached when it is an asyncio loop (3.11). Other loops (uvloop's)
    keep their thread private: they take the lookup each time, and skip the type test after
    the first."""
    loop = _lookup()
    if loop is not _other_loop and loop is not None:
        _remember(loop)
    return loop


def _remember(loop: asyncio.AbstractEventLoop) -> None:
    global cached_loop, _other_loop
    if isinstance(loop, _BaseEventLoop):
        cached_loop = loop
    else:
        _other_loop = loop


def running_loop() -> asyncio.AbstractEventLoop | None:
    """``asyncio._get_running_loop()``, on 3.11 answered from ``cached_loop`` while it runs here.

    An asyncio loop records the thread running it in ``_thread_id`` (the one private attribute
    used, and only here and in ``set``) from the start of ``run_forever`` to its end: while that
    is this thread, it is this thread's running loop, whichever thread cached it. A fork
    empties the cache (the child's thread keeps its ident).
    """
    loop = cached_loop
    if loop._thread_id == get_ident():
        return loop  # type: ignore[no-any-return]
    return _find_loop()


def _forget_loop() -> None:
    global cached_loop
    cached_loop = _NoLoop


if not CACHING_LOOPS:
    running_loop = _find_loop = asyncio._get_running_loop
else:
    os.register_at_fork(after_in_child=_forget_loop)


def running_task() -> asyncio.Task[Any] | None:
    """The task running in this thread, or None (no loop, or a plain callback)."""
    loop = running_loop()
    return None if loop is None else current_task_of(loop)


def get(key: str, default: Any = None) -> Any:
    """The value of ``key`` in the current context, or ``default``; never raises."""
    value = current_mapping.get(_NOTHING).get(key, default)
    if value is default:  # a miss (or a stored default): the only case that costs more
        return _get_assigned(key, default)
    return value


def _get_assigned(key: str, default: Any) -> Any:
    """A miss may mean the program assigned ``task.context`` (aiotask-context's way to seed a
    task), which no ContextVar sees: take that mapping over and read it."""
    mapping = task_mapping()
    return default if mapping is None else mapping.get(key, default)


def task_mapping() -> Context | None:
    """The mapping of the running unit of work, for code that keeps it and writes into it.

    A task with a mapping of its own that its Context does not hold yet (a factory's child
    still reading its parent's values, a mapping assigned to ``task.context``) takes it over
    now; otherwise this is the mapping ``get`` reads.
    """
    visible = current_mapping.get(None)
    task = running_task()
    owned: Context | None = None if task is None else _context_attribute(task)
    if owned is None or owned is visible:
        return visible
    current_mapping.set(owned)
    return owned


def set(key: str, value: Any) -> None:  # noqa: A001 - the aiotask-context name
    """Store ``value`` under ``key`` in the current task's context.

    A task that no factory made (aiohttp's request tasks, ``asyncio.Task(...)``, the stdlib
    eager factory) reads the mapping it inherited; its first write gives it its own copy, so the
    write never reaches the parent or other requests.
    """
    # The common case inline (the running task owns the mapping it sees): set runs in hot code.
    mapping = current_mapping.get(None)
    loop = cached_loop  # running_loop() inline
    if not CACHING_LOOPS or loop._thread_id != get_ident():
        loop = _lookup()  # _find_loop() inline: uvloop's loops on 3.11 take this path each time
        if CACHING_LOOPS and loop is not _other_loop and loop is not None:
            _remember(loop)
    try:
        owned = current_task_of(loop).context is mapping  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):  # no loop, no task, or a mapping only inherited
        owned = False
    if mapping is None or not owned:
        mapping = _writable_mapping(key)
    mapping[key] = value
    if lineages and id(mapping) in lineages:  # layers over this mapping: refresh their views
        note_write(mapping)


def clear() -> None:
    """Remove every key from the current context (only the child's own layer for a ChainMap)."""
    mapping = _writable_mapping("(clear)")
    mapping.clear()
    note_write(mapping)


class LentSnapshot(dict[str, Any]):
    """What a task's Context holds after ``copying_task_factory`` spawned from it: a copy of the
    task's own mapping (immutable values only) that its children read until they write.

    Children made then all inherit this one binding instead of each getting a Context that holds
    its own copy (two more objects per task for the garbage collector to walk). The task's own
    writes through aioreqctx first rebind its own mapping, so the snapshot never changes.
    """

    __slots__ = ()


class _Handoff(threading.local):
    """The mapping an eager task's factory prepared, while the task's first step runs inside
    its constructor, before the factory can set ``task.context``. Only the task running
    ``coro`` may claim it: another eager task started from that first step may not."""

    coro: object = None
    mapping: Context | None = None


handoff = _Handoff()


def _context_attribute(task: asyncio.Task[Any]) -> Any:
    """``task.context``, claiming the handed-off mapping if ``task`` is the eager task it is for."""
    owned = getattr(task, "context", None)
    if owned is None and handoff.coro is not None and task.get_coro() is handoff.coro:
        task.context = owned = handoff.mapping  # type: ignore[attr-defined]
    return owned


def own_mapping(task: asyncio.Task[Any]) -> Context:
    """The running ``task``'s own mapping, which its writes, threads and sharing children use.

    A task that only inherited a mapping (no factory made it) takes a copy of it now (copy on
    first write), so nothing it writes reaches the task or the start-up code it inherited from.
    A mapping the program assigned to ``task.context`` (aiotask-context's idiom) wins over the
    one the task inherited.
    """
    visible = current_mapping.get(None)
    owned: Context | None = _context_attribute(task)
    if owned is None:
        owned = {} if visible is None else snapshot(visible)
        task.context = owned  # type: ignore[attr-defined]
    if owned is not visible:
        current_mapping.set(owned)
    return owned


def _writable_mapping(key: str) -> Context:
    mapping: Context | None = current_mapping.get(None)
    task = running_task()
    if task is None:
        if mapping is None:
            raise ValueError(
                NO_LOOP_EXCEPTION_MSG.format(key)
                + ": there is no running task and no aioreqctx context here. Call it from a "
                "coroutine, or open one with `with aioreqctx.scope(): ...`."
            )
        if untasked_writes.get(None) is not mapping:  # not this code's to write: copy it
            mapping = snapshot(mapping)
            current_mapping.set(mapping)
            untasked_writes.set(mapping)
        return mapping
    owned: bool = getattr(task, "context", None) is mapping
    if mapping is None or not owned:
        return own_mapping(task)
    return mapping


def enter(mapping: Context) -> None:
    """Make ``mapping`` the context of the running task from now until the task ends.

    For a task that starts a unit of work, such as an aiohttp request task: unlike ``scope``
    nothing is restored, so code that runs after the caller in the same task (aiohttp's
    ``on_response_prepare`` and access logger) still sees it.
    """
    current_mapping.set(mapping)
    task = running_task()
    if task is not None:
        task.context = mapping  # type: ignore[attr-defined]


VarValues = tuple[tuple[ContextVar[Any], Any], ...]
"""Other ContextVars a block gives values to, with those values."""


class scope(SyncOrAsync[Context]):  # noqa: N801 - used like contextlib's lower-case context managers
    """A fresh, isolated context for one unit of work, restored to the previous one on exit.

    Works as ``with`` and ``async with``; yields the new mapping. Inside a task it also points
    ``task.context`` at the new mapping for the duration, as the factories' contract promises.
    ``request_id=`` is the request ID (stored under ``aioreqctx.REQUEST_ID``, the key log lines
    read it from), as ``scope({aioreqctx.REQUEST_ID: ...})``.
    """

    __slots__ = ("_initial", "_previous_attr", "_task", "_token", "_untasked_token")

    _seed: Callable[[Mapping[str, Any]], Context] = dict
    """What makes the block's mapping from ``_initial`` (``SeededScope`` overrides it)."""

    def __init__(self, initial: Mapping[str, Any] | None = None, /, **values: Any) -> None:
        self._initial = {**(initial or {}), **values}
        if "request_id" in values:  # the log field's name: meant as the request ID
            request_id = self._initial.pop("request_id")
            if self._initial.setdefault(keys.REQUEST_ID, request_id) != request_id:
                raise ValueError(
                    "scope(): request_id= and aioreqctx.REQUEST_ID "
                    f"({keys.REQUEST_ID!r}) both given, with different values"
                )
        self._token: Token[Context] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._previous_attr: Any = _UNSET
        self._untasked_token: Token[Context] | None = None

    def __enter__(self) -> Context:
        if self._token is not None:
            raise RuntimeError("this aioreqctx.scope is already open; create a new one per use")
        mapping = self._seed(self._initial)
        self._token = current_mapping.set(mapping)
        self._task = running_task()
        if self._task is not None:
            previous = _context_attribute(self._task)
            self._previous_attr = _UNSET if previous is None else previous
            self._task.context = mapping  # type: ignore[attr-defined]
        else:  # a thread's own unit of work (a Celery task): its writes go into this mapping
            self._untasked_token = untasked_writes.set(mapping)
        return mapping

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None, "scope.__exit__ without __enter__"
        current_mapping.reset(self._token)
        self._token = None
        if self._untasked_token is not None:
            untasked_writes.reset(self._untasked_token)
            self._untasked_token = None
        if self._task is not None:
            if self._previous_attr is _UNSET:
                del self._task.context  # type: ignore[attr-defined]
            else:
                self._task.context = self._previous_attr  # type: ignore[attr-defined]
        self._task = None


class SeededScope(scope):
    """A ``scope`` whose mapping ``copy(initial)`` makes, in which each variable of
    ``var_values`` holds its value: for values worked out once and opened by many blocks."""

    __slots__ = ("_copy", "_var_tokens", "_var_values")

    def __init__(
        self,
        initial: Mapping[str, Any],
        copy: Callable[[Mapping[str, Any]], Context],
        var_values: VarValues = (),
    ) -> None:
        self._initial = initial  # type: ignore[assignment]
        self._copy = copy
        self._var_values = var_values
        self._var_tokens: list[tuple[ContextVar[Any], Token[Any]]] | None = None
        self._token = self._task = self._untasked_token = None
        self._previous_attr = _UNSET

    def _seed(self, initial: Mapping[str, Any]) -> Context:
        """``scope.__enter__`` calls it first: the variables are set here, with no call more."""
        for var, value in self._var_values:
            if var.get(_UNSET) is not value:  # usually none differs: nothing to set back
                if self._var_tokens is None:
                    self._var_tokens = []
                self._var_tokens.append((var, var.set(value)))
        return self._copy(initial)

    def __exit__(self, *exc_info: object) -> None:
        if self._var_tokens is not None:
            for var, token in reversed(self._var_tokens):
                var.reset(token)
            self._var_tokens = None
        scope.__exit__(self, *exc_info)
