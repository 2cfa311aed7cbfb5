"""Embed a Wagtail image after upload, and again when its file, title, description or tags change.

The image model is Wagtail's (no field of ours on it), so its saves are watched here: a change
marks the image's row of vectors ``pending`` (creating it on upload) and hands the row to the
core's on-commit dispatch (Celery when configured, in-process otherwise). Tags are saved after the
image, so their changes are watched too: through the image's tag manager (``m2m_changed``), and
without it, where only the tag or the tagging row sees the change: a tag renamed or deleted, a
tagging row saved or deleted directly (taggit's merge, a script). Those mark the images' existing
rows only (``request_embeddings``). Renditions are another model and are never embedded.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models, router, transaction
from django.db.models.signals import m2m_changed, post_delete, post_init, post_save, pre_delete, pre_save
from wagtail.images import get_image_model

from ...conf import semantic_settings
from ...fields import get_embedding_field
from ...signals import (
    after_refresh,
    embedding_is_deferred,
    old_picture_columns,
    pending_state,
    remember_uncommitted,
    schedule,
    settle,
)
from .models import ImageVectors

#: The image's own fields that its vectors depend on (tags are watched through m2m_changed).
IMAGE_INPUTS = ("file", "title", "description")
SNAPSHOT_ATTR = "_semantic_images_wagtail_inputs"
#: The snapshots before the image's saves in transactions not committed yet (``signals.settle``).
UNCOMMITTED_ATTR = "_semantic_images_wagtail_uncommitted"
#: On a tag being renamed: its stored name; on a tag being deleted: the images it tagged.
TAG_NAME_ATTR = "_semantic_images_wagtail_name"
TAGGED_ATTR = "_semantic_images_wagtail_tagged"
#: Set before a save that stores a new file (one assigned, not in storage yet): a storage that
#: writes over a file of the same name (S3's ``file_overwrite``) leaves the name as it was.
NEW_FILE_ATTR = "_semantic_images_wagtail_new_file"
#: The images whose tags their tag manager is changing in this thread (between ``m2m_changed``'s
#: ``pre_`` and ``post_`` actions): ``(database, pk)`` -> depth. Their tagging rows' own signals
#: are left to ``m2m_changed``, which asks once for all of them (outside a transaction, each row
#: that taggit's ``add`` creates commits by itself: each would send its own work).
_managed = threading.local()


def _in_manager() -> dict[tuple[str, Any], int]:
    if not hasattr(_managed, "images"):
        _managed.images = {}
    return _managed.images


def _inputs(image: models.Model) -> dict[str, Any]:
    deferred = image.get_deferred_fields()
    values: dict[str, Any] = {}
    for name in IMAGE_INPUTS:
        if name in deferred or not hasattr(image, name):
            continue
        value = getattr(image, name)
        values[name] = (getattr(value, "name", None) or "") if name == "file" else value
    return values


def image_loaded(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if instance.pk is not None:
        setattr(instance, SNAPSHOT_ATTR, _inputs(instance))


def image_refreshed(instance: models.Model, fields: Collection[str] | None) -> None:
    """After ``refresh_from_db()``: the inputs it reloaded are what the image stores."""
    if instance.pk is None:
        return
    settle(instance, snapshot=SNAPSHOT_ATTR, saves=UNCOMMITTED_ATTR)
    now = _inputs(instance)
    if fields is not None:
        now = {name: value for name, value in now.items() if name in fields}
    setattr(instance, SNAPSHOT_ATTR, {**(getattr(instance, SNAPSHOT_ATTR, None) or {}), **now})


def image_saving(
    sender: type[models.Model], instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    """Before a save: does it store a new file? (After it, the file's name may be all that is left.)"""
    stores_file = not raw and (update_fields is None or "file" in update_fields)
    new = stores_file and "file" not in instance.get_deferred_fields() and not instance.file._committed
    instance.__dict__[NEW_FILE_ATTR] = new


def image_saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool = False,
    raw: bool = False,
    update_fields: Any = None,
    using: str = "default",
    **kwargs: Any,
) -> None:
    new_file = instance.__dict__.pop(NEW_FILE_ATTR, False)
    if raw:
        return
    if update_fields is not None and not set(update_fields) & set(IMAGE_INPUTS):
        return  # e.g. Wagtail storing a file hash or a focal point
    # A save rolled back since (its pending mark with it) left the image as it was: compare with that.
    settle(instance, snapshot=SNAPSHOT_ATTR, saves=UNCOMMITTED_ATTR)
    before = getattr(instance, SNAPSHOT_ATTR, None)
    now = _inputs(instance)
    if update_fields is not None:  # only what the save stored: an input changed in memory only is not
        now = {name: value for name, value in now.items() if name in update_fields}
    setattr(instance, SNAPSHOT_ATTR, {**(before or {}), **now})
    remember_uncommitted(instance, before, using, snapshot=SNAPSHOT_ATTR, saves=UNCOMMITTED_ATTR)
    unchanged = before is not None and all(k in before and before[k] == v for k, v in now.items())
    if not created and not new_file and unchanged:
        return
    other_file = new_file or (before is not None and "file" in now and before.get("file") != now["file"])
    request_embedding(instance.pk, using, new_picture=other_file and not created)


