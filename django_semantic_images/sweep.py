"""Find rows that need (re)embedding and queue them again.

A row waiting for its vectors (``pending``) has a *lease*: ``<field>_lease_until``
says until when its holder answers for it, and ``<field>_claimed_by`` names the
worker task that claimed it ("" while the work is only queued). These rows are *due*:

* ``pending``, claimed by a worker whose lease ran out (the worker died, or hung,
  with the rows: its lease is renewed after every batch);
* ``pending`` with no lease: the work was never sent (broker or task backend
  unreachable at upload, or a sweep that could not send) -- with a queue only;
* ``pending``, unclaimed, its lease (``LEASE`` seconds from sending) over and the
  Celery queue empty: the message is gone (broker restarted, worker killed before it
  claimed the rows); while the queue holds messages the rows wait their turn;
* ``pending`` for longer than ``PENDING_TIMEOUT`` seconds and unclaimed (the
  backstop when the queue's depth cannot be read, with Django's tasks framework,
  and in-process mode; not while Celery's queue holds messages);
* ``failed`` for a reason that may pass (retries ran out while storage or the
  database was away; the error starts with ``TRANSIENT_PREFIX``), once its backoff is
  over (``lease_until``, set by ``pipeline.failures.transient_retry_at``: 1, 4, 16, 60 minutes);
* embedded by another encoder than the configured one.

The last two only while no worker holds them (no claim, or its lease ran out).

A row taken back from a claim whose lease ran out counts a try (``pipeline.failures.WORKER_LOST``, in its
error, as a passing fault's tries are counted): it is then sent in a task of its own, and once
``TRANSIENT_ATTEMPTS`` tries ran out (a row that kills or hangs every worker that takes it) it
is marked ``failed`` with the reason instead of being sent again for ever.

A permanently bad image (``failed`` with any other reason) is never due. The
periodic task ``semantic_images.sweep``, a worker that starts, and
``semantic_images_reindex --due`` all call :func:`sweep`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, models, router, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from .conf import semantic_settings
from .dispatch import CELERY, INLINE, engine, queue_depth, request_embedding
from .fields import (
    EmbeddingStatus,
    ImageEmbeddingField,
    embedding_fields,
    failed_without_vectors,
    models_with_embeddings,
    own_embedding_fields,
)
from .pipeline.claims import suspect_filter
from .pipeline.failures import GAVE_UP_PREFIX, TRANSIENT_PREFIX, WORKER_LOST, transient_error
from .pipeline.leases import free_filter, lease_until
from .pipeline.rows import primary_manager, primary_rows

logger = logging.getLogger(__name__)

#: Seconds between two looks for objects without a row of vectors in one process (the sweep runs
#: every few seconds; the look is an anti-join over both tables, a scan of each at a million rows).
MISSING_ROWS_EVERY = 60.0
_missing_rows_looked: dict[tuple[str, str], float] = {}  # (database, model label) -> monotonic time


def due_filter(
    field: ImageEmbeddingField,
    *,
    pending_timeout: float | None = None,
    unsent: bool = False,
    queue_empty: bool = False,
    queue_busy: bool = False,
    now: Any = None,
    stale: bool = True,
) -> Q:
    """Rows of ``field`` that the sweep queues again.

    ``unsent``: rows with no lease are due (work goes through a queue, so nobody else
    will embed them); ``queue_empty``: unclaimed rows whose lease ran out are due too;
    ``queue_busy`` (the queue holds messages): unclaimed rows wait their turn, with no
    ``PENDING_TIMEOUT`` backstop (a long backlog would be sent again and again).
    ``stale``: with the rows another encoder embedded (``stale_due_filter``).
    """
    now = now or timezone.now()
    timeout = semantic_settings.PENDING_TIMEOUT if pending_timeout is None else pending_timeout
    status, updated, error = (field.column(s) for s in ("status", "updated_at", "error"))
    claimed_by, lease = field.column("claimed_by"), field.column("lease_until")
    unclaimed = Q(**{claimed_by: ""})
    lease_over = Q(**{f"{lease}__lt": now})
    waited = Q(**{f"{updated}__isnull": True})  # never sent (bulk_create)
    if not queue_busy:  # the queue's depth unknown, or nothing in it: PENDING_TIMEOUT is the backstop
        waited |= Q(**{f"{updated}__lt": now - timedelta(seconds=timeout)})
    lost = (~unclaimed & lease_over) | (unclaimed & waited)
    if unsent:
        lost |= unclaimed & Q(**{f"{lease}__isnull": True})
    if queue_empty:
        lost |= unclaimed & lease_over
    pending_lost = Q(**{status: EmbeddingStatus.PENDING}) & lost
    failed_transiently = Q(**{status: EmbeddingStatus.FAILED, f"{error}__startswith": TRANSIENT_PREFIX})
    # A failed row's lease is its backoff.
    backoff_over = Q(**{f"{lease}__isnull": True}) | lease_over
    due = pending_lost | (failed_transiently & backoff_over)
    return due | stale_due_filter(field, now) if stale else due


def stale_due_filter(field: ImageEmbeddingField, now: Any = None) -> Q:
    """Embedded rows of ``field`` that another encoder embedded (an encoder, text model or bridge
    change) and that no worker holds: one whose lease is live is embedding it, and taking it away
    would refuse its write."""
    embedded = Q(**{field.column("status"): EmbeddingStatus.EMBEDDED})
    other_encoder = embedded & ~Q(**{field.column("encoder"): field.get_encoder().identity})
    return other_encoder & free_filter(field, now or timezone.now())


def stale_filter(field: ImageEmbeddingField) -> Q:
    """Rows whose vectors were made by another encoder than the configured one (a row that failed
    for good keeps the identity of the encoder that tried, but holds no vectors: not stale)."""
    return (
        ~Q(**{field.column("encoder"): ""})
        & ~Q(**{field.column("encoder"): field.get_encoder().identity})
        & ~failed_without_vectors(field)
    )


def missing_filter(field: ImageEmbeddingField) -> Q:
    """Rows without vectors that may still get them (not permanently failed)."""
    failed_for_good = Q(**{field.column("status"): EmbeddingStatus.FAILED}) & ~Q(
        **{f"{field.column('error')}__startswith": TRANSIENT_PREFIX}
    )
    return Q(**{f"{field.visual_field}__isnull": True}) & ~failed_for_good


def mark_pending(model: type[models.Model], field: ImageEmbeddingField, pks: list[Any], condition: Q) -> int:
    """Set rows back to ``pending`` (sent now, unclaimed) unless they changed meanwhile.

    Their old vectors stay searchable. A worker that still holds one of them (a lease
    that ran out while it was alive) can no longer write it. A transient error stays:
    it counts the row's tries (``pipeline.failures.transient_error``).
    """
    error = field.column("error")
    return (
        primary_rows(model)
        .filter(condition, pk__in=pks)
        .update(
            **{
                field.column("status"): EmbeddingStatus.PENDING,
                error: Case(
                    When(**{f"{error}__startswith": TRANSIENT_PREFIX}, then=F(error)),
                    default=Value(""),
                    output_field=models.TextField(),
                ),
                field.column("updated_at"): timezone.now(),
                field.column("claimed_by"): "",
                field.column("lease_until"): lease_until(),
            }
        )
    )


def lost_claim_filter(field: ImageEmbeddingField, now: Any) -> Q:
    """Pending rows claimed by a task whose lease ran out: its worker died or hung with them."""
    return (
        Q(**{field.column("status"): EmbeddingStatus.PENDING})
        & ~Q(**{field.column("claimed_by"): ""})
        & Q(**{f"{field.column('lease_until')}__lt": now})
    )


def count_lost_tries(model: type[models.Model], field: ImageEmbeddingField, pks: list[Any]) -> list[Any]:
    """Count a try (``WORKER_LOST``) on each of ``pks`` taken back from a worker that stopped with
    it; a row out of tries is marked ``failed`` with the reason. Returns the rows still to send."""
    status, error = field.column("status"), field.column("error")
    rows = primary_rows(model).filter(lost_claim_filter(field, timezone.now()), pk__in=pks)
    gave_up: set[Any] = set()
    for pk, previous in list(rows.values_list("pk", error)):
        reason = transient_error(previous or "", WORKER_LOST)
        state: dict[str, Any] = {error: reason}
        if reason.startswith(GAVE_UP_PREFIX):
            state |= {status: EmbeddingStatus.FAILED, field.column("claimed_by"): "", field.column("lease_until"): None}
            gave_up.add(pk)
            logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, pk, reason)
        rows.filter(pk=pk).update(**state)
    return [pk for pk in pks if pk not in gave_up]


def mark_due(
    model: type[models.Model], field: ImageEmbeddingField, condition: Q, limit: int | None
) -> tuple[list[Any], set[Any]]:
    """Mark the due rows sent (``mark_pending``) and return them: only rows this call marked, and of
    them those to send alone (``suspect_filter``). Rows taken back from a worker that stopped with
    them count a try (``count_lost_tries``); those out of tries are failed, not marked.

    The rows are locked while they are marked and rows another sweep is marking are skipped
    (``SKIP LOCKED``); once marked they are no longer due, so overlapping sweeps send a row once.
    """
    manager = primary_rows(model)
    alone: set[Any] = set()
    with transaction.atomic(using=manager.db):
        qs = manager.select_for_update(skip_locked=True).filter(condition).order_by(field.column("updated_at"), "pk")
        pks = list(qs.values_list("pk", flat=True)[:limit] if limit else qs.values_list("pk", flat=True))
        if pks:
            pks = count_lost_tries(model, field, pks)
        if pks:
            mark_pending(model, field, pks, condition)  # locked and due: all of them are marked
            alone = set(manager.filter(suspect_filter(field), pk__in=pks).values_list("pk", flat=True))
    return pks, alone


def add_missing_rows(model: type[models.Model], every: float = MISSING_ROWS_EVERY) -> int:
    """Give the objects of another model that have no row of vectors yet a pending one; returns how many.

    Only for a table of vectors kept beside another model's rows (``contrib.wagtail``'s
    ``ImageVectors``): its manager's ``add_missing_rows`` is the hook, the same one
    ``semantic_images_reindex`` calls (the core never imports what provides it). Objects made
    without signals (``bulk_create``, ``loaddata``, a data migration) get their row here, and the
    due rows that follow include it (a row never sent is due). One anti-join when none is missing.
    A failure (an object deleted meanwhile) adds nothing and is logged: the next look tries again.
    One process looks at most once every ``every`` seconds per model and database.
    """
    add = getattr(primary_manager(model), "add_missing_rows", None)
    if add is None:
        return 0
    alias = router.db_for_write(model)
    now = time.monotonic()
    last = _missing_rows_looked.get((alias, model._meta.label))
    if last is not None and now - last < every:
        return 0
    _missing_rows_looked[(alias, model._meta.label)] = now
    try:
        with transaction.atomic(using=alias):
            return int(add())
    except DatabaseError as exc:
        logger.warning("Could not add the missing rows of %s: %s", model._meta.label, exc)
        return 0


@dataclass
class SweepReport:
    queued: dict[str, int] = field(default_factory=dict)
    unsent: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.queued.values())

    def __str__(self) -> str:
        parts = [f"{label}: {n} missing rows added" for label, n in self.added.items()]
        parts += [f"{label}: {n} queued" for label, n in self.queued.items()]
        parts += [f"{label}: {n} not sent (queue unreachable)" for label, n in self.unsent.items()]
        return "; ".join(parts) or "nothing due"


def due_now() -> dict[str, bool]:
    """``due_filter``'s ``unsent`` and ``queue_empty`` as the site's background engine stands now:
    what the sweep counts as due, and ``semantic_images_status`` with it."""
    chosen = engine()
    # Only Celery's broker tells a queue's depth; elsewhere PENDING_TIMEOUT is the backstop.
    depth = queue_depth() if chosen == CELERY else None
    return {"unsent": chosen != INLINE, "queue_empty": depth == 0, "queue_busy": bool(depth)}


def stale_rows(limit: int | None, sent: int) -> int | None:
    """How many stale rows a sweep may send now: ``SWEEP_STALE_ROWS`` and what is left of the
    caller's ``limit`` after the ``sent`` due rows (None: no limit)."""
    allowed = semantic_settings.SWEEP_STALE_ROWS
    if limit is not None:
        left = max(0, limit - sent)
        allowed = left if allowed is None else min(allowed, left)
    return allowed


