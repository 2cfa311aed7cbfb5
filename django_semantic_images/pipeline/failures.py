"""Failures and retries: faults that may pass (``TransientError``), the reasons stored on a failed
row (``TRANSIENT_PREFIX``, ``GAVE_UP_PREFIX``), the tries counted in them, and the backoff the
sweep waits out before it tries a row again."""

from __future__ import annotations

import logging
import random
import re
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone

from ..fields import EmbeddingStatus, ImageEmbeddingField, get_embedding_field
from .leases import free_filter, lease_until
from .rows import primary_rows

logger = logging.getLogger(__name__)


class TransientError(Exception):
    """A fault that may pass (storage or database briefly gone): retry later."""


class StorageGone(TransientError):
    """The storage itself is not there (a file-system storage whose folder is missing: a network
    mount, a volume), not one file of it: every file read meanwhile fails so."""


#: ``embedding_error`` of a row whose retries ran out on a fault that may pass;
#: the sweep queues such rows again (a permanently bad image is never retried).
TRANSIENT_PREFIX = "Temporary failure, will be retried: "


#: ``embedding_error`` of a row failed for good after ``TRANSIENT_ATTEMPTS`` such faults; the
#: fault's own words follow.
GAVE_UP_PREFIX = "Gave up after "


def public_reason(error: str) -> str:
    """A failed row's ``error`` as the site's visitors may read it (the public APIs): the reason
    about the file, or for a temporary fault only that (its own words, about the site's storage
    or database, may name servers: they stay with the staff), also once the tries ran out."""
    if error.startswith(TRANSIENT_PREFIX):
        return "a temporary error; it will be tried again."
    if error.startswith(GAVE_UP_PREFIX):
        return "temporary errors, too many times; it is not tried again until it is re-embedded."
    return error or "no reason was recorded"


#: A row whose own file fails with a fault that may pass is tried this many times, then failed for good.
TRANSIENT_ATTEMPTS = 5


#: Seconds before the sweep sends again a row after its n-th passing fault: ``TRANSIENT_BACKOFF``
#: times 4 ** (n - 1), at most ``TRANSIENT_BACKOFF_MAX``, less up to a half at random (rows that failed
#: together come back spread out): about 1, 4, 16 and 60 minutes, so the tries span over an hour.
TRANSIENT_BACKOFF = 60.0


TRANSIENT_BACKOFF_MAX = 3600.0


#: The try count in a transient error: ``TRANSIENT_PREFIX`` "(attempt 2 of 5) " reason.
ATTEMPT = re.compile(r"\(attempt (\d+) of \d+\) ")


#: The reason counted (``transient_error``) on a row the sweep takes back from a task whose lease ran
#: out while it held the row: its worker died or hung with it. A row that kills or hangs every worker
#: that takes it (a "poison" row) is failed for good after ``TRANSIENT_ATTEMPTS`` such tries.
WORKER_LOST = "the worker embedding it stopped before it finished (killed, out of memory, crashed or hung)"


#: ``embedding_error`` of a row the encoder gave an all-zero vector (visual or semantic): a vector
#: without a direction has no cosine with anything (NaN), so it is not stored; the row fails for good.
ZERO_VECTOR = "the encoder returned a vector of all zeros, which cannot be ranked or compared"


#: ``embedding_error`` of a row the encoder gave a vector holding NaN or infinity (an overflow on one
#: image): pgvector refuses to store it and it could not be ranked, so the row fails for good.
NOT_FINITE = "the encoder returned a vector holding NaN or infinity, which cannot be stored, ranked or compared"


#: Faults worth retrying: they may pass without anyone changing the row.
TRANSIENT_ERRORS = (TransientError, OperationalError, InterfaceError)


def tries_counted(error: str) -> int:
    """How many tries a row's ``error`` counts (``TRANSIENT_PREFIX`` "(attempt n of 5)"), else 0."""
    if not error.startswith(TRANSIENT_PREFIX):
        return 0
    found = ATTEMPT.match(error, len(TRANSIENT_PREFIX))
    return int(found.group(1)) if found else 1


def transient_error(previous: str, reason: str) -> str:
    """The error to store for a fault that may pass, counting the tries in ``previous``: it starts
    with ``TRANSIENT_PREFIX`` (the sweep tries again) until ``TRANSIENT_ATTEMPTS`` ran out."""
    tries = tries_counted(previous) + 1
    if tries >= TRANSIENT_ATTEMPTS:
        return f"{GAVE_UP_PREFIX}{tries} attempts: {reason}"
    return f"{TRANSIENT_PREFIX}(attempt {tries} of {TRANSIENT_ATTEMPTS}) {reason}"


#: The longest reason kept from an unexpected error (a database's DETAIL may quote a whole row).
REASON_CHARS = 500


def error_reason(exc: BaseException) -> str:
    """An unexpected error as a failed row's reason: its type and its message's first line, cut
    at ``REASON_CHARS``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:REASON_CHARS]


def transient_retry_at(error: str) -> Any:
    """Until when the sweep leaves a row that failed with ``error`` (stored in its ``lease_until``):
    its backoff after that many passing faults (``TRANSIENT_BACKOFF``); None for any other error."""
    found = ATTEMPT.match(error, len(TRANSIENT_PREFIX)) if error.startswith(TRANSIENT_PREFIX) else None
    if found is None:
        return None
    wait = min(TRANSIENT_BACKOFF * 4 ** (int(found.group(1)) - 1), TRANSIENT_BACKOFF_MAX)
    return lease_until(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret


def transient_state(field: ImageEmbeddingField, previous: str, reason: str) -> dict[str, Any]:
    """The columns of a row that failed for a reason that may pass: failed, the tries counted
    (``transient_error``), no holder, and left to its backoff (``transient_retry_at``)."""
    error = transient_error(previous, reason)
    return {
        field.column("status"): EmbeddingStatus.FAILED,
        field.column("error"): error,
        field.column("claimed_by"): "",
        field.column("lease_until"): transient_retry_at(error),
    }


def mark_transient_failure(model: Any, pks: list[Any], field: str | None, exc: BaseException) -> None:
    """Retries ran out: record why (``exc`` as ``error_reason`` words it), in a form the sweep
    recognises, on rows still pending and free (the tries are counted, and the sweep waits out a
    backoff: see ``transient_state``)."""
    emb = get_embedding_field(model, field)
    status, error = emb.column("status"), emb.column("error")
    try:
        rows = primary_rows(model).filter(
            free_filter(emb, timezone.now()), pk__in=pks, **{status: EmbeddingStatus.PENDING}
        )
        for pk, previous in list(rows.values_list("pk", error)):
            rows.filter(pk=pk).update(**transient_state(emb, previous or "", error_reason(exc)))
    except DatabaseError:  # the database is the fault: the rows stay pending and the sweep finds them
        logger.warning("Could not mark %s %s as failed; they stay pending.", model._meta.label, pks)
