"""What an embedding task does, whichever engine runs it (Celery's ``tasks`` or Django's
``task_framework``): load the models, claim the rows, embed them, release the claim.

The engines differ only in what a fault that may pass (a lost database, storage) leaves behind,
so the caller says it: Celery holds the rows for its own retry, the tasks framework (no retries)
marks them for the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.db import DatabaseError

from .conf import semantic_settings
from .fields import get_embedding_field
from .pipeline.claims import TOP_UP_BATCHES, claim_rows, release_rows
from .pipeline.embedding import embed_pks
from .pipeline.failures import TRANSIENT_ERRORS, mark_transient_failure

logger = logging.getLogger(__name__)


def run_embed_task(
    model_label: str,
    pks: list[Any],
    token: str,
    *,
    field: str | None = None,
    force: bool = False,
    transient_hold: float | None = None,
    on_transient: Callable[[Any, list[Any], Exception], None] | None = None,
) -> dict[str, Any]:
    """Embed the rows of ``pks`` this task can claim (plus waiting rows, to fill a batch).

    Only rows claimed under ``token`` are embedded; rows another task holds, or whose file already
    failed to decode, are left alone. On a fault that may pass the rows are released, held
    ``transient_hold`` seconds (None: due at once), then ``on_transient(model, claimed, exc)`` runs
    and the fault is re-raised. On any other error (also the models' load, before the claim) the
    rows still pending are released and marked ``failed`` with it, counted as a fault that may pass
    (the next sweep sends them again, a bounded number of times), and the error is re-raised.
    """
    model = apps.get_model(model_label)
    # Load the models before claiming: a new worker's first task does not spend its lease waiting.
    try:
        get_embedding_field(model, field).get_encoder().ensure_loaded()
    except TRANSIENT_ERRORS:
        raise  # nothing claimed: retried (Celery), or the rows' lease runs out and the sweep sends them
    except Exception as exc:  # the models cannot load: the rows carry the reason, and the sweep tries again
        mark_transient_failure(model, list(pks), field, exc)
        raise
    room = max(0, TOP_UP_BATCHES * semantic_settings.BATCH_SIZE - len(pks))
    claimed = claim_rows(model, pks, token, field=field, top_up=room, force=force)
    try:
        report = embed_pks(model, claimed, field=field, force=force, claim=token)
    except TRANSIENT_ERRORS as exc:
        release(model, claimed, token, field, hold=transient_hold)
        if on_transient is not None:
            on_transient(model, claimed, exc)
        raise
    except Exception as exc:  # unexpected: the rows carry the reason, and the sweep tries them again
        release(model, claimed, token, field)
        mark_transient_failure(model, claimed, field, exc)
        raise
    release(model, claimed, token, field)
    return {
        "embedded": [str(pk) for pk in report.embedded],
        "skipped": [str(pk) for pk in report.skipped],
        "failed": {str(pk): reason for pk, reason in report.failed.items()},
    }


def release(model: Any, pks: list[Any], token: str, field: str | None, hold: float | None = None) -> None:
    """Give the claim up (held ``hold`` seconds more); if the database is gone, its lease runs out."""
    try:
        release_rows(model, pks, token, field=field, hold=hold)
    except DatabaseError as exc:
        logger.warning("Could not release %s %s: %s", model._meta.label, pks, exc)
