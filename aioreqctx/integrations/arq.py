"""arq jobs run under the ID of the request that enqueued them: install the ``arq`` extra.

arq jobs carry no headers, so the carrier rides in the job's own serialized data, next to
arq's keys: ``ArqPropagation.serialize`` adds it when a job is enqueued (from an ``ArqRedis``
pool or a job's ``ctx["redis"]``, both use the configured ``job_serializer``) and leaves
results alone. The data is written once and read on every try, so retries, ``Retry``,
deferral and ``_job_try`` keep it; arq ignores keys it does not know, so workers and job
functions that know nothing of aioreqctx keep working. On the worker,
``ArqPropagation.deserialize`` runs inside the per-job task that arq creates, just before it
starts the job's own task, so it hands the carrier over through a ``ContextVar`` to the job
function wrapped by ``ArqPropagation.job``, which runs the function in a ``job_scope``.

arq documents ``job_serializer`` but not the dict it is handed, and offers jobs no headers:
that a result's dict has the key ``r`` (a job's has not) and that a worker ignores keys it
does not know are arq's internals, as is ``Function`` (what ``arq.func`` returns) being a
dataclass that ``job`` copies with ``dataclasses.replace``. tests/test_arq.py fails if they
change: ``test_results_and_job_info_are_arqs_own`` (the dicts arq hands the serializer) and
``test_cron_jobs_and_arq_functions_keep_their_names_and_start_with_new_ids``.
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, overload

from ..propagation.jobs import JobPropagation
from . import missing_extra

try:
    from arq import Retry
    from arq.typing import WorkerCoroutine
    from arq.worker import Function
except ImportError as error:
    raise missing_extra("arq") from error

Serializer = Callable[[dict[str, Any]], bytes]
Deserializer = Callable[[bytes], dict[str, Any]]

CARRIER_FIELD = "aioreqctx"
"""The key of the carrier in arq's serialized job dict (arq's own keys are one letter)."""

logger = logging.getLogger("aioreqctx")

_NOT_DESERIALIZED: Any = object()
_carried: ContextVar[Any] = ContextVar("aioreqctx.arq_carried", default=_NOT_DESERIALIZED)
_warned_unconfigured = False


class ArqPropagation:
    """arq's side of a ``JobPropagation``: give the same instance to the pool and the worker.

    ``create_pool(settings, job_serializer=jobs.serialize, job_deserializer=jobs.deserialize)``
    on the enqueuing side; in ``WorkerSettings``: the same two settings,
    ``functions = jobs.functions([...])`` and ``cron(jobs.job(coroutine), ...)``.
    ``serializer`` / ``deserializer``: the ones arq would otherwise use (pickle by default).
    """

    __slots__ = ("_deserializer", "_serializer", "propagation")

    def __init__(
        self,
        propagation: JobPropagation | None = None,
        *,
        serializer: Serializer = pickle.dumps,
        deserializer: Deserializer = pickle.loads,
    ) -> None:
        if propagation is not None and not isinstance(propagation, JobPropagation):
            raise TypeError(f"propagation must be a JobPropagation, not {propagation!r}")
        for option, value in (("serializer", serializer), ("deserializer", deserializer)):
            if not callable(value):
                raise TypeError(f"{option} must be callable, not {value!r}")
        self.propagation = JobPropagation() if propagation is None else propagation
        self._serializer = serializer
        self._deserializer = deserializer

    def serialize(self, data: dict[str, Any]) -> bytes:
        """arq's ``job_serializer``: a job gets the current context's carrier, a result nothing."""
        if "r" not in data:  # a job; results (with "r") are the worker's, not an enqueue
            carried = self.propagation.carrier()
            if carried:
                data = {**data, CARRIER_FIELD: carried}
        return self._serializer(data)

    def deserialize(self, raw: bytes) -> dict[str, Any]:
        """arq's ``job_deserializer``: takes the carrier out for the job about to start."""
        data = self._deserializer(raw)
        if isinstance(data, dict) and "r" not in data:
            _carried.set(data.pop(CARRIER_FIELD, None))
        return data

    @overload
    def job(self, coroutine: Function) -> Function: ...

    @overload
    def job(self, coroutine: WorkerCoroutine) -> WorkerCoroutine: ...

    def job(self, coroutine: WorkerCoroutine | Function) -> WorkerCoroutine | Function:
        """``coroutine`` (or an ``arq.func(...)``) run in a fresh job context; name kept."""
        if isinstance(coroutine, Function):
            return replace(coroutine, coroutine=self._wrapped(coroutine.coroutine, coroutine.name))
        return self._wrapped(coroutine, coroutine.__qualname__)

    def functions(
        self, functions: Iterable[WorkerCoroutine | Function]
    ) -> list[WorkerCoroutine | Function]:
        """``WorkerSettings.functions`` with every function wrapped by ``job``."""
        return [self.job(function) for function in functions]

    def _wrapped(self, coroutine: WorkerCoroutine, name: str) -> WorkerCoroutine:
        propagation = self.propagation

        @functools.wraps(coroutine)
        async def run_in_job_context(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
            carried = _carried.get()
            if carried is _NOT_DESERIALIZED:
                _warn_unconfigured()
                carried = None
            async with propagation.job_scope(
                carried,
                job_id=ctx.get("job_id"),
                job_name=name,
                attempt=ctx.get("job_try", 1),
                retrying=(Retry,),
            ):
                return await coroutine(ctx, *args, **kwargs)

        wrapped: WorkerCoroutine = run_in_job_context
        return wrapped


def _warn_unconfigured() -> None:
    global _warned_unconfigured
    if not _warned_unconfigured:
        _warned_unconfigured = True
        logger.warning(
            "an arq job ran without ArqPropagation.deserialize as the worker's "
            "job_deserializer, so it cannot see what its enqueuer carried; every such job gets "
            "a new ID (said once)"
        )