def sweep(
    model_list: list[type[models.Model]] | None = None,
    *,
    pending_timeout: float | None = None,
    limit: int | None = None,
    fields: Collection[str] | None = None,
) -> SweepReport:
    """Queue every due row again (through the background engine, or in-process without one);
    ``fields``: only the ImageEmbeddingFields of these names (None: every one). Rows another
    encoder embedded go at most ``SWEEP_STALE_ROWS`` a field and sweep, and only while the queue
    holds no messages: a whole library's re-embed never stands before new uploads.

    Models whose vectors sit beside another model's rows first get rows for the objects that
    have none (``add_missing_rows``). Due rows are first marked sent (``pending``, lease ``LEASE`` seconds from now);
    rows whose work cannot be sent lose that lease, so the next sweep tries again.
    """
    report = SweepReport()
    how = due_now()
    # Every table once, with the fields it holds; models named: all their fields, inherited too.
    fields_of = embedding_fields if model_list else own_embedding_fields
    for model in model_list or models_with_embeddings():
        added = add_missing_rows(model)
        if added:
            report.added[model._meta.label] = added
        for emb in fields_of(model):
            if fields is not None and emb.name not in fields:
                continue
            condition = due_filter(emb, pending_timeout=pending_timeout, stale=False, **how)
            pks, alone = mark_due(model, emb, condition, limit)
            stale_limit = stale_rows(limit, len(pks))
            if stale_limit != 0 and not how["queue_busy"]:  # never ahead of uploads waiting in the queue
                more, more_alone = mark_due(model, emb, stale_due_filter(emb), stale_limit)
                pks, alone = pks + more, alone | more_alone
            label = f"{model._meta.label}.{emb.name}"
            together = [pk for pk in pks if pk not in alone]
            # A row whose worker stopped with it goes in a task of its own (batch_size 1).
            for group, size in ((together, None), (sorted(alone), 1)):
                if not group:
                    continue
                sent = request_embedding(model, group, field=emb.name, batch_size=size)
                counts = report.queued if sent else report.unsent  # unsent: their lease dropped, for the next sweep
                counts[label] = counts.get(label, 0) + len(group)
    if report.queued or report.unsent or report.added:
        logger.info("Semantic images sweep: %s", report)
    return report
