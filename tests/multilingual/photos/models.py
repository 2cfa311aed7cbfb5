"""A photo searched in the editors' own language: its field routes each search by language."""

from django.db import models

from django_semantic_images import ImageEmbeddingField, SemanticImageManager


class MultilingualPhoto(models.Model):
    """``RoutedConSEEncoder``: 768-d semantic vectors, the English and the multilingual text
    space side by side."""

    image = models.ImageField(upload_to="multilingual/")
    alt_text = models.TextField(blank=True, default="")

    embedding = ImageEmbeddingField(
        image_field="image",
        text_fields=["alt_text"],
        visual_dimensions=1280,
        semantic_dimensions=768,
        index=False,
        encoder="django_semantic_images.encoders.routed.RoutedConSEEncoder",
    )

    objects = SemanticImageManager()

    def __str__(self) -> str:
        return self.alt_text or self.image.name
