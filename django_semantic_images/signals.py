"""Queue embedding when a row is created or its image or text fields change.

A snapshot of the inputs is taken when an instance is loaded; a save that
changes none of them sends no work. Work is sent after the transaction
commits, so a worker never reads a row that is not there yet, and the rows
saved in one transaction travel together (one task per ``BATCH_SIZE`` rows).
A row marked ``pending`` gets ``<field>_updated_at = now`` ("pending since"), no
claim (a worker still embedding the old content can no longer write it), and a
lease of ``LEASE`` seconds for the task about to be sent; if it cannot be sent,
dispatch drops the lease and the next sweep sends it.

``save(update_fields=[...])`` counts only the inputs it names; when one of them
changed, the embedding state columns are written too, right after the save.

A save of a multi-table parent (``Photo``) that changes a column a subclass's own field reads
(``CaptionedPhoto.caption_embedding`` on the image it inherits) marks that subclass's row pending
too (``subclass_fields``): Django sends the subclass no signal for it.

A save inside a transaction updates the snapshot at once, and remembers the one before until
the transaction commits: when it rolls back instead, the next save of the same instance is
compared with the inputs still stored, so a retry after a rollback is embedded.
``refresh_from_db()`` (and Django's loading of a deferred field, which calls it) takes the
snapshot again of what it reloaded (``after_refresh``): Django sends no signal for it.

A save that puts another file in an embedding field's image field (the model's own) sends
``image_file_changed`` after it, embedding deferred or not: what is kept of the file's name
elsewhere (its thumbnail) is no longer the picture, even under the name stored before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.db.models.constants import LOOKUP_SEP
from django.dispatch import Signal
from django.utils import timezone

from .conf import semantic_settings
from .fields import (
    WRITTEN_ATTR,
    EmbeddingStatus,
    ImageEmbeddingField,
    embedding_fields,
    get_embedding_field,
    models_with_embeddings,
    own_embedding_fields,
)
from .pipeline.leases import lease_until

SNAPSHOT_ATTR = "_semantic_images_inputs"
#: Names of the embedding fields whose inputs a save changed (set in pre_save, read in post_save).
CHANGED_ATTR = "_semantic_images_changed"
#: Saves of the instance in transactions not committed yet: (its commit hook, the snapshot before).
UNCOMMITTED_ATTR = "_semantic_images_uncommitted"
#: Names of the embedding fields whose image file a save changed (set in pre_save, read in post_save).
IMAGE_CHANGED_ATTR = "_semantic_images_image_changed"
#: The multi-table subclasses' fields whose inputs a save of their parent changed: (subclass, field,
#: whether the picture changed) (set in pre_save, read in post_save).
SUBCLASS_CHANGED_ATTR = "_semantic_images_subclass_changed"

#: Sent after a save that put another file in an embedding field's image field (a new file, even
#: under the name stored before, or another name): ``sender`` the model, ``instance``, ``field``
#: (the ``ImageEmbeddingField``) and ``file`` (the stored file).
image_file_changed = Signal()
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


def embedding_is_deferred() -> bool:
    """Is this thread inside an ``embedding_deferred()`` block?"""
    return getattr(_state, "deferred", False)


def _inputs(instance: models.Model, field: ImageEmbeddingField) -> dict[str, Any]:
    """The loaded values the vectors depend on (deferred fields are left out, never fetched).

    Only the row's own fields count (``_own_column``): values read through a relation or a
    property change on another row, whose own saves ask for the work (e.g. ``contrib.wagtail`` on
    image saves); for a path through a relation, the key it starts with stands for it (another
    row pointed to is another input). Values are read from the instance's ``__dict__``, without
    descriptors (each search result runs this when it is loaded); a deferred field is not in it
    (``Model.get_deferred_fields``).
    """
    model = type(instance)
    loaded = instance.__dict__
    values: dict[str, Any] = {}
    for attr in (field.image_field, *field.text_fields):
        column = _own_column(model, attr)
        if column is None or column[1] not in loaded:
            continue
        value = loaded[column[1]]
        if attr == field.image_field and LOOKUP_SEP not in attr and not isinstance(value, str):
            value = _file_input(value)
        values[attr] = value
    return values


class _NewFile(str):
    """The name of a file assigned and not stored yet: a new picture even under the stored name
    (``photo.image = ContentFile(data, name=photo.image.name)``), so never equal to a name."""

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


def _file_input(value: Any) -> str:
    """The image input of a file attribute: its name, or a ``_NewFile`` when not stored yet.

    In ``__dict__`` it is a stored ``FieldFile``, a ``FieldFile`` wrapping a file assigned since
    (``_committed`` False until the save stores it), or that assigned ``File`` itself.
    """
    name = getattr(value, "name", None) or ""
    if name and not getattr(value, "_committed", False):
        return _NewFile(name)
    return name


_own: dict[type, dict[str, str]] = {}


def _own_attnames(model: type[models.Model]) -> dict[str, str]:
    """Name -> attribute name of each of ``model``'s own concrete fields (read once per model)."""
    found = _own.get(model)
    if found is None:
        found = _own[model] = {f.name: f.attname for f in model._meta.concrete_fields}
    return found


