"""A test-only model with two image fields and two embedding fields (the API's ``image_url`` tests).

It lives in a test app, not in the example site: the example site keeps one searchable model, so
its commands need no ``--model``.
"""

from django.db import models

from django_semantic_images import ImageEmbeddingField, SemanticImageManager
from photos.models import Photo


class TwoImagePhoto(models.Model):
    """Two image fields and two embedding fields, the first embedding on the second image.

    Kept minimal for the API tests: ``image_url`` must show the image its embedding names.
    """

    thumbnail = models.ImageField(upload_to="two-image/")
    picture = models.ImageField(upload_to="two-image/")

    embedding = ImageEmbeddingField(image_field="picture", index=False)
    thumbnail_embedding = ImageEmbeddingField(image_field="thumbnail", index=False)

    objects = SemanticImageManager()

    def __str__(self) -> str:
        return self.picture.name


class PhotoAlbum(models.Model):
    """An album with a cover photo: the admin's autocomplete of photos (``autocomplete_fields``)."""

    title = models.CharField(max_length=100)
    cover = models.ForeignKey(Photo, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return self.title


class PhotoProxy(Photo):
    """A proxy of the example site's Photo (a second admin's, say): the same table of vectors, not a
    second one for the commands, the sweep and the checks; its saves are watched all the same."""

    class Meta:
        proxy = True


class CaptionedPhoto(Photo):
    """A multi-table subclass of Photo with an embedding field of its own (on the same image, by its
    caption): its table holds that field's vectors, Photo's table those of the field it inherits."""

    caption = models.CharField(max_length=200, blank=True)

    caption_embedding = ImageEmbeddingField(image_field="image", text_fields=["caption"], index=False)

    def __str__(self) -> str:
        return self.caption
