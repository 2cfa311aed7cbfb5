"""Celery tasks: embed rows by primary key, and sweep rows that need (re)embedding.

``embed_rows`` is acknowledged only after it finishes (``acks_late``), so a
worker killed mid-batch loses nothing: the message goes back to the queue. A
fault that may pass (storage or database briefly gone) is retried with
exponential backoff; a bad image is marked ``failed`` once, by the pipeline,
and never retried.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.apps import apps
from django.db import DatabaseError, InterfaceError, OperationalError, router, transaction
from django.db.models import F
from django.utils import timezone

from . import worker
from .conf import semantic_settings
from .dispatch import EMBED_TASK, SWEEP_TASK
from .fields import EmbeddingStatus, get_embedding_field
from .pipeline import TRANSIENT_PREFIX, TransientError, embed_pks
from .sweep import sweep as run_sweep

logger = logging.getLogger(__name__)

#: Faults worth retrying: they may pass without anyone changing the row.
TRANSIENT_ERRORS = (TransientError, OperationalError, InterfaceError)
MAX_RETRIES = 8
#: A task embeds up to this many batches: its own rows, then other waiting rows.
TOP_UP_BATCHES = 2
BACKOFF_MAX = 600


def backoff(retries: int) -> int:
    """Seconds before retry number ``retries + 1``: random up to 1, 2, 4 ... (full jitter), at most 600."""
    return get_exponential_backoff_interval(factor=1, retries=retries, maximum=BACKOFF_MAX, full_jitter=True)


def with_waiting_rows(model: Any, pks: list[Any], field: str | None) -> list[Any]:
    """``pks`` topped up to two batches with other rows waiting (``pending``), oldest first.

    Uploads that arrive together, each with its own task, are embedded in batches
    by the first task that runs; the later tasks find their rows done and return.
    Two batches let the pipeline decode the second while the first is encoded.
    The rows taken are claimed (``FOR UPDATE SKIP LOCKED``, then "pending since"
    set to now), so concurrent workers take different rows.
    """
    room = TOP_UP_BATCHES * semantic_settings.BATCH_SIZE - len(pks)
    if room <= 0:
        return list(pks)
    emb = get_embedding_field(model, field)
    since = emb.column("updated_at")
    with transaction.atomic(using=router.db_for_write(model)):
        waiting = list(
            model._default_manager.select_for_update(skip_locked=True)
            .filter(**{emb.column("status"): EmbeddingStatus.PENDING})
            .exclude(pk__in=pks)
            .order_by(F(since).asc(nulls_first=True), "pk")
            .values_list("pk", flat=True)[:room]
        )
        if waiting:
            model._default_manager.filter(pk__in=waiting).update(**{since: timezone.now()})
    return [*pks, *waiting]


def mark_transient_failure(model: Any, pks: list[Any], field: str | None, exc: BaseException) -> None:
    """Retries ran out: record why, in a form the sweep recognises, on rows still pending."""
    emb = get_embedding_field(model, field)
    try:
        model._default_manager.filter(pk__in=pks, **{emb.column("status"): EmbeddingStatus.PENDING}).update(
            **{emb.column("status"): EmbeddingStatus.FAILED, emb.column("error"): f"{TRANSIENT_PREFIX}{exc}"}
        )
    except DatabaseError:  # the database is the fault: the rows stay pending and the sweep finds them
        logger.warning("Could not mark %s %s as failed; they stay pending.", model._meta.label, pks)


@shared_task(
    bind=True,
    name=EMBED_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_RETRIES,
)
def embed_rows(
    self: Any, model_label: str, pks: list[Any], field: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Embed ``model_label`` rows ``pks`` (plus other waiting rows, to fill a batch).

    ``force`` recomputes rows whose image, texts and encoder are unchanged.
    """
    model = apps.get_model(model_label)
    try:
        batch = with_waiting_rows(model, list(pks), field)
        report = embed_pks(model, batch, field=field, force=force)
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            mark_transient_failure(model, list(pks), field, exc)
            raise
        countdown = backoff(self.request.retries)
        logger.warning("Embedding %s %s hit %r; retrying in %s s.", model_label, pks, exc, countdown)
        raise self.retry(exc=exc, countdown=countdown) from exc
    return {
        "embedded": [str(pk) for pk in report.embedded],
        "skipped": [str(pk) for pk in report.skipped],
        "failed": {str(pk): reason for pk, reason in report.failed.items()},
    }


@shared_task(name=SWEEP_TASK, acks_late=True)
def sweep(pending_timeout: float | None = None) -> dict[str, int]:
    """Periodic: queue rows pending too long, failed for a passing reason, or from another encoder."""
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
