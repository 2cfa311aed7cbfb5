"""Find rows that need (re)embedding and queue them again.

Three kinds of row are *due*:

* ``pending`` for longer than ``PENDING_TIMEOUT`` seconds (a lost task, a broker
  that was down at upload time, a worker killed with its batch);
* ``failed`` for a reason that may pass (retries ran out while storage or the
  database was away; the error starts with ``TRANSIENT_PREFIX``);
* embedded by another encoder than the configured one.

A permanently bad image (``failed`` with any other reason) is never due. The
periodic task ``semantic_images.sweep`` and ``semantic_images_reindex --due``
both call :func:`sweep`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from .conf import semantic_settings
from .dispatch import request_embedding
from .fields import EmbeddingStatus, ImageEmbeddingField, embedding_fields, models_with_embeddings
from .pipeline import TRANSIENT_PREFIX

logger = logging.getLogger(__name__)


def due_filter(field: ImageEmbeddingField, *, pending_timeout: float | None = None) -> Q:
    """Rows of ``field`` that the sweep queues again."""
    timeout = semantic_settings.PENDING_TIMEOUT if pending_timeout is None else pending_timeout
    cutoff = timezone.now() - timedelta(seconds=timeout)
    status, updated, error, encoder = (field.column(s) for s in ("status", "updated_at", "error", "encoder"))
    pending_too_long = Q(**{status: EmbeddingStatus.PENDING}) & (
        Q(**{f"{updated}__lt": cutoff}) | Q(**{f"{updated}__isnull": True})
    )
    failed_transiently = Q(**{status: EmbeddingStatus.FAILED, f"{error}__startswith": TRANSIENT_PREFIX})
    other_encoder = Q(**{status: EmbeddingStatus.EMBEDDED}) & ~Q(**{encoder: field.get_encoder().identity})
    return pending_too_long | failed_transiently | other_encoder


def stale_filter(field: ImageEmbeddingField) -> Q:
    """Rows whose vectors were made by another encoder than the configured one."""
    return ~Q(**{field.column("encoder"): ""}) & ~Q(**{field.column("encoder"): field.get_encoder().identity})


def missing_filter(field: ImageEmbeddingField) -> Q:
    """Rows without vectors that may still get them (not permanently failed)."""
    failed_for_good = Q(**{field.column("status"): EmbeddingStatus.FAILED}) & ~Q(
        **{f"{field.column('error')}__startswith": TRANSIENT_PREFIX}
    )
    return Q(**{f"{field.visual_field}__isnull": True}) & ~failed_for_good


def mark_pending(model: type[models.Model], field: ImageEmbeddingField, pks: list[Any], condition: Q) -> int:
    """Set rows back to ``pending`` (since now) unless they changed meanwhile; vectors stay searchable."""
    return model._default_manager.filter(condition, pk__in=pks).update(
        **{
            field.column("status"): EmbeddingStatus.PENDING,
            field.column("error"): "",
            field.column("updated_at"): timezone.now(),
        }
    )


@dataclass
class SweepReport:
    queued: dict[str, int] = field(default_factory=dict)
    unsent: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.queued.values())

    def __str__(self) -> str:
        parts = [f"{label}: {n} queued" for label, n in self.queued.items()]
        parts += [f"{label}: {n} not sent (broker unreachable)" for label, n in self.unsent.items()]
        return "; ".join(parts) or "nothing due"


def sweep(
    model_list: list[type[models.Model]] | None = None,
    *,
    pending_timeout: float | None = None,
    limit: int | None = None,
) -> SweepReport:
    """Queue every due row again (through the broker, or in-process without one).

    Due rows are first marked ``pending`` since now, so a row whose work cannot be
    sent (broker down) is tried again one ``PENDING_TIMEOUT`` later, not at every sweep.
    """
    report = SweepReport()
    for model in model_list or models_with_embeddings():
        for emb in embedding_fields(model):
            condition = due_filter(emb, pending_timeout=pending_timeout)
            qs = model._default_manager.filter(condition).order_by(emb.column("updated_at"), "pk")
            pks = list(qs.values_list("pk", flat=True)[:limit] if limit else qs.values_list("pk", flat=True))
            if not pks:
                continue
            mark_pending(model, emb, pks, condition)
            label = f"{model._meta.label}.{emb.name}"
            if request_embedding(model, pks, field=emb.name):
                report.queued[label] = len(pks)
            else:
                report.unsent[label] = len(pks)
    if report.queued or report.unsent:
        logger.info("Semantic images sweep: %s", report)
    return report
