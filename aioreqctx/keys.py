"""The keys aioreqctx puts into each request's context; read them with ``aioreqctx.get``."""

from __future__ import annotations

REQUEST_ID = "X-Request-ID"
"""The request's ID: the key aiotask-context's README used, so existing code keeps working."""

START_MONOTONIC = "aioreqctx.start_monotonic"
"""``time.perf_counter()`` when the request started: for durations, never for wall time."""

START_TIME = "aioreqctx.start_time"
"""``time.time()`` when the request started: wall-clock seconds since the epoch."""

REJECTED_REQUEST_ID = "aioreqctx.rejected_request_id"
"""An incoming ID that failed validation, escaped and truncated; absent when there was none."""

OPERATIONS = "aioreqctx.operations"
"""The request's named sub-operation timings (see ``aioreqctx.timed_operation``)."""

METADATA = "aioreqctx.metadata"
"""A dict of fields the request's code added (``RequestContext.add_metadata``); every log line
written during the request carries them. Absent until the first one is added."""

DEADLINE = "aioreqctx.deadline"
"""When the request must be done, as a ``time.monotonic()`` instant; absent when it has no
deadline (see ``aioreqctx.DeadlineObserver`` and ``aioreqctx.remaining_time``)."""

JOB_ID = "aioreqctx.job_id"
"""In a job (``JobPropagation.job_scope``): the queue's ID of the running job."""

JOB_NAME = "aioreqctx.job_name"
"""In a job: the running job's name (its function or task name)."""

JOB_ATTEMPT = "aioreqctx.job_attempt"
"""In a job: which attempt this is, an int from 1; a retry or re-delivery counts up."""

PARENT_JOB_ID = "aioreqctx.parent_job_id"
"""In a job enqueued by another job: the enqueuing job's ID; absent otherwise."""

ROUTE = "aioreqctx.route"
"""The request's route: its aiohttp resource pattern (``/users/{id}``), set by the observers
that need it (the in-flight registry, ``aioreqctx.integrations.asyncpg``); absent otherwise."""

PARENT_REQUEST_ID = "aioreqctx.parent_request_id"
"""In one WebSocket message (``aioreqctx.web.messages``): the connection's request ID."""
