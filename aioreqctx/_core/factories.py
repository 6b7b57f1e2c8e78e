"""Task factories that give each spawned task its context, on every asyncio from 3.11 to 3.14.

What ``loop.create_task`` hands a factory has changed from release to release (platform notes
§1.1): nothing, ``context=`` only when given, ``name=`` (3.13.3 and 3.14), ``eager_start=``
(3.14, aiohttp 3.14's connection tasks), and uvloop passes ``context=None`` and, on 3.13+,
``eager_start=None`` on every call. So a factory takes ``(loop, coro, **kwargs)``, treats
``None`` as "not given" and forwards the rest to the task it builds.

The child's mapping is installed before the task is built (a ``ContextVar`` set/reset around
the constructor, or a copied ``Context`` passed to it), so even an eager task's first step,
which runs inside the constructor, already sees it.

How a child's mapping derives from its parent's is one of three policies (``share``,
``copy_of``, ``layer_over``; aiotask-context calls them "context factories" and
``aioreqctx.compat`` aliases its two). ``loop_factory`` puts a factory on the loop that
``asyncio.run``/``asyncio.Runner`` create, main task included; ``aioreqctx.setup(app,
task_factory=...)`` does it for an aiohttp application while it serves.
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import sys
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context as VarContext
from types import CodeType
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

from .layered import LayeredContext
from .pool import install_default_executor
from .snapshot import flat_copy, snapshot
from .store import (
    Context,
    LentSnapshot,
    current_mapping,
    current_task_of,
    handoff,
    own_mapping,
)

EAGER_TASKS_SUPPORTED = sys.version_info >= (3, 12)
"""Whether ``task_factory_for(..., eager=True)`` can start tasks eagerly (Python 3.12+)."""

T = TypeVar("T")
if sys.version_info >= (3, 12):
    CoroutineLike: TypeAlias = Coroutine[Any, Any, T]
else:  # generator-based coroutines are still accepted by asyncio.Task on 3.11
    CoroutineLike: TypeAlias = Generator[Any, None, T] | Coroutine[Any, Any, T]

Inherit = Callable[[Context | None], Context]
"""A policy: the child's mapping from the parent's (``None`` when the child has no parent: made
outside any task, from a loop callback, or by a server for a new connection)."""


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
    if type(parent) is LayeredContext or isinstance(parent, LayeredContext):  # ABC check: slow
        return parent.new_layer()
    return LayeredContext.over(parent)


Mode = Literal["share", "copy", "chain"]
_POLICIES: dict[Mode, Inherit] = {
    "share": share,
    "copy": copy_of,
    "chain": layer_over,
}


TaskFactoryT = TypeVar("TaskFactoryT", bound=Callable[..., Any])


class TaskFactory(Protocol):
    """What ``loop.set_task_factory`` accepts."""

    def __call__(
        self, loop: asyncio.AbstractEventLoop, coro: CoroutineLike[T], /, **kwargs: Any
    ) -> asyncio.Future[T]: ...


# What uvloop passes on every create_task() that gave no options (3.11/3.12, then 3.13+).
_NOTHING_GIVEN = ({"context": None}, {"context": None, "eager_start": None})

_dispatchers: set[CodeType] = set()
_Task = asyncio.Task

PLAIN_FACTORIES: set[object] = {None}
"""Factories (as ``loop.get_task_factory()`` returns them; None for none) that give a task passed
``context=`` a plain ``asyncio.Task`` in that Context, owning the mapping the Context holds, as if
there were no factory: ``detached()`` then builds its task itself and skips the factory's work."""


def plain_task_factory(factory: TaskFactoryT) -> TaskFactoryT:
    """Add ``factory`` to ``PLAIN_FACTORIES`` (any ``Inherit`` policy with no options is)."""
    PLAIN_FACTORIES.add(factory)
    return factory


class _Inherit:
    """The child gets no mapping of its own: it reads what its Context holds, copying on write."""


INHERIT = _Inherit()


def register_dispatcher(function: Callable[..., Coroutine[Any, Any, Any]]) -> None:
    """Mark ``function``'s tasks as dispatchers of independent units of work.

    A server's connection task (aiohttp's ``RequestHandler.start``) starts one task per request;
    under ``task_factory`` those would share the connection's mapping, so whatever one request
    wrote before its context existed would reach the next request on the connection. A
    dispatcher never owns a mapping and its children never share one: each child reads what it
    inherited (the values of the code that started the server) and copies on its first write.
    """
    _dispatchers.add(function.__code__)


def _is_dispatcher(coro: object) -> bool:
    return getattr(coro, "cr_code", None) in _dispatchers


