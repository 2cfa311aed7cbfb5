"""Leases on claimed rows: when one ends, and which rows no worker holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from ..conf import semantic_settings
from ..fields import ImageEmbeddingField


def lease_until(seconds: float | None = None) -> Any:
    """The end of a lease taken now (``LEASE`` seconds by default)."""
    return timezone.now() + timedelta(seconds=semantic_settings.LEASE if seconds is None else seconds)


def free_filter(field: ImageEmbeddingField, now: Any) -> Q:
    """Rows no worker holds: unclaimed, or claimed with a lease that ran out."""
    return Q(**{field.column("claimed_by"): ""}) | Q(**{f"{field.column('lease_until')}__lt": now})


def held_filter(field: ImageEmbeddingField, now: Any) -> Q:
    """Rows released with a hold (``release_rows``): a lease longer than a sent task's. They wait
    for their own task's retry, or for the sweep; another task's top-up leaves them alone."""
    return Q(**{f"{field.column('lease_until')}__gt": now + timedelta(seconds=1.5 * semantic_settings.LEASE)})
