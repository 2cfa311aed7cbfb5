"""HTML for the admin: thumbnails, status badges, the index summary and label suggestions.

Nothing here renders a vector's values: the change form shows how many
dimensions are stored, never the numbers (numpy arrays break admin forms,
pgvector-python issues #21 and #99).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.template.defaultfilters import date as date_filter
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
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


def status_html(instance: models.Model, field: ImageEmbeddingField) -> SafeString:
    """A status badge; failed rows show their reason underneath."""
    status = getattr(instance, field.column("status"))
    label = EmbeddingStatus(status).label if status in EmbeddingStatus.values else status
    badge = format_html('<span class="si-status si-status-{}">{}</span>', status, label)
    error = getattr(instance, field.column("error"))
    if status == EmbeddingStatus.FAILED and error:
        return format_html('{}<div class="si-error">{}</div>', badge, error)
    return badge


def has_vectors(instance: models.Model, field: ImageEmbeddingField) -> bool:
    """Were vectors ever written for this row (without loading them)?"""
    return (
        getattr(instance, field.column("updated_at")) is not None
        and getattr(instance, field.column("status")) != EmbeddingStatus.FAILED
    )


def details_html(instance: models.Model, field: ImageEmbeddingField) -> SafeString:
    """Status, encoder, time and error of one row, as a small table."""
    updated = getattr(instance, field.column("updated_at"))
    visual_dims = instance._meta.get_field(field.visual_field).dimensions
    semantic_dims = instance._meta.get_field(field.semantic_field).dimensions
    rows = [
        (_("Status"), status_html(instance, field)),
        (_("Encoder"), getattr(instance, field.column("encoder")) or EMPTY),
        (_("Embedded at"), date_filter(updated, "DATETIME_FORMAT") if updated else EMPTY),
        (
            _("Vectors"),
            _("visual %(v)s-d and semantic %(s)s-d, stored") % {"v": visual_dims, "s": semantic_dims}
            if has_vectors(instance, field)
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
