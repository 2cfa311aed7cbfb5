"""HTML for the admin: thumbnails, status badges, the index summary and label suggestions.

Nothing here renders a vector's values: the change form shows how many
dimensions are stored, never the numbers (numpy arrays break admin forms,
pgvector-python issues #21 and #99).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import BooleanField, ExpressionWrapper, Q
from django.template.defaultfilters import date as date_filter
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timezone import is_naive, localtime
from django.utils.translation import gettext as _

from ..fields import EmbeddingStatus, ImageEmbeddingField

EMPTY = "—"


def file_url(file: Any) -> str:
    """The URL of a stored file, or "" when it has none (or its storage gives none)."""
    if not file:
        return ""
    try:
        return file.url
    except (ValueError, NotImplementedError):
        return ""


def thumbnail_html(url: str, alt: str, css_class: str = "si-thumb") -> SafeString | str:
    if not url:
        return EMPTY
    return format_html('<img src="{}" alt="{}" class="{}" loading="lazy">', url, alt, css_class)


def vectors_annotation(field: ImageEmbeddingField) -> str:
    """Name of the ``has vectors`` annotation the admin's querysets carry (see ``vectors_stored``)."""
    return f"_si_{field.name}_has_vectors"


def vectors_stored(field: ImageEmbeddingField) -> ExpressionWrapper:
    """True where both vector columns hold a vector; an annotation, so the vectors stay unloaded."""
    stored = Q(**{f"{field.visual_field}__isnull": False, f"{field.semantic_field}__isnull": False})
    return ExpressionWrapper(stored, output_field=BooleanField())


def has_vectors(instance: models.Model, field: ImageEmbeddingField) -> bool:
    """Does this row hold vectors now? From the admin's annotation, the loaded columns, or one query.

    The status alone does not say: a new row is ``pending`` with no vectors, a row being
    embedded again is ``pending`` with its previous ones, a failed row has none.
    """
    annotated = getattr(instance, vectors_annotation(field), None)
    if annotated is not None:
        return bool(annotated)
    columns = (field.visual_field, field.semantic_field)
    if not set(columns) & instance.get_deferred_fields():
        return all(getattr(instance, column) is not None for column in columns)
    if instance.pk is None:
        return False
    return (
        type(instance)
        ._base_manager.using(instance._state.db)
        .filter(pk=instance.pk, **{f"{column}__isnull": False for column in columns})
        .exists()
    )


@dataclass(frozen=True)
class EmbeddingState:
    """What an editor is told about one row: a badge (``key`` is its CSS class) and a note."""

    key: str
    label: str
    note: str = ""


def embedding_state(instance: models.Model, field: ImageEmbeddingField) -> EmbeddingState:
    """The row's real state, from its status and whether vectors are stored."""
    status = getattr(instance, field.column("status"))
    stored = has_vectors(instance, field)
    if status == EmbeddingStatus.FAILED:
        return EmbeddingState("failed", _("Failed"), getattr(instance, field.column("error")) or "")
    if status == EmbeddingStatus.EMBEDDED:
        if stored:
            return EmbeddingState("embedded", _("Embedded"))
        return EmbeddingState("missing", _("No vectors"), _("Marked embedded, but no vectors are stored: re-embed it."))
    if status == EmbeddingStatus.PENDING:
        if stored:
            return EmbeddingState(
                "pending", _("Pending"), _("Being embedded again; its previous vectors are still searched.")
            )
        return EmbeddingState("pending", _("Pending"), _("Not embedded yet: not found by searches until it is."))
    return EmbeddingState(str(status), str(status))


def status_html(instance: models.Model, field: ImageEmbeddingField) -> SafeString:
    """A status badge; a failed row shows its reason underneath, a pending one what that means."""
    state = embedding_state(instance, field)
    badge = format_html('<span class="si-status si-status-{}">{}</span>', state.key, state.label)
    if not state.note:
        return badge
    css = "si-error" if state.key in ("failed", "missing") else "si-note"
    return format_html('{}<div class="{}">{}</div>', badge, css, state.note)


def details_html(instance: models.Model, field: ImageEmbeddingField) -> SafeString:
    """Status, encoder, time and error of one row, as a small table."""
    updated = getattr(instance, field.column("updated_at"))
    status = getattr(instance, field.column("status"))
    stored = has_vectors(instance, field)
    when = {
        EmbeddingStatus.PENDING: _("Pending since"),
        EmbeddingStatus.FAILED: _("Failed at"),
    }.get(status, _("Embedded at"))
    visual_dims = getattr(instance._meta.get_field(field.visual_field), "dimensions", None)
    semantic_dims = getattr(instance._meta.get_field(field.semantic_field), "dimensions", None)
    rows = [
        (_("Status"), status_html(instance, field)),
        (_("Encoder"), (getattr(instance, field.column("encoder")) or EMPTY) if stored else EMPTY),
        # In the site's time zone, as templates show dates (the filter called here does not convert).
        (
            when,
            date_filter(updated if is_naive(updated) else localtime(updated), "DATETIME_FORMAT") if updated else EMPTY,
        ),
        (
            _("Vectors"),
            _("visual %(v)s-d and semantic %(s)s-d, stored") % {"v": visual_dims, "s": semantic_dims}
            if stored
            else _("none yet"),
        ),
    ]
    body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
    return format_html('<table class="si-details">{}</table>', body)


def confident_labels(labels: Iterable[dict[str, Any]] | None, min_probability: float) -> list[dict[str, Any]]:
    """The stored labels at or above ``min_probability``, best first."""
    good = [
        item
        for item in labels or []
        if isinstance(item, dict) and item.get("label") and float(item.get("probability", 0)) >= min_probability
    ]
    return sorted(good, key=lambda item: -float(item["probability"]))


def suggestions_html(labels: list[dict[str, Any]], target_id: str | None) -> SafeString | str:
    """One button per label; a click fills the target field in the browser (see suggestions.js).

    Nothing is saved until the editor saves the form.
    """
    if not labels:
        return _("No confident labels for this picture.")
    if target_id is None:
        return format_html_join(
            ", ", "{} ({}%)", ((item["label"], round(100 * float(item["probability"]))) for item in labels)
        )
    buttons = format_html_join(
        " ",
        '<button type="button" class="button si-suggestion" data-semantic-suggestion="{}" data-target="{}" '
        'title="{}">{} <small>{}%</small></button>',
        (
            (
                item["label"],
                target_id,
                _("Add to the field; nothing is saved until you save"),
                item["label"],
                round(100 * float(item["probability"])),
            )
            for item in labels
        ),
    )
    return format_html('<div class="si-suggestions">{}</div>', buttons)
