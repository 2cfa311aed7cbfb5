from django.contrib import admin

from django_semantic_images.admin import EmbeddingStatusFilter, SemanticImageAdmin

from .models import Photo


@admin.register(Photo)
class PhotoAdmin(SemanticImageAdmin):
    """Search by meaning, thumbnails, scores, similar images, search by photo, re-embedding."""

    list_display = ["thumbnail", "__str__", "published", "owner", "search_score", "embedding_state", "similar_images"]
    list_filter = ["published", EmbeddingStatusFilter]
    search_fields = ["title", "alt_text"]
