"""Queue embedding when a row is created or its image or text fields change.

A snapshot of the inputs is taken when an instance is loaded; a save that
changes none of them sends no work. Work is sent after the transaction
commits, so a worker never reads a row that is not there yet, and the rows
saved in one transaction travel together (one task per ``BATCH_SIZE`` rows).
A row marked ``pending`` gets ``<field>_updated_at = now``: the sweep reads it
as "pending since".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from .conf import semantic_settings
from .fields import EmbeddingStatus, ImageEmbeddingField, embedding_fields

SNAPSHOT_ATTR = "_semantic_images_inputs"
_state = threading.local()


@contextmanager
def embedding_deferred() -> Iterator[None]:
    """Saves inside this block send no work (bulk loads embed afterwards, in batches)."""
    previous = getattr(_state, "deferred", False)
    _state.deferred = True
    try:
        yield
    finally:
        _state.deferred = previous


def _inputs(instance: models.Model, field: ImageEmbeddingField) -> dict[str, Any]:
    """The loaded values the vectors depend on (deferred fields are left out, never fetched)."""
    deferred = instance.get_deferred_fields()
    values: dict[str, Any] = {}
    for attr in (field.image_field, *field.text_fields):
        if attr in deferred:
            continue
        value = getattr(instance, attr, None)
        values[attr] = (getattr(value, "name", None) or "") if attr == field.image_field else value
    return values


def _snapshot(instance: models.Model) -> None:
    setattr(
        instance,
        SNAPSHOT_ATTR,
        {f.name: _inputs(instance, f) for f in embedding_fields(type(instance))},
    )


def _changed(instance: models.Model, field: ImageEmbeddingField) -> bool:
    before = getattr(instance, SNAPSHOT_ATTR, {}).get(field.name)
    if before is None:
        return True
    now = _inputs(instance, field)
    # A field deferred at load time and set since then may have changed: the pipeline's
    # content hash makes a needless check cheap.
    return any(attr not in before or before[attr] != value for attr, value in now.items())


def post_init_handler(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if instance.pk is not None:
        _snapshot(instance)


def pre_save_handler(sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    changed = [f.name for f in embedding_fields(sender) if instance._state.adding or _changed(instance, f)]
    instance._semantic_images_changed = changed
    for name in changed:
        field = next(f for f in embedding_fields(sender) if f.name == name)
        setattr(instance, field.column("status"), EmbeddingStatus.PENDING)
        setattr(instance, field.column("error"), "")
        setattr(instance, field.column("updated_at"), timezone.now())


def post_save_handler(sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    changed = getattr(instance, "_semantic_images_changed", [])
    instance._semantic_images_changed = []
    _snapshot(instance)
    if raw or not changed or not semantic_settings.EMBED_ON_SAVE or getattr(_state, "deferred", False):
        return
    using = kwargs.get("using") or "default"
    for name in changed:
        schedule(sender, instance.pk, name, using)


class PendingRows:
    """An on-commit callback that sends the rows saved in one transaction, batched."""

    def __init__(self) -> None:
        # (model, field) -> primary keys, in save order, each once (a dict keeps order and is O(1)).
        self.rows: dict[tuple[type[models.Model], str], dict[Any, None]] = {}

    def add(self, model: type[models.Model], pk: Any, field: str) -> None:
        self.rows.setdefault((model, field), {})[pk] = None

    def __call__(self) -> None:
        from .dispatch import request_embedding

        for (model, field), pks in self.rows.items():
            request_embedding(model, list(pks), field=field)


def schedule(model: type[models.Model], pk: Any, field: str, using: str = "default") -> None:
    """Embed this row once the current transaction commits (now, outside a transaction).

    Rows saved at the same savepoint level share one callback, so a rolled-back
    savepoint drops exactly the rows saved inside it.
    """
    connection = transaction.get_connection(using)
    if connection.in_atomic_block:
        level = set(connection.savepoint_ids)
        for hook_level, func, *_ in connection.run_on_commit:
            if isinstance(func, PendingRows) and hook_level == level:
                func.add(model, pk, field)
                return
    pending = PendingRows()
    pending.add(model, pk, field)
    transaction.on_commit(pending, using=using)


def connect(model: type[models.Model]) -> None:
    """Wire the handlers for one model with an ImageEmbeddingField."""
    uid = f"semantic_images:{model._meta.label}"
    models.signals.post_init.connect(post_init_handler, sender=model, dispatch_uid=uid)
    models.signals.pre_save.connect(pre_save_handler, sender=model, dispatch_uid=uid)
    models.signals.post_save.connect(post_save_handler, sender=model, dispatch_uid=uid)
