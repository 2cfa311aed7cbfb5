from django.conf import settings
from django.db import models

from django_semantic_images import ImageEmbeddingField, SemanticImageManager


class Photo(models.Model):
    """A site's ordinary image model, plus one ImageEmbeddingField."""

    image = models.ImageField(upload_to="photos/")
    title = models.CharField(max_length=200, blank=True)
    alt_text = models.TextField(blank=True)
    published = models.BooleanField(default=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    embedding = ImageEmbeddingField(image_field="image", text_fields=["title", "alt_text"])

    objects = SemanticImageManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title or self.image.name