def _parent_mapping(task: asyncio.Task[Any] | None, coro: object) -> Context | _Inherit | None:
    """The mapping a new task derives from, when the creating task does not plainly own one.

    Outside any task (a loop callback, ``run_until_complete``) a task whose Context holds no
    mapping starts a fresh one, as in aiotask-context; one whose Context holds a mapping (a
    server's connection made where the server was started, a callback scheduled by a request)
    reads it and copies on write, as if no factory had made it.
    """
    if task is None:
        if current_mapping.get(None) is None and not _is_dispatcher(coro):
            return None
        return INHERIT
    if _is_dispatcher(task.get_coro()):
        return INHERIT
    return own_mapping(task)


def spawn(
    loop: asyncio.AbstractEventLoop,
    coro: CoroutineLike[T],
    kwargs: dict[str, Any],
    inherit: Inherit,
    *,
    eager: bool = False,
    inner: TaskFactory | None = None,
) -> asyncio.Future[T]:
    """Build the task for ``coro`` with its context derived from the caller's by ``inherit``."""
    if (kwargs and kwargs not in _NOTHING_GIVEN) or eager or inner is not None:
        return _spawn_with_options(loop, coro, kwargs, inherit, eager=eager, inner=inner)
    # The call almost every task goes through: kept to one frame and the policy's call.
    try:
        parent_task = current_task_of(loop)
        parent = current_mapping.get(None)
        try:
            owned = parent_task.context is parent  # type: ignore[union-attr]
        except AttributeError:  # no task, or one that only inherited its mapping
            owned = False
        if not owned:
            own: Context | None = getattr(parent_task, "context", None)
            lent = type(parent) is LentSnapshot and inherit is copy_of
            if lent and type(own) is dict and parent == own:  # what earlier children read: this too
                return _lazy_task(loop, coro, dict(own))
            resolved = _parent_mapping(parent_task, coro)
            if resolved is INHERIT:
                return _Task(coro, loop=loop)
            parent = resolved  # type: ignore[assignment]
        if parent is None or inherit is not copy_of:
            # Sharing, a layer over the parent or a fresh mapping: until its first write the child
            # reads the same values from the Context it inherits, so nothing needs binding there.
            return _lazy_task(loop, coro, inherit(parent))
        if type(parent) is dict and (copied := flat_copy(parent)) is not None:
            # The parent's Context holds a frozen copy from now until the parent's next write, and
            # every child made meanwhile reads it: one binding for them all, none per child.
            current_mapping.set(LentSnapshot(copied))
            return _lazy_task(loop, coro, copied)
        mapping = inherit(parent)
        token = current_mapping.set(mapping)
        try:
            task = _Task(coro, loop=loop)
        finally:
            current_mapping.reset(token)
        task.context = mapping  # type: ignore[attr-defined]
        return task
    except BaseException:  # a closed loop, say: the coroutine would never be awaited
        _close(coro)
        raise


def _close(coro: object) -> None:
    if asyncio.iscoroutine(coro):
        coro.close()


def _lazy_task(
    loop: asyncio.AbstractEventLoop, coro: CoroutineLike[T], mapping: Context
) -> asyncio.Future[T]:
    """A task that owns ``mapping`` and binds it in its Context at its first write
    (``aioreqctx.set`` and ``store.task_mapping`` do), not before."""
    task = _Task(coro, loop=loop)
    task.context = mapping  # type: ignore[attr-defined]
    return task


def _spawn_with_options(
    loop: asyncio.AbstractEventLoop,
    coro: CoroutineLike[T],
    kwargs: dict[str, Any],
    inherit: Inherit,
    *,
    eager: bool,
    inner: TaskFactory | None,
) -> asyncio.Future[T]:
    try:
        for key in [key for key, value in kwargs.items() if value is None]:
            del kwargs[key]
        if not EAGER_TASKS_SUPPORTED:
            kwargs.pop("eager_start", None)
        elif eager and "eager_start" not in kwargs:
            kwargs["eager_start"] = True
        caller_context: VarContext | None = kwargs.get("context")
        mapping: Context | None
        if caller_context is not None:
            mapping = _mapping_of(caller_context, inherit)
        else:
            parent_task = current_task_of(loop)
            parent = current_mapping.get(None)
            if parent is None or getattr(parent_task, "context", None) is not parent:
                resolved = _parent_mapping(parent_task, coro)
                parent = None if resolved is INHERIT else resolved  # type: ignore[assignment]
                mapping = None if resolved is INHERIT else inherit(parent)
            else:
                mapping = inherit(parent)
            if mapping is not None and mapping is not parent:
                kwargs["context"] = child_context = contextvars.copy_context()
                child_context.run(current_mapping.set, mapping)
        task = _build(loop, coro, kwargs, inner, mapping)
    except BaseException:
        _close(coro)
        raise
    # An eager first step may already have given the task its context (the aiohttp middleware,
    # a scope still open): that one stays.
    if mapping is not None and getattr(task, "context", None) is None:
        task.context = mapping  # type: ignore[attr-defined]
    return task


