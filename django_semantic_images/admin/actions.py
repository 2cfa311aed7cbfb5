"""The admin action that re-embeds the selected rows through the normal pipeline, and the mixin
that offers it on the changelist (and keeps forged selected ids from reaching Django's filter)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_POPUP_VAR
from django.db import router, transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from ..dispatch import request_embedding, use_queue
from ..fields import EmbeddingStatus, ImageEmbeddingField, get_embedding_field
from ..keys import well_formed_keys
from ..pipeline.leases import lease_until
from .base import SemanticAdminBase

#: Rows handed to ``request_embedding`` at a time (which sends one task per ``BATCH_SIZE`` of them).
CHUNK = 100


def chunks(pks: list[Any]) -> list[list[Any]]:
    return [pks[start : start + CHUNK] for start in range(0, len(pks), CHUNK)]


def changeable_pks(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet, field: ImageEmbeddingField
) -> tuple[list[Any], int]:
    """The keys of the selected rows the user may change (``has_change_permission(request, obj)``,
    as the change form asks it), and how many others were selected."""
    rows = queryset.order_by().defer(field.visual_field, field.semantic_field)
    pks, refused = [], 0
    for obj in rows.iterator(chunk_size=CHUNK):
        if modeladmin.has_change_permission(request, obj):
            pks.append(obj.pk)
        else:
            refused += 1
    return pks, refused


def left_out(refused: int) -> str:
    return ngettext(
        "%(n)d selected image you may not change was left out.",
        "%(n)d selected images you may not change were left out.",
        refused,
    ) % {"n": refused}


def queue_and_report(
    modeladmin: Any, request: HttpRequest, model: Any, pks: list[Any], field: str, refused: int = 0
) -> None:
    """Send the rows to the background engine, a task per chunk, and tell the editor how many went
    (and how many of the selected rows they may not change were left out)."""
    unsent = sum(len(chunk) for chunk in chunks(pks) if not request_embedding(model, chunk, field=field))
    queued = len(pks) - unsent
    texts: list[str] = []
    if queued:
        texts.append(
            ngettext("%(n)d image was queued for embedding.", "%(n)d images were queued for embedding.", queued)
            % {"n": queued}
        )
    if unsent:
        texts.append(
            ngettext(
                "%(n)d image could not be queued and stays pending; the periodic sweep will send it.",
                "%(n)d images could not be queued and stay pending; the periodic sweep will send them.",
                unsent,
            )
            % {"n": unsent}
        )
    if refused:
        texts.append(left_out(refused))
    modeladmin.message_user(request, " ".join(texts), messages.WARNING if unsent or refused else messages.SUCCESS)


@admin.action(description=gettext_lazy("Re-embed selected images"), permissions=["change"])
def reembed_selected(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    """Mark the rows pending and send them to the pipeline, even when their content is unchanged.

    The old vectors stay searchable until the new ones are written; if the queue is
    down, the rows stay pending and the periodic sweep embeds them. Rows the user may not
    change (the admin's ``has_change_permission(request, obj)``) are left out, and counted.
    """
    model = queryset.model
    field = get_embedding_field(model, getattr(modeladmin, "embedding_field", None))
    pks, refused = changeable_pks(modeladmin, request, queryset, field)
    if not pks:
        # None left: all refused, or the selected rows are gone (deleted, or hidden: alike).
        text = (
            ngettext(
                "You may not change the selected image: nothing was re-embedded.",
                "You may not change the selected images: nothing was re-embedded.",
                refused,
            )
            if refused
            else _("The selected images are no longer listed: nothing was re-embedded.")
        )
        modeladmin.message_user(request, text, messages.WARNING)
        return
    # A cleared hash makes the pipeline embed again instead of skipping unchanged content. Pending
    # since now, with the lease of the task sent below and no claim: the sweep leaves the rows to
    # that task, and a worker still embedding them can no longer write them.
    model._default_manager.filter(pk__in=pks).update(
        **{
            field.column("status"): EmbeddingStatus.PENDING,
            field.column("error"): "",
            field.column("hash"): "",
            field.column("updated_at"): timezone.now(),
            field.column("claimed_by"): "",
            field.column("lease_until"): lease_until(),
        }
    )
    if use_queue():
        # Workers must find the rows pending: send the tasks once this transaction commits, then say
        # how many went (a broker that is down leaves the rest pending, for the sweep).
        send = partial(queue_and_report, modeladmin, request, model, pks, field.name, refused)
        transaction.on_commit(send, using=router.db_for_write(model))
        return
    for chunk in chunks(pks):
        request_embedding(model, chunk, field=field.name)
    counts = dict(
        model._default_manager.filter(pk__in=pks)
        .order_by()
        .values(field.column("status"))
        .annotate(n=Count("pk"))
        .values_list(field.column("status"), "n")
    )
    embedded, failed = counts.get(EmbeddingStatus.EMBEDDED, 0), counts.get(EmbeddingStatus.FAILED, 0)
    text = ngettext(
        "Re-embedded %(embedded)d of %(total)d image.", "Re-embedded %(embedded)d of %(total)d images.", len(pks)
    ) % {"embedded": embedded, "total": len(pks)}
    if failed:
        text += " " + _("%(failed)d failed: filter by embedding status “Failed” to see why.") % {"failed": failed}
    if refused:
        text += " " + left_out(refused)
    modeladmin.message_user(request, text, messages.WARNING if failed or refused else messages.SUCCESS)


class ReembedActionMixin(SemanticAdminBase):
    """``reembed_selected`` among the changelist's actions, for users who may change rows."""

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """Adds "re-embed" to the change list's actions. Django 6.1 also asks for the change form's
        actions (``action_location``); earlier versions never pass it."""
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg]  # Django 6.1
        on_change_list = getattr(action_location, "name", "CHANGE_LIST") == "CHANGE_LIST"
        if self.actions is None or IS_POPUP_VAR in request.GET or "reembed_selected" in actions or not on_change_list:
            return actions
        if self.has_change_permission(request):
            # A (func, name, description) tuple before Django 6.1, an Action object since (whose
            # indexing is deprecated): stored under its name, never unpacked.
            action = self.get_action(reembed_selected)
            if action is not None:
                actions[reembed_selected.__name__] = action
        return actions

    def response_action(
        self, request: HttpRequest, queryset: QuerySet, *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """Django's, with the selected ids that no row can have left out (a forged ``abc`` on an
        integer key): Django filters by them as posted, a ``ValueError`` (a 500). Django 6.1 also
        passes ``action_location``."""
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        kept = well_formed_keys(self.model, selected)
        if len(kept) != len(selected):
            post = request.POST.copy()
            post.setlist(ACTION_CHECKBOX_NAME, [str(pk) for pk in kept])
            request.POST = post  # type: ignore[assignment]
        return super().response_action(request, queryset, *args, **kwargs)
