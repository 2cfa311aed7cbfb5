"""After an admin save that asked for embedding: tell the editor what became of it.

The model's signals send the work once the transaction commits (queued, or run
in-process without a broker). The callback registered here runs after theirs,
reads the row's status columns back from the database and adds a message:
embedded, failed with its reason, queued, or still pending.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.db import models, router, transaction
from django.http import HttpRequest
from django.utils.translation import gettext as _

from ..bidi import name_in_sentence
from ..conf import semantic_settings
from ..dispatch import use_queue
from ..fields import EmbeddingStatus, ImageEmbeddingField

logger = logging.getLogger(__name__)

#: The columns read back after the save (never the vectors).
STATE_COLUMNS = ("status", "error", "updated_at", "encoder", "hash", "labels", "claimed_by", "lease_until")


def embedding_requested(instance: models.Model, field: ImageEmbeddingField, updated_before: Any) -> bool:
    """Did the save just made mark the row pending (a new row, or a changed image or text)?

    The signals stamp ``<field>_updated_at`` with the time a row became pending, so a
    changed stamp on a pending row means this save asked for embedding.
    """
    return (
        getattr(instance, field.column("status")) == EmbeddingStatus.PENDING
        and getattr(instance, field.column("updated_at")) != updated_before
    )


def embedding_message(instance: models.Model, field: ImageEmbeddingField) -> tuple[int, str]:
    """The message level and text for the row's state after its embedding was requested.

    A pending row without a lease or a claim was not sent: the signals lease a row they mark
    pending, and ``dispatch.forget_sent`` drops the lease of work the engine refused."""
    status = getattr(instance, field.column("status"))
    name = {"obj": instance}  # isolated for bidirectional text (bidi.name_in_sentence)
    if status == EmbeddingStatus.EMBEDDED:
        return messages.SUCCESS, name_in_sentence(_("“%(obj)s” was embedded: searches find it now."), name)
    if status == EmbeddingStatus.FAILED:
        reason = getattr(instance, field.column("error")) or _("no reason given")
        return messages.ERROR, _("The image could not be embedded: %(reason)s") % {"reason": reason}
    if not semantic_settings.EMBED_ON_SAVE:  # no work was sent: the signals only marked it pending
        return messages.INFO, name_in_sentence(
            _(
                "“%(obj)s” is pending: embedding on save is off (EMBED_ON_SAVE), so the periodic sweep or "
                "semantic_images_reindex embeds it."
            ),
            name,
        )
    if use_queue():
        if not getattr(instance, field.column("claimed_by")) and getattr(instance, field.column("lease_until")) is None:
            # The engine refused the work (dispatch.forget_sent dropped the lease the signals set).
            return messages.WARNING, name_in_sentence(
                _("“%(obj)s” could not be queued now and stays pending; the periodic sweep will send it."),
                name,
            )
        return messages.INFO, name_in_sentence(
            _("Embedding was queued; “%(obj)s” shows as pending, and searches find it once a worker has embedded it."),
            name,
        )
    return messages.WARNING, name_in_sentence(
        _("“%(obj)s” could not be embedded now and stays pending; the periodic sweep will try again."),
        name,
    )


def report_after_commit(
    model_admin: Any, request: HttpRequest, instance: models.Model, field: ImageEmbeddingField
) -> None:
    """Once the transaction commits (after the signals' embedding request), add the message."""

    def report() -> None:
        try:
            instance.refresh_from_db(fields=[field.column(suffix) for suffix in STATE_COLUMNS])
            level, text = embedding_message(instance, field)
        except Exception:  # the save has succeeded: a failed report must not turn it into an error page
            logger.exception("Could not read back the embedding state of %s pk=%s", type(instance), instance.pk)
            return
        model_admin.message_user(request, text, level)

    transaction.on_commit(report, using=router.db_for_write(type(instance), instance=instance))
