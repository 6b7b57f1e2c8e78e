"""A default executor whose threads never keep the context they were started in.

``ThreadPoolExecutor`` starts a worker thread inside ``submit``, so in the caller's context.
Threads start with an empty context today, but free-threaded 3.14 builds start them with a copy
of the starter's, and CPython plans to make that the default (python/cpython#154549): a pool
thread first started during request A would then show A's ID to every later, unrelated plain
``loop.run_in_executor`` job. This pool starts its threads from an empty context instead.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class IsolatedThreadPoolExecutor(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose threads start in an empty context, on every build.

    A job sees the context it was submitted with only through ``aioreqctx.run_in_executor``
    or ``aioreqctx.bind_context``; a plain job sees no request. ``loop_factory()`` and
    ``setup(app, task_factory=...)`` make it the loop's default executor; for a loop of your
    own: ``loop.set_default_executor(aioreqctx.IsolatedThreadPoolExecutor())``.
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        # A thread this call starts is started from the empty context, never the caller's.
        submit = super().submit
        return contextvars.Context().run(submit, fn, *args, **kwargs)


def install_default_executor(loop: asyncio.AbstractEventLoop) -> None:
    """Make a new ``IsolatedThreadPoolExecutor`` the default executor of ``loop``."""
    loop.set_default_executor(IsolatedThreadPoolExecutor(thread_name_prefix="aioreqctx"))
