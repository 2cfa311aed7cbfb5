"""Tries counted by a run without a claim (in-process, the commands), before the work, so that a
row that kills the process is given up too; and the batches that embed such rows alone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import models

from ..fields import EmbeddingStatus, ImageEmbeddingField
from .failures import GAVE_UP_PREFIX, TRANSIENT_ATTEMPTS, TRANSIENT_PREFIX, WORKER_LOST, tries_counted
from .rows import primary_rows

logger = logging.getLogger(__name__)


def count_tries(
    model: type[models.Model], field: ImageEmbeddingField, pks: Sequence[Any]
) -> tuple[dict[Any, tuple[str, str]], dict[Any, str]]:
    """Before a run without a claim (in-process, the commands) embeds ``pks``: count a try on each
    row not failed, committed before the work, as the sweep counts one on a worker's lost claim
    (``WORKER_LOST``). A process that dies mid-embedding (killed, out of memory, a crash in a
    native library) leaves the count; the next run embeds the row alone (``embed_instances``);
    a row whose ``TRANSIENT_ATTEMPTS`` tries all stopped so is failed with that reason instead.

    Returns the rows counted, ``{pk: (error before, error stored)}`` (``uncount_tries`` puts the
    first back on those the work left alone), and the rows given up, ``{pk: reason}``.
    """
    error, status = field.column("error"), field.column("status")
    rows = primary_rows(model).filter(pk__in=list(pks)).exclude(**{status: EmbeddingStatus.FAILED})
    counted: dict[Any, tuple[str, str]] = {}
    gave_up: dict[Any, str] = {}
    for pk, previous in list(rows.values_list("pk", error)):
        tries = tries_counted(previous or "")
        if tries < TRANSIENT_ATTEMPTS:
            counted[pk] = (
                previous or "",
                f"{TRANSIENT_PREFIX}(attempt {tries + 1} of {TRANSIENT_ATTEMPTS}) {WORKER_LOST}",
            )
            continue
        reason = f"{GAVE_UP_PREFIX}{tries} attempts: {WORKER_LOST}"
        failed = {
            status: EmbeddingStatus.FAILED,
            error: reason,
            field.column("claimed_by"): "",
            field.column("lease_until"): None,
        }
        if rows.filter(pk=pk, **{error: previous}).update(**failed):
            logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, pk, reason)
            gave_up[pk] = reason
    groups: dict[tuple[str, str], list[Any]] = {}
    for pk, change in counted.items():
        groups.setdefault(change, []).append(pk)
    for (previous, stored), group in groups.items():  # mostly one: rows without an error
        rows.filter(pk__in=group, **{error: previous}).update(**{error: stored})
    return counted, gave_up


def uncount_tries(model: type[models.Model], field: ImageEmbeddingField, counted: dict[Any, tuple[str, str]]) -> None:
    """The work on ``count_tries``' rows is over: those it did not write (unchanged, or changed
    meanwhile) get their error back."""
    error = field.column("error")
    groups: dict[tuple[str, str], list[Any]] = {}
    for pk, change in counted.items():
        groups.setdefault(change, []).append(pk)
    for (previous, stored), group in groups.items():
        primary_rows(model).filter(pk__in=group, **{error: stored}).update(**{error: previous})


def suspects_alone(
    rows: list[models.Model], field: ImageEmbeddingField, batch_size: int
) -> tuple[list[list[Any]], int]:
    """``rows`` in batches for a run without a claim: those a stopped run was embedding (their
    error ends with ``WORKER_LOST``) come last, one per batch, the fewest tries first, so a row
    that kills the process takes no other row down with it. Returns the batches and the index
    of the first one alone (no batch is read ahead of it or while it is embedded)."""
    error = field.column("error")
    lost = [r for r in rows if (r.__dict__.get(error) or "").endswith(WORKER_LOST)]
    others = [r for r in rows if not (r.__dict__.get(error) or "").endswith(WORKER_LOST)]
    lost.sort(key=lambda r: tries_counted(r.__dict__.get(error) or ""))  # stable: the rows' order within a count
    batches = [others[start : start + batch_size] for start in range(0, len(others), batch_size)]
    return [*batches, *([r] for r in lost)], len(batches)
