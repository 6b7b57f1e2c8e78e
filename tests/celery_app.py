"""The Celery app of the Celery tests: the test process publishes with it and
``celery worker -A tests.celery_app`` runs it, so both sides have the same set-up.

The worker logs through Celery's own handlers (``worker_log_format`` names ``request_id``,
``RequestContextFilter`` is added in ``after_setup_logger``) and through structlog as JSON on
stdout; the test reads both from the worker's captured output.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from celery import Celery, Task
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun

import aioreqctx
from aioreqctx import keys
from aioreqctx.integrations.celery import setup_celery

BROKER_ENVIRONMENT = "AIOREQCTX_TEST_CELERY_BROKER"
LOG_FORMAT = "%(levelname)s [%(request_id)s] %(name)s: %(message)s"

app = Celery("aioreqctx_tests", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get(BROKER_ENVIRONMENT, "redis://127.0.0.1:6379/0"),
    result_backend=os.environ.get(BROKER_ENVIRONMENT, "redis://127.0.0.1:6379/0"),
    broker_connection_retry_on_startup=True,
    worker_log_format=LOG_FORMAT,
    worker_task_log_format=LOG_FORMAT,
    worker_redirect_stdouts=False,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=True,
)

propagation = aioreqctx.JobPropagation(
    context_keys=("tenant",), events=aioreqctx.JobEvents(), carry_deadline=True
)
uninstall = setup_celery(propagation)

logger = logging.getLogger("tests.celery_app")


@after_setup_logger.connect
@after_setup_task_logger.connect
def add_request_fields(logger: logging.Logger, **_: Any) -> None:
    """Celery's handlers get the filter; structlog writes JSON lines to stdout."""
    for handler in logger.handlers:
        handler.addFilter(aioreqctx.RequestContextFilter())
    structlog.configure(
        processors=[
            aioreqctx.add_request_context,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        # one write per line: the prefork pool's processes share this stdout
        logger_factory=structlog.WriteLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


@task_postrun.connect
def after_job(task_id: str, **_: Any) -> None:
    """Connected after ``setup_celery``: what the worker thread holds once the job is over."""
    logger.info("after job %s", task_id)


SEEN = {
    "request_id": keys.REQUEST_ID,
    "job_id": keys.JOB_ID,
    "job_name": keys.JOB_NAME,
    "attempt": keys.JOB_ATTEMPT,
    "parent_job_id": keys.PARENT_JOB_ID,
    "tenant": "tenant",
}


def seen() -> dict[str, Any]:
    """The job's context as the task sees it (returned through the result backend)."""
    return {name: aioreqctx.get(key) for name, key in SEEN.items()} | {
        "remaining": aioreqctx.remaining_time()
    }


@app.task
def record(marker: str) -> dict[str, Any]:
    logger.info("record %s", marker)
    structlog.get_logger("tests.celery_app").info("record", marker=marker)
    return seen()


@app.task
def spawn(marker: str) -> str:
    """Publishes ``record`` from inside a task."""
    child_id: str = record.delay(marker).id
    return child_id


@app.task
def spawn_in_thread(marker: str) -> str:
    """Publishes ``record`` from a thread the task started (with the task's context)."""
    with ThreadPoolExecutor(1) as pool:
        child_id: str = pool.submit(aioreqctx.bind_context(spawn.run), marker).result()
    return child_id


@app.task(bind=True, max_retries=1)
def flaky(self: Task[Any, Any], marker: str) -> dict[str, Any]:
    """Fails its first attempt with a retry. The countdown makes the retry wait for the first
    attempt's RETRY state to be stored: without one, a threads pool can run the second attempt
    first and its SUCCESS is then overwritten (Celery's race, not aioreqctx's)."""
    logger.info("flaky %s attempt %s", marker, aioreqctx.get(keys.JOB_ATTEMPT))
    if self.request.retries == 0:
        raise self.retry(countdown=1)
    return seen()


@app.task
def fail(marker: str) -> None:
    raise ValueError(f"fail {marker}")


@app.task
def nested(marker: str) -> dict[str, Any]:
    """Runs ``record`` eagerly inside itself: a job within a job, in one thread."""
    inner: dict[str, Any] = record.apply((marker,)).get()
    return {"inner": inner, "outer_after": seen()}
