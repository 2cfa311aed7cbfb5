"""Celery tasks: embed rows by primary key, and sweep rows that need (re)embedding.

``embed_rows`` claims its rows before it embeds them (``pipeline.claims.claim_rows``): a
second task given the same rows, on any worker, finds them held and leaves them.
The claim is a lease, renewed after every batch; when a worker dies with its rows
the lease runs out and the sweep sends them again within ``LEASE`` seconds plus a
sweep period (docs/workers.md). A task that runs past ``TASK_TIME_LIMIT`` is ended with its pool
process, which Celery replaces (its rows come back the same way). A fault that may pass (storage or database briefly
gone) is retried by Celery with exponential backoff and full jitter; the retry claims only the
task's own rows, so the rows it took to fill its batch are marked ``failed`` with
``TRANSIENT_PREFIX`` at once, and its own rows when the retries run out; the sweep queues them
again. A bad image is marked ``failed`` once, by the pipeline, and never retried.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task, shared_task
from django.apps import apps

from . import worker
from .conf import semantic_settings
from .dispatch import EMBED_TASK, SWEEP_TASK
from .pipeline.claims import claim_token
from .pipeline.failures import TRANSIENT_ERRORS, mark_transient_failure
from .sweep import sweep as run_sweep
from .task_body import run_embed_task

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
#: Longest wait before a retry (seconds); retry n waits a random 0 .. min(2**n, BACKOFF_MAX).
BACKOFF_MAX = 600


def retry_hold(retries: int) -> float:
    """How long rows wait for retry number ``retries + 1``: its longest backoff, plus a lease."""
    return min(2**retries, BACKOFF_MAX) + semantic_settings.LEASE


class EmbedTask(Task):
    """``embed_rows``: when its retries run out on a passing fault, its rows are marked for the sweep."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, TRANSIENT_ERRORS):
            model_label, pks, *rest = args
            field = kwargs.get("field", rest[0] if rest else None)
            mark_transient_failure(apps.get_model(model_label), list(pks), field, exc)
        super().on_failure(exc, task_id, args, kwargs, einfo)


@shared_task(
    bind=True,
    base=EmbedTask,
    name=EMBED_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    max_retries=MAX_RETRIES,
    retry_backoff=True,
    retry_backoff_max=BACKOFF_MAX,
    retry_jitter=True,
    # A task that never returns is ended with its pool process (prefork), which Celery replaces; its
    # rows come back through the sweep as a killed worker's. Read when a worker imports this (the
    # messages carry no limit of their sender: dispatch.enqueue). Keep it below the broker's
    # visibility_timeout, or the message of a hung task is delivered again.
    time_limit=semantic_settings.TASK_TIME_LIMIT,
)
def embed_rows(
    self: Any, model_label: str, pks: list[Any], field: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Embed ``model_label`` rows ``pks`` (plus other waiting rows, to fill a batch).

    Only the rows this task claims are embedded; rows another task holds, or whose
    file already failed to decode, are left alone. ``force`` recomputes rows whose
    image, texts and encoder are unchanged (and retries files that failed).
    """

    def for_the_sweep(model: Any, claimed: list[Any], exc: Exception) -> None:
        mark_transient_failure(model, batch_fillers(model, claimed, pks), field, exc)

    # On a fault that may pass the task's own rows stay held until autoretry_for's retry (with
    # backoff) comes back for them, and on_failure marks them once the retries run out; the retry
    # claims only those, so the rows taken to fill the batch are marked for the sweep at once.
    return run_embed_task(
        model_label,
        pks,
        claim_token(self.request.id),
        field=field,
        force=force,
        transient_hold=retry_hold(self.request.retries),
        on_transient=for_the_sweep,
    )


def batch_fillers(model: Any, claimed: list[Any], pks: list[Any]) -> list[Any]:
    """The rows of ``claimed`` (primary keys) a task took to fill its batch: not among its ``pks``."""
    own = {model._meta.pk.to_python(pk) for pk in pks}
    return [pk for pk in claimed if pk not in own]


@shared_task(name=SWEEP_TASK, acks_late=True)
def sweep(pending_timeout: float | None = None) -> dict[str, int]:
    """Periodic: queue rows whose work was lost, failed for a passing reason, or from another encoder."""
    return run_sweep(pending_timeout=pending_timeout).queued


@shared_task(name="semantic_images.worker_info")
def worker_info() -> dict[str, Any]:
    """What this worker process runs: pid, encoders and devices, threads, and when they loaded."""
    encoders = worker.field_encoders()
    return {
        "pid": os.getpid(),
        "encoders": [e.identity for e in encoders],
        "device": encoders[0].device if encoders else None,
        **worker.state,
    }
