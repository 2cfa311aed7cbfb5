"""Writing a row's result: only while its inputs are unchanged, and with a claim only while the
claim holds it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Q

from ..fields import ImageEmbeddingField
from .reading import _Item
from .rows import primary_rows


def inputs_unchanged(model: type[models.Model], field: ImageEmbeddingField, item: _Item) -> Q:
    """The row still holds the inputs ``item`` was embedded from: its image file, and the values
    of the text fields that are its own columns (texts read through a relation or a property
    change on another row, whose saves ask for the work)."""
    stored = getattr(item.file, "name", "") or ""
    # No file: an empty name, a NULL column, or an empty relation ("image__file" across a null key).
    same = (
        Q(**{field.image_field: stored})
        if stored
        else Q(**{field.image_field: ""}) | Q(**{f"{field.image_field}__isnull": True})
    )
    loaded = item.instance.__dict__
    for attr in field.text_fields:
        try:
            column = model._meta.get_field(attr)
        except FieldDoesNotExist:  # a relation path or a property
            continue
        if not isinstance(column, models.Field) or not column.concrete or column.attname not in loaded:
            continue
        value = loaded[column.attname]
        same &= Q(**{f"{column.attname}__isnull": True}) if value is None else Q(**{column.attname: value})
    return same


def not_marked_since(field: ImageEmbeddingField, item: _Item) -> Q:
    """The row's "pending since" (``updated_at``) is still the one ``item`` was loaded with: no save
    changed its inputs since (a save sets it, even one that put a new file under the same name, on a
    storage that overwrites, where the name alone looks unchanged), no re-embed or sweep marked it
    again and no other run wrote it. No condition when the column was not loaded."""
    column = field.column("updated_at")
    loaded = item.instance.__dict__
    if column not in loaded:
        return Q()
    value = loaded[column]
    return Q(**{f"{column}__isnull": True}) if value is None else Q(**{column: value})


def texts_elsewhere(model: type[models.Model], field: ImageEmbeddingField, item: _Item) -> bool:
    """Does one of ``item``'s texts come from outside the row's loaded columns (a relation path,
    a property, a deferred column), where ``inputs_unchanged`` cannot compare it?"""
    loaded = item.instance.__dict__
    for attr in field.text_fields:
        try:
            column = model._meta.get_field(attr)
        except FieldDoesNotExist:
            return True
        if not isinstance(column, models.Field) or not column.concrete or column.attname not in loaded:
            return True
    return False


def texts_unchanged(model: type[models.Model], field: ImageEmbeddingField, item: _Item) -> bool:
    """Are the row's texts, read again now, those ``item`` was embedded from? The row is locked
    until the batch commits (not the rows its texts come from), so an edit that marks it pending
    meanwhile waits, and its own embedding comes after this write."""
    rows = primary_rows(model).select_for_update(of=("self",)).filter(pk=item.instance.pk)
    related = field.related_paths()
    if related:
        rows = rows.select_related(*related)
    current = rows.defer(field.visual_field, field.semantic_field).first()
    return current is not None and field.texts(current) == item.texts


def _write(
    model: type[models.Model], field: ImageEmbeddingField, item: _Item, values: dict[str, Any], claim: str | None
) -> bool:
    """Store ``values`` and end the row's claim, unless its inputs changed meanwhile (a newer
    task will embed it: a run without a claim, e.g. in-process or the reindex command, never
    writes vectors of texts an editor has changed since, even texts read through a relation or
    a property, such as a Wagtail image's, nor of a file replaced under the same name: the row
    was marked pending since) or, with ``claim``, the row is no longer held by that claim (an
    edit ends the claim)."""
    values = {field.column("claimed_by"): "", field.column("lease_until"): None, **values}
    unchanged = inputs_unchanged(model, field, item)
    if claim is not None:
        unchanged &= Q(**{field.column("claimed_by"): claim})
    elif texts_elsewhere(model, field, item) and not texts_unchanged(model, field, item):
        return False
    else:
        unchanged &= not_marked_since(field, item)
    updated = primary_rows(model).filter(unchanged, pk=item.instance.pk).update(**values)
    for name, value in values.items():
        setattr(item.instance, name, value)
    return bool(updated)