def tags_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    pk_set: Any = None,
    using: str = "default",
    **kwargs: Any,
) -> None:
    if reverse or not isinstance(instance, get_image_model()) or instance.pk is None:
        return
    key, managed = (using, instance.pk), _in_manager()
    if action.startswith("pre_"):
        managed[key] = managed.get(key, 0) + 1
        return
    if managed.get(key, 0) > 1:
        managed[key] -= 1
    else:
        managed.pop(key, None)
    if action == "post_clear" or (action in ("post_add", "post_remove") and pk_set):
        request_embedding(instance.pk, using)


def image_database(image: models.Model) -> str:
    """The database an image's vectors are written to: where the routers send the image's writes,
    else the one the image was read from (Django's own default for a save of it)."""
    return router.db_for_write(type(image), instance=image)


def request_embedding(image_pk: Any, using: str = "default", *, new_picture: bool = False) -> None:
    """Mark the image's vectors pending (a new row on upload) and embed them after commit.

    With ``new_picture`` (the image's file was replaced) its vectors are dropped meanwhile: they
    are the old picture's, and would rank the image by it (found by its words until embedded)."""
    field = get_embedding_field(ImageVectors)
    pending = pending_state(field)
    if new_picture:
        pending |= old_picture_columns(field)
    if not ImageVectors.objects.using(using).filter(pk=image_pk).update(**pending):
        ImageVectors.objects.using(using).bulk_create([ImageVectors(pk=image_pk, **pending)], ignore_conflicts=True)
    if semantic_settings.EMBED_ON_SAVE and not embedding_is_deferred():
        schedule(ImageVectors, image_pk, field.name, using)


def request_embeddings(image_pks: Iterable[Any], using: str = "default") -> None:
    """Mark the *existing* vectors of these images pending and embed them after commit, together.

    No row is created: these images' tags changed without a save of the image, and one of them
    may be on its way out (deleting an image deletes its tagging rows first), where a new row
    would break the deletion's foreign key.
    """
    pks = set(image_pks)
    if not pks:
        return
    field = get_embedding_field(ImageVectors)
    rows = ImageVectors.objects.using(using)
    with transaction.atomic(using=using, savepoint=False):  # outside a transaction: one batch at commit
        found = list(rows.filter(pk__in=pks).values_list("pk", flat=True))
        if not found:
            return
        rows.filter(pk__in=found).update(**pending_state(field))
        if semantic_settings.EMBED_ON_SAVE and not embedding_is_deferred():
            for pk in found:
                schedule(ImageVectors, pk, field.name, using)


def _tagging(through: type[models.Model], using: str) -> tuple[str, dict[str, Any]]:
    """The tagging row's column that holds the image's key, and the filter that keeps the rows
    that tag images: taggit's ``TaggedItem`` tags any model (by content type); a custom image
    model's own through model has a foreign key to it."""
    target = through._meta.get_field("content_object")
    if target.concrete:  # TaggedItemBase: a foreign key to the image model
        return target.attname, {}
    image_type = ContentType.objects.db_manager(using).get_for_model(get_image_model())
    return "object_id", {"content_type_id": image_type.pk}