def _own_column(model: type[models.Model], path: str) -> tuple[str, str] | None:
    """The name and attribute name of the row's own field an input at ``path`` is read from: the
    field itself, or the foreign key (or one-to-one) a path through a relation starts with; None
    for a property or a relation the row holds no key of."""
    name = path.split(LOOKUP_SEP, 1)[0]
    attname = _own_attnames(model).get(name)
    return None if attname is None else (name, attname)


def _saved(model: type[models.Model], path: str, saved: frozenset[str]) -> bool:
    """Does ``save(update_fields=saved)`` write the own field of the input at ``path`` (by its
    name or its attribute name, as Django takes either)?"""
    column = _own_column(model, path)
    return column is not None and not saved.isdisjoint(column)


#: The columns that say where a row's embedding stands (written when an input changes).
STATE_SUFFIXES = ("status", "error", "updated_at", "claimed_by", "lease_until", "visual_norm")

_below: dict[type, tuple[tuple[type[models.Model], ImageEmbeddingField], ...]] = {}


def subclass_fields(model: type[models.Model]) -> tuple[tuple[type[models.Model], ImageEmbeddingField], ...]:
    """The fields of ``model``'s multi-table subclasses (each one's own) that read an input from a
    column of ``model``'s table, e.g. a subclass's field on the image it inherits: a save of a
    ``model`` instance (not of the subclass: Django sends it no signal) may change them (read once)."""
    concrete = model._meta.concrete_model
    assert concrete is not None
    found = _below.get(concrete)
    if found is None:
        found = _below[concrete] = tuple(
            (sub, field)
            for sub in models_with_embeddings()
            if sub is not concrete and concrete in sub._meta.get_parent_list()
            for field in own_embedding_fields(sub)
            if any(_own_column(concrete, attr) for attr in (field.image_field, *field.text_fields))
        )
    return found


def _key(sub: type[models.Model], field: ImageEmbeddingField) -> str:
    """The snapshot's key of a subclass's field (``subclass_fields``); a field of the model's own is
    under its name, which has no dot."""
    return f"{sub._meta.label}.{field.name}"


def _watched(model: type[models.Model]) -> list[tuple[str, ImageEmbeddingField]]:
    """The fields whose inputs a save of ``model`` may change, by snapshot key."""
    return [(f.name, f) for f in embedding_fields(model)] + [(_key(sub, f), f) for sub, f in subclass_fields(model)]


def _snapshot(instance: models.Model, saved: frozenset[str] | None = None) -> None:
    """Remember the inputs as stored: all of them, or after ``save(update_fields=saved)`` those saved."""
    current = {key: _inputs(instance, f) for key, f in _watched(type(instance))}
    previous = getattr(instance, SNAPSHOT_ATTR, None)
    if saved is not None and previous is not None:
        for name, values in current.items():
            kept = dict(previous.get(name, {}))
            kept.update({attr: value for attr, value in values.items() if _saved(type(instance), attr, saved)})
            current[name] = kept
    setattr(instance, SNAPSHOT_ATTR, current)


