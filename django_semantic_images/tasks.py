"""Celery tasks: embed rows by primary key, and sweep rows that need (re)embedding."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.apps import apps
from django.db import InterfaceError, OperationalError

from .pipeline import TransientError, embed_pks


@shared_task(
    name="semantic_images.embed_rows",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientError, OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def embed_rows(model_label: str, pks: list[Any], field: str | None = None) -> dict[str, Any]:
    """Embed ``model_label`` rows ``pks``; bad images end as failed, not as retries."""
    model = apps.get_model(model_label)
    report = embed_pks(model, pks, field=field)
    return {"embedded": len(report.embedded), "skipped": len(report.skipped), "failed": len(report.failed)}