def _tagged_image(through: type[models.Model], item: models.Model, using: str) -> Any:
    """The key of the image this tagging row tags, or None (another model's row)."""
    column, only = _tagging(through, using)
    if any(getattr(item, name) != value for name, value in only.items()):
        return None
    return getattr(item, column)


def _images_tagged(through: type[models.Model], tag: models.Model, using: str) -> list[Any]:
    column, only = _tagging(through, using)
    return list(through._default_manager.using(using).filter(tag_id=tag.pk, **only).values_list(column, flat=True))


def _deletes(origin: Any, model: type[models.Model]) -> bool:
    """Is ``origin`` (a deletion's ``origin``: an instance or a queryset) a deletion of ``model``?"""
    return isinstance(origin, model) or (isinstance(origin, models.QuerySet) and issubclass(origin.model, model))


def tag_saving(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    update_fields, using = kwargs.get("update_fields"), kwargs.get("using") or "default"
    if kwargs.get("raw") or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and "name" not in update_fields:
        return
    stored = sender._base_manager.using(using).filter(pk=instance.pk).values_list("name", flat=True).first()
    setattr(instance, TAG_NAME_ATTR, stored)


def tag_saved(sender: type[models.Model], instance: models.Model, created: bool = False, **kwargs: Any) -> None:
    stored = instance.__dict__.pop(TAG_NAME_ATTR, None)
    if created or stored is None or stored == getattr(instance, "name", None):
        return
    using = kwargs.get("using") or "default"
    request_embeddings(_images_tagged(_through(), instance, using), using)


def tag_deleting(sender: type[models.Model], instance: models.Model, using: str = "default", **kwargs: Any) -> None:
    setattr(instance, TAGGED_ATTR, _images_tagged(_through(), instance, using))


def tag_deleted(sender: type[models.Model], instance: models.Model, using: str = "default", **kwargs: Any) -> None:
    request_embeddings(instance.__dict__.pop(TAGGED_ATTR, ()), using)


def tagging_changed(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    """A tagging row saved or deleted by itself (not through the image's tag manager)."""
    using, origin = kwargs.get("using") or "default", kwargs.get("origin")
    if origin is not None and (_deletes(origin, get_image_model()) or _deletes(origin, sender.tag_model())):  # type: ignore[attr-defined]
        return  # the image is being deleted (its vectors with it), or the tag (tag_deleted asks, once)
    image_pk = _tagged_image(sender, instance, using)
    if image_pk is not None and (using, image_pk) not in _in_manager():
        request_embeddings([image_pk], using)


def _through() -> type[models.Model]:
    """The model whose rows tag the images (taggit's ``TaggedItem``, or a custom image model's own)."""
    through = get_image_model()._meta.get_field("tags").remote_field.through
    assert through is not None and not isinstance(through, str)
    return through


def connect() -> None:
    """Watch the saves and tag changes of ``WAGTAILIMAGES_IMAGE_MODEL``, its tags and tagging rows."""
    image_model = get_image_model()
    uid = "semantic_images_wagtail"
    post_init.connect(image_loaded, sender=image_model, dispatch_uid=uid)
    pre_save.connect(image_saving, sender=image_model, dispatch_uid=uid)
    post_save.connect(image_saved, sender=image_model, dispatch_uid=uid)
    after_refresh(image_model, image_refreshed)  # Django sends no signal for it
    through = _through()
    m2m_changed.connect(tags_changed, sender=through, dispatch_uid=uid)
    post_save.connect(tagging_changed, sender=through, dispatch_uid=uid)
    post_delete.connect(tagging_changed, sender=through, dispatch_uid=uid)
    tag_model = through.tag_model()  # type: ignore[attr-defined]
    pre_save.connect(tag_saving, sender=tag_model, dispatch_uid=uid)
    post_save.connect(tag_saved, sender=tag_model, dispatch_uid=uid)
    pre_delete.connect(tag_deleting, sender=tag_model, dispatch_uid=uid)
    post_delete.connect(tag_deleted, sender=tag_model, dispatch_uid=uid)
