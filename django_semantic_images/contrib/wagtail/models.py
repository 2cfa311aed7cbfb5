"""The vectors of each Wagtail image, in a table beside ``WAGTAILIMAGES_IMAGE_MODEL``.

A table of its own keeps Wagtail's image model untouched (the default one works; a custom one
needs no change), and renditions, which are another model, are never embedded. The row's
primary key is the image's, so ``Image.objects.filter(...)`` and the vectors join one-to-one
(``semantic_vectors``), and deleting an image deletes its vectors.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from django.db import models
from django.utils.translation import gettext_lazy as _
from wagtail.images import get_image_model_string

from ...fields import ImageEmbeddingField

#: The reverse accessor on the image model: ``image.semantic_vectors``.
RELATED_NAME = "semantic_vectors"
#: A file name's root as storage gives it when the name was taken: the root, ``_``, 7 letters or digits.
TAKEN_NAME = re.compile(r"^(?P<root>.+)_[A-Za-z0-9]{7}$")


def _forms(names: set[str]) -> set[str]:
    """``names`` in lower case, with and without their last extension."""
    return {form for name in names for form in (name.lower(), PurePath(name.lower()).stem)} - {""}


class ImageVectorsQuerySet(models.QuerySet):
    def add_missing_rows(self, batch_size: int = 1000) -> int:
        """Give every image without a row of vectors a pending one; returns how many were added.

        ``semantic_images_reindex`` calls this first, so images uploaded before the app was
        installed are embedded too, and so does the sweep (``sweep.add_missing_rows``), so
        images made without signals (``bulk_create``, ``loaddata``, a data migration) are
        embedded within a sweep period. One anti-join query when no image is missing; the rows
        are inserted ``batch_size`` at a time.
        """
        image_model = self.model._meta.get_field("image").related_model
        assert image_model is not None and not isinstance(image_model, str)
        missing = (
            image_model._default_manager.using(self.db)  # where the rows are written: no lagging replica
            .filter(**{f"{RELATED_NAME}__isnull": True})
            .order_by()
            .values_list("pk", flat=True)
        )
        pks = list(missing)
        for start in range(0, len(pks), batch_size):  # the image's key is the row's
            self.bulk_create([self.model(pk=pk) for pk in pks[start : start + batch_size]], ignore_conflicts=True)
        return len(pks)


class ImageVectors(models.Model):
    """The vectors of one image; its texts are the title (unless it is only the file's name), the
    description (Wagtail's alt text) and the tags."""

    image = models.OneToOneField(
        get_image_model_string(),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name=RELATED_NAME,
        verbose_name=_("image"),
    )
    embedding = ImageEmbeddingField(
        image_field="image__file",
        text_fields=["title_words", "image__description", "tag_names"],
    )

    objects = ImageVectorsQuerySet.as_manager()

    class Meta:
        verbose_name = _("image vectors")
        verbose_name_plural = _("image vectors")

    def __str__(self) -> str:
        return f"Vectors of image {self.pk}"

    @property
    def title_words(self) -> str:
        """The image's title, unless it is only its file's name.

        Wagtail titles an upload by its file name; a name such as ``IMG_0042`` or
        ``1056338697_4f7d7ce270`` says nothing of the picture, and fused as text it only moves
        the image's vector away from the words that describe it (docs/wagtail.md, measured).
        """
        title = self.image.title or ""
        name = PurePath(self.image.file.name or "").name
        if not title or not name:
            return title
        stored = {name}
        # The name storage gives a file whose name was taken: its root, _ and 7 characters, the root
        # being the name before its first dot (Django 5.1 and later) or before its last (4.2 to 5.0).
        for extensions in ("".join(PurePath(name).suffixes), PurePath(name).suffix):
            taken = TAKEN_NAME.match(name.removesuffix(extensions))
            if taken:
                stored.add(taken["root"] + extensions)
        return "" if _forms(stored) & _forms(self._upload_names(title, PurePath(name).suffix)) else title

    def _upload_names(self, title: str, suffix: str) -> set[str]:
        """The names of a file uploaded as ``title`` (with or without the extension ``suffix``, as
        Wagtail's multiple upload titles it): as written, and as the file field names it
        (``IMG 0042 (1).jpg`` kept as ``IMG_0042_1.jpg``, accents dropped, a long name cut)."""
        names = {title, title + suffix}
        field = self.image._meta.get_field("file")
        for uploaded in (title, title + suffix):
            try:
                names.add(PurePath(field.generate_filename(self.image, uploaded)).name)
            except Exception:  # noqa: BLE001 - a title no file could be named, a site's upload_to that fails
                continue
        return names

    @property
    def tag_names(self) -> str:
        """The image's tags, as words."""
        return ", ".join(sorted(tag.name for tag in self.image.tags.all()))