def _changed(
    instance: models.Model, field: ImageEmbeddingField, saved: frozenset[str] | None = None, key: str | None = None
) -> bool:
    """Did the save change an input of ``field`` (a subclass's under ``key``)? (Only the inputs in
    ``saved`` when given.)"""
    model = type(instance)
    if saved is not None and not any(_saved(model, attr, saved) for attr in (field.image_field, *field.text_fields)):
        return False
    # No snapshot (None: a new instance whose first save rolled back) means nothing stored yet.
    before = (getattr(instance, SNAPSHOT_ATTR, None) or {}).get(key or field.name)
    if before is None:
        return True
    now = _inputs(instance, field)
    if saved is not None:
        now = {attr: value for attr, value in now.items() if _saved(model, attr, saved)}
    # A field deferred at load time and set since then counts as changed, unseen: the row
    # becomes pending and is embedded again in full (the pipeline skips only embedded rows).
    return any(attr not in before or before[attr] != value for attr, value in now.items())


def _image_changed(
    instance: models.Model, field: ImageEmbeddingField, saved: frozenset[str] | None = None, key: str | None = None
) -> bool:
    """Does the save put another picture in ``field``'s image field, or empty it: another file in the
    model's own, or, for a path through a relation, the key pointed to another row (a new file on the
    row pointed to is for that row's saves to tell)? For a new row, only when the save stores the
    file (``_NewFile``, e.g. an upload): one stored before the save (``image.save(name, content,
    save=False)``) is not told apart, as for the embedding."""
    attr = field.image_field
    if saved is not None and not _saved(type(instance), attr, saved):
        return False
    inputs = _inputs(instance, field)
    if attr not in inputs:  # a deferred field
        return False
    now = inputs[attr]
    before = (getattr(instance, SNAPSHOT_ATTR, None) or {}).get(key or field.name)
    if before is None:
        return isinstance(now, _NewFile)
    return bool(before.get(attr) != now)


class Committed:
    """An on-commit hook that records that the transaction of a save committed."""

    done = False

    def __call__(self) -> None:
        self.done = True

    def waiting(self, connection: Any) -> bool:
        """Whether the hook still waits for its transaction (neither run nor dropped by a rollback)."""
        return not self.done and any(entry[1] is self for entry in connection.run_on_commit)


def hook_at_level(connection: Any, kind: type) -> Any:
    """The on-commit hook of class ``kind`` registered at the current savepoint level, or None.

    The saves at one level share one hook of each kind, so a rolled-back savepoint drops exactly
    what was registered inside it. The hooks of a transaction are met in the order they came, so
    the search stops at the first save's (Django keeps the list per transaction).
    """
    level = set(connection.savepoint_ids)
    return next(
        (
            func
            for hook_level, func, *_ in connection.run_on_commit
            # A hook that ran is still listed where the transaction never commits: a test whose
            # captureOnCommitCallbacks(execute=True) ran it. A new save gets a hook of its own.
            if isinstance(func, kind) and hook_level == level and not getattr(func, "done", False)
        ),
        None,
    )


def remember_uncommitted(
    instance: models.Model, previous: Any, using: str, *, snapshot: str = SNAPSHOT_ATTR, saves: str = UNCOMMITTED_ATTR
) -> None:
    """After a save in a transaction: keep the snapshot before it (``previous``, of the attribute
    ``snapshot``) until the transaction commits, listed in the attribute ``saves``."""
    connection = transaction.get_connection(using)
    if not connection.in_atomic_block:
        return
    hook = hook_at_level(connection, Committed)
    if hook is None or hook.done:
        hook = Committed()
        transaction.on_commit(hook, using=using)
    instance.__dict__.setdefault(saves, []).append((hook, previous, using))


def settle(instance: models.Model, *, snapshot: str = SNAPSHOT_ATTR, saves: str = UNCOMMITTED_ATTR) -> None:
    """Before comparing a save with the snapshot: undo the snapshots of earlier saves whose
    transaction rolled back (their hook neither ran nor waits any more), newest first; forget
    those that committed."""
    listed = instance.__dict__.get(saves)
    while listed:
        hook, previous, using = listed[-1]
        if hook.done:
            listed.clear()  # committed, with every earlier one still listed (one transaction)
            break
        if hook.waiting(transaction.get_connection(using)):
            break  # its transaction is still open
        setattr(instance, snapshot, previous)  # rolled back: the row still holds those inputs
        listed.pop()


