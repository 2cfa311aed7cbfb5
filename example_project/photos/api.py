"""The example site's search API: one serializer, one viewset, one router line.

Anonymous callers find published photos; a signed-in user also finds their own
unpublished ones. That rule lives in ``get_queryset()``, the one method a site
overrides; every search and ``/similar/`` starts from it.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.routers import DefaultRouter

from django_semantic_images.api import SemanticResultSerializer, SemanticSearchViewSet

from .models import Photo


class PhotoResultSerializer(SemanticResultSerializer):
    """A photo found by a search: its public fields, score and URLs."""

    class Meta:
        model = Photo
        fields = ["id", "title", "alt_text", "score", "image_url", "thumbnail_url", "created_at"]


class PhotoSearchViewSet(SemanticSearchViewSet):
    queryset = Photo.objects.all()
    serializer_class = PhotoResultSerializer
    filter_backends = [DjangoFilterBackend]
    filterset_fields = {"owner": ["exact"], "created_at": ["gte", "lte"]}

    def get_queryset(self) -> QuerySet[Photo]:
        visible = Q(published=True)
        if self.request.user.is_authenticated:
            visible |= Q(owner=self.request.user)
        return super().get_queryset().filter(visible)


router = DefaultRouter()
router.register("photos", PhotoSearchViewSet, basename="photo-search")