def _build(
    loop: asyncio.AbstractEventLoop,
    coro: CoroutineLike[T],
    kwargs: dict[str, Any],
    inner: TaskFactory | None,
    mapping: Context | None,
) -> asyncio.Future[T]:
    # The first step may run inside the constructor, before ``task.context`` can be set.
    handing_off = mapping is not None and (inner is not None or bool(kwargs.get("eager_start")))
    if handing_off:
        outer = handoff.coro, handoff.mapping
        handoff.coro, handoff.mapping = coro, mapping
    try:
        if inner is None:
            return asyncio.Task(coro, loop=loop, **kwargs)
        return inner(loop, coro, **kwargs)
    finally:
        if handing_off:
            handoff.coro, handoff.mapping = outer


def _mapping_of(caller_context: VarContext, inherit: Inherit) -> Context | None:
    """The task runs in exactly the Context its caller passed: put the child's mapping in it.

    Under ``task_factory`` a mapping already there is shared; the other factories derive the
    child's own from it (``copy_context()`` in a request holds the request's mapping, which a
    copying child must not write into). A Context that is running right now
    (``task.get_context()`` of the current task) cannot be entered; it is left alone and the
    task's first ``aioreqctx.set`` gives it a mapping of its own.
    """
    parent = caller_context.get(current_mapping)
    if parent is not None and inherit is share:
        return parent
    mapping = inherit(parent)
    try:
        caller_context.run(current_mapping.set, mapping)
    except RuntimeError:
        return None
    return mapping


def task_factory_for(
    mode: Mode = "share", *, eager: bool = False, inner: TaskFactory | None = None
) -> TaskFactory:
    """A factory with the given inheritance, optionally eager and/or wrapping another factory.

    ``mode``: ``"share"`` (``task_factory``), ``"copy"`` (``copying_task_factory``) or
    ``"chain"`` (``chainmap_task_factory``). ``eager=True`` starts tasks eagerly (Python 3.12+)
    unless the caller says otherwise; unlike ``asyncio.eager_task_factory`` it also works under
    uvloop. ``inner`` builds the task (for example another library's factory); this factory
    only prepares the context around it.
    """
    if mode not in _POLICIES:
        raise ValueError(f"mode must be one of {sorted(_POLICIES)}, not {mode!r}")
    if eager and not EAGER_TASKS_SUPPORTED:
        raise ValueError(
            "eager tasks need Python 3.12 or newer; build the factory with eager=False here"
        )
    if inner is not None and not callable(inner):
        raise TypeError(f"inner must be a task factory (loop, coro, **kwargs), not {inner!r}")
    inherit = _POLICIES[mode]

    def factory(
        loop: asyncio.AbstractEventLoop, coro: CoroutineLike[T], /, **kwargs: Any
    ) -> asyncio.Future[T]:
        return spawn(loop, coro, kwargs, inherit, eager=eager, inner=inner)

    factory.__name__ = factory.__qualname__ = f"{mode}_task_factory" + ("_eager" if eager else "")
    return factory


@plain_task_factory
def copying_task_factory(
    loop: asyncio.AbstractEventLoop, coro: CoroutineLike[T], /, **kwargs: Any
) -> asyncio.Future[T]:
    """Each child task gets a deep copy of its parent's context, taken when it is created."""
    return spawn(loop, coro, kwargs, copy_of)


@plain_task_factory
def chainmap_task_factory(
    loop: asyncio.AbstractEventLoop, coro: CoroutineLike[T], /, **kwargs: Any
) -> asyncio.Future[T]:
    """Each child task gets a ChainMap layer over its parent's context."""
    return spawn(loop, coro, kwargs, layer_over)


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(
    *, task_factory: TaskFactory = copying_task_factory, uvloop: bool = False
) -> LoopFactory:
    """A ``loop_factory`` for ``asyncio.Runner`` (and ``asyncio.run`` on 3.12+): new loops start
    with ``task_factory``, so even the main task goes through it, and with an
    ``IsolatedThreadPoolExecutor`` as their default executor.

    aiotask-context's ``asyncio.get_event_loop().set_task_factory(...)`` at import time sets
    the factory on a loop nobody serves from (``asyncio.run`` makes its own; on 3.14
    ``get_event_loop()`` raises without a loop): here the factory is on the loop that runs.

    ``uvloop=True`` builds uvloop loops (``pip install 'aioreqctx[uvloop]'``).
    """
    if not callable(task_factory):
        raise TypeError(
            f"loop_factory(): task_factory must be a task factory (loop, coro, **kwargs), "
            f"not {task_factory!r}"
        )
    new_loop: LoopFactory = asyncio.new_event_loop
    if uvloop:
        try:
            uvloop_module = importlib.import_module("uvloop")
        except ImportError as missing:
            raise ImportError(
                "loop_factory(uvloop=True) needs uvloop: pip install 'aioreqctx[uvloop]'"
            ) from missing
        new_loop = uvloop_module.new_event_loop

    def new_loop_with_factory() -> asyncio.AbstractEventLoop:
        loop = new_loop()
        loop.set_task_factory(task_factory)
        install_default_executor(loop)
        return loop

    return new_loop_with_factory
