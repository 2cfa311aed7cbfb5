"""Embed a Wagtail image after upload, and again when its file, title, description or tags change.

The image model is Wagtail's (no field of ours on it), so its saves are watched here: a change
marks the image's row of vectors ``pending`` (creating it on upload) and hands the row to the
core's on-commit dispatch (Celery when configured, in-process otherwise). Tags are saved after the
image, so their changes are watched too. Renditions are another model and are never embedded.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import m2m_changed, post_init, post_save
from django.utils import timezone
from wagtail.images import get_image_model

from ...conf import semantic_settings
from ...fields import EmbeddingStatus, get_embedding_field
from ...pipeline import lease_until
from ...signals import embedding_is_deferred, remember_uncommitted, schedule, settle
from .models import ImageVectors

#: The image's own fields that its vectors depend on (tags are watched through m2m_changed).
IMAGE_INPUTS = ("file", "title", "description")
SNAPSHOT_ATTR = "_semantic_images_wagtail_inputs"
#: The snapshots before the image's saves in transactions not committed yet (``signals.settle``).
UNCOMMITTED_ATTR = "_semantic_images_wagtail_uncommitted"


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


def image_saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool = False,
    raw: bool = False,
    update_fields: Any = None,
    using: str = "default",
    **kwargs: Any,
) -> None:
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
    if not created and before is not None and all(k in before and before[k] == v for k, v in now.items()):
        return
    request_embedding(instance.pk, using)


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
    if action == "post_clear" or (action in ("post_add", "post_remove") and pk_set):
        request_embedding(instance.pk, using)


def request_embedding(image_pk: Any, using: str = "default") -> None:
    """Mark the image's vectors pending (a new row on upload) and embed them after commit."""
    field = get_embedding_field(ImageVectors)
    pending = {
        field.column("status"): EmbeddingStatus.PENDING,
        field.column("error"): "",
        field.column("updated_at"): timezone.now(),
        field.column("claimed_by"): "",
        field.column("lease_until"): lease_until(),
        field.column("visual_norm"): None,  # the inputs changed: the next embedding reads the image
    }
    if not ImageVectors.objects.using(using).filter(pk=image_pk).update(**pending):
        ImageVectors.objects.using(using).bulk_create([ImageVectors(pk=image_pk, **pending)], ignore_conflicts=True)
    if semantic_settings.EMBED_ON_SAVE and not embedding_is_deferred():
        schedule(ImageVectors, image_pk, field.name, using)


def connect() -> None:
    """Watch the saves and tag changes of ``WAGTAILIMAGES_IMAGE_MODEL``."""
    image_model = get_image_model()
    uid = "semantic_images_wagtail"
    post_init.connect(image_loaded, sender=image_model, dispatch_uid=uid)
    post_save.connect(image_saved, sender=image_model, dispatch_uid=uid)
    through = image_model._meta.get_field("tags").remote_field.through
    m2m_changed.connect(tags_changed, sender=through, dispatch_uid=uid)