def post_init_handler(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if instance.pk is not None:
        _snapshot(instance)


#: On a wrapped ``refresh_from_db``: the callbacks it runs after the reload.
REFRESH_CALLBACKS_ATTR = "_semantic_images_after_refresh"
Refreshed = Callable[[models.Model, Collection[str] | None], None]


def after_refresh(model: type[models.Model], callback: Refreshed) -> None:
    """Run ``callback(instance, fields)`` after each ``refresh_from_db()`` of ``model``'s instances
    (``fields``: the names it was given, None for all). Django sends no signal for it: the instance
    takes the values of another instance it loads (whose ``post_init`` is what fires), so a snapshot
    taken at load time would still hold the values from before. Once per model and callback."""
    method = model.refresh_from_db
    callbacks = getattr(method, REFRESH_CALLBACKS_ATTR, ())
    if callback in callbacks:
        return

    @functools.wraps(method)
    def refresh_from_db(self: models.Model, *args: Any, **kwargs: Any) -> None:
        method(self, *args, **kwargs)
        fields = kwargs["fields"] if "fields" in kwargs else (args[1] if len(args) > 1 else None)
        callback(self, fields)

    setattr(refresh_from_db, REFRESH_CALLBACKS_ATTR, (*callbacks, callback))
    model.refresh_from_db = refresh_from_db  # type: ignore[method-assign]


def refreshed(instance: models.Model, fields: Collection[str] | None) -> None:
    """After ``refresh_from_db()``: the inputs it reloaded are what the row stores (those of a save
    rolled back since are undone first, ``settle``)."""
    if instance.pk is not None:
        settle(instance)
        _snapshot(instance, None if fields is None else frozenset(fields))


def pre_save_handler(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    if raw:
        return
    settle(instance)
    changed = [f for f in embedding_fields(sender) if instance._state.adding or _changed(instance, f, update_fields)]
    setattr(instance, CHANGED_ATTR, [f.name for f in changed])
    new_picture = [f for f in changed if _image_changed(instance, f, update_fields)]
    setattr(instance, IMAGE_CHANGED_ATTR, [f.name for f in new_picture])
    # The state columns this save writes, and those its update_fields name; the others keep what is
    # stored (fields.KeptOnUpdate): the instance's copy may be older than the vectors written since.
    written = {f.column(suffix) for f in changed for suffix in STATE_SUFFIXES}
    for field in new_picture:
        # The stored vectors and labels are the old picture's: they would rank the row by it until
        # it is embedded again (meanwhile it is found by its words, as any pending row).
        for name, empty in old_picture_columns(field).items():
            setattr(instance, name, empty)
            written.add(name)
    instance.__dict__[WRITTEN_ATTR] = written | set(update_fields or ())
    for field in changed:
        setattr(instance, field.column("status"), EmbeddingStatus.PENDING)
        setattr(instance, field.column("error"), "")
        setattr(instance, field.column("updated_at"), timezone.now())
        setattr(instance, field.column("claimed_by"), "")
        setattr(instance, field.column("lease_until"), lease_until())
        # The stored vectors are no longer those of the current inputs: no text-only re-embed.
        setattr(instance, field.column("visual_norm"), None)
    below = [] if instance._state.adding else subclass_fields(sender)  # a new row has no subclass row yet
    instance.__dict__[SUBCLASS_CHANGED_ATTR] = [
        (sub, field, _image_changed(instance, field, update_fields, _key(sub, field)))
        for sub, field in below
        if _changed(instance, field, update_fields, _key(sub, field))
    ]


def pending_state(field: ImageEmbeddingField) -> dict[str, Any]:
    """The state columns of a row whose inputs changed: pending since now, no claim, a lease for the
    task about to be sent, no norm (no text-only re-embed)."""
    return {
        field.column("status"): EmbeddingStatus.PENDING,
        field.column("error"): "",
        field.column("updated_at"): timezone.now(),
        field.column("claimed_by"): "",
        field.column("lease_until"): lease_until(),
        field.column("visual_norm"): None,
    }


def mark_subclass_rows(instance: models.Model, using: str) -> None:
    """After a save of a parent: mark the subclass's row of the same key pending (with a new picture,
    its vectors emptied), when it has one, for each subclass field whose inputs the save changed."""
    for sub, field, new_picture in instance.__dict__.pop(SUBCLASS_CHANGED_ATTR, []):
        state = pending_state(field) | (old_picture_columns(field) if new_picture else {})
        marked = sub._base_manager.using(using).filter(pk=instance.pk).update(**state)
        if marked and semantic_settings.EMBED_ON_SAVE and not embedding_is_deferred():
            schedule(sub, instance.pk, field.name, using)


def old_picture_columns(field: ImageEmbeddingField) -> dict[str, Any]:
    """The columns a new picture empties: its vectors and labels are those of the picture before."""
    return {field.visual_field: None, field.semantic_field: None, field.column("labels"): []}


def post_save_handler(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    update_fields: frozenset[str] | None = None,
    **kwargs: Any,
) -> None:
    changed = getattr(instance, CHANGED_ATTR, [])
    setattr(instance, CHANGED_ATTR, [])
    using = kwargs.get("using") or "default"
    previous = getattr(instance, SNAPSHOT_ATTR, None)
    new_pictures = [] if raw else list(getattr(instance, IMAGE_CHANGED_ATTR, []))
    _snapshot(instance, update_fields)
    if not raw:
        remember_uncommitted(instance, previous, using)
        for name in new_pictures:
            field = get_embedding_field(sender, name)
            file = field.file(instance)
            # Not for a file taken out (what is kept of the old one is still that picture), nor for
            # another row's file (the row pointed to is not changed): only a file of its own.
            if file and LOOKUP_SEP not in field.image_field:
                image_file_changed.send(sender=sender, instance=instance, field=field, file=file)
    setattr(instance, IMAGE_CHANGED_ATTR, [])
    if not raw:
        mark_subclass_rows(instance, using)
    if changed and update_fields is not None:
        # The save wrote only the fields it named (a frozenset no handler can extend):
        # write the state columns now, in the same transaction.
        state = {
            f.column(suffix): getattr(instance, f.column(suffix))
            for f in embedding_fields(sender)
            if f.name in changed
            for suffix in STATE_SUFFIXES
        }
        for name in new_pictures:
            state.update(old_picture_columns(get_embedding_field(sender, name)))
        sender._base_manager.using(using).filter(pk=instance.pk).update(**state)
    if raw or not changed or not semantic_settings.EMBED_ON_SAVE or embedding_is_deferred():
        return
    for name in changed:
        schedule(sender, instance.pk, name, using)


class PendingRows:
    """An on-commit callback that sends the rows saved in one transaction, batched."""

    done = False

    def __init__(self) -> None:
        # (model, field) -> primary keys, in save order, each once (a dict keeps order and is O(1)).
        self.rows: dict[tuple[type[models.Model], str], dict[Any, None]] = {}

    def add(self, model: type[models.Model], pk: Any, field: str) -> None:
        self.rows.setdefault((model, field), {})[pk] = None

    def __call__(self) -> None:
        from .dispatch import request_embedding

        self.done = True
        for (model, field), pks in self.rows.items():
            request_embedding(model, list(pks), field=field)


def schedule(model: type[models.Model], pk: Any, field: str, using: str = "default") -> None:
    """Embed this row once the current transaction commits (now, outside a transaction).

    Rows saved at the same savepoint level share one callback, so a rolled-back
    savepoint drops exactly the rows saved inside it.
    """
    connection = transaction.get_connection(using)
    found = hook_at_level(connection, PendingRows) if connection.in_atomic_block else None
    if found is not None:
        found.add(model, pk, field)
        return
    pending = PendingRows()
    pending.add(model, pk, field)
    transaction.on_commit(pending, using=using)


def connect(model: type[models.Model]) -> None:
    """Wire the handlers for one model with an ImageEmbeddingField, and for the parents (and their
    proxies) whose columns one of its own fields reads (``subclass_fields``)."""
    uid = f"semantic_images:{model._meta.label}"
    models.signals.post_init.connect(post_init_handler, sender=model, dispatch_uid=uid)
    models.signals.pre_save.connect(pre_save_handler, sender=model, dispatch_uid=uid)
    models.signals.post_save.connect(post_save_handler, sender=model, dispatch_uid=uid)
    after_refresh(model, refreshed)
    for parent in model._meta.get_parent_list():
        if any(sub is model for sub, _ in subclass_fields(parent)):
            for saved_as in apps.get_models():
                if saved_as._meta.concrete_model is parent and saved_as is not model:
                    connect(saved_as)
