"""Claims: a worker's task claims its rows (``claim_rows``) for ``LEASE`` seconds, renews the lease
after every batch (``renew_lease``) and gives them up (``release_rows``)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from ..conf import semantic_settings
from ..fields import EmbeddingStatus, ImageEmbeddingField, get_embedding_field
from .failures import TRANSIENT_PREFIX, WORKER_LOST
from .leases import free_filter, held_filter, lease_until
from .rows import primary_rows

#: A task embeds up to this many batches: its own rows, then other waiting rows.
TOP_UP_BATCHES = 2


def claim_token(task_id: str | None) -> str:
    """Names the claiming task: host, process and task id."""
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or 'local'}"[:255]


def suspect_filter(field: ImageEmbeddingField) -> Q:
    """Rows taken back from a worker that stopped with them (``WORKER_LOST``), until one embeds them:
    each is sent in a task of its own and embedded alone (no other task's top-up takes it, and its
    task takes no other rows), so a row that kills its worker takes no other row down with it."""
    return Q(**{f"{field.column('error')}__endswith": WORKER_LOST})


def failed_for_good_filter(field: ImageEmbeddingField) -> Q:
    """Rows whose file could not be decoded (a reason that will not pass by itself)."""
    return Q(**{field.column("status"): EmbeddingStatus.FAILED}) & ~Q(
        **{f"{field.column('error')}__startswith": TRANSIENT_PREFIX}
    )


def claim_rows(
    model: type[models.Model],
    pks: Sequence[Any],
    token: str,
    *,
    field: str | None = None,
    top_up: int = 0,
    force: bool = False,
) -> list[Any]:
    """Claim rows for the task ``token``; returns the primary keys it now holds.

    It gets those of ``pks`` that no other task holds, with a new lease (those it holds already
    too: a retry under the same token whose release failed), a row whose file already failed
    to decode only with ``force``, then up to ``top_up`` other pending rows, oldest first. Each
    row has one holder: the UPDATE re-checks its condition on a row another claim changed
    meanwhile, and the top-up skips rows being claimed.
    Rows whose worker stopped with them (``suspect_filter``) are embedded alone: only a
    task of that row alone claims one, and it takes no other rows; the top-up takes no
    row still claimed by a worker whose lease ran out (the sweep takes it back, counting a try).
    """
    emb = get_embedding_field(model, field)
    manager = primary_rows(model)
    now = timezone.now()
    values = {emb.column("claimed_by"): token, emb.column("lease_until"): lease_until()}
    # Rows this claim still holds too (a retry in the same process whose release failed): a new lease.
    free = free_filter(emb, now) | Q(**{emb.column("claimed_by"): token})
    own = free if force else free & ~failed_for_good_filter(emb)
    if len(pks) > 1:  # a row whose worker stopped with it goes in a task of its own (the sweep sends it so)
        own &= ~suspect_filter(emb)
    manager.filter(own, pk__in=list(pks)).update(**values)
    waiting: list[Any] = []
    alone = (  # a row that goes alone: this task takes no other
        top_up > 0
        and len(pks) == 1
        and manager.filter(suspect_filter(emb), pk=pks[0], **{emb.column("claimed_by"): token}).exists()
    )
    if top_up > 0 and not alone:
        with transaction.atomic(using=manager.db):
            waiting = list(
                manager.select_for_update(skip_locked=True)
                # Unclaimed only: rows of a worker that died are the sweep's, which counts the try.
                .filter(**{emb.column("claimed_by"): "", emb.column("status"): EmbeddingStatus.PENDING})
                .exclude(held_filter(emb, now))
                .exclude(suspect_filter(emb))
                .exclude(pk__in=list(pks))
                .order_by(F(emb.column("updated_at")).asc(nulls_first=True), "pk")
                .values_list("pk", flat=True)[:top_up]
            )
            if waiting:
                manager.filter(pk__in=waiting).update(**values)
    return list(
        manager.filter(pk__in=[*pks, *waiting], **{emb.column("claimed_by"): token})
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def renew_lease(model: type[models.Model], pks: Sequence[Any], token: str, *, field: str | None = None) -> int:
    """Extend the lease of the rows ``token`` still holds; returns how many."""
    emb = get_embedding_field(model, field)
    return (
        primary_rows(model)
        .filter(pk__in=list(pks), **{emb.column("claimed_by"): token})
        .update(**{emb.column("lease_until"): lease_until()})
    )


def release_rows(
    model: type[models.Model], pks: Sequence[Any], token: str, *, field: str | None = None, hold: float | None = None
) -> int:
    """Give up the claim on rows ``token`` still holds.

    ``hold`` (seconds, at least twice ``LEASE``) keeps the sweep, and other tasks' top-ups
    (``held_filter``), away from them that long: a retry that will come back for them, or rows a
    task failed on; None leaves them due at once if they are still pending.
    """
    emb = get_embedding_field(model, field)
    until = None if hold is None else lease_until(max(hold, 2 * semantic_settings.LEASE))
    return (
        primary_rows(model)
        .filter(pk__in=list(pks), **{emb.column("claimed_by"): token})
        .update(**{emb.column("claimed_by"): "", emb.column("lease_until"): until})
    )
