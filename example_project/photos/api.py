"""The example site's search API: one serializer, one viewset, one router line.

Anonymous callers find published photos; a signed-in user also finds their own
unpublished ones. That rule lives in ``get_queryset()``, the one method a site
overrides; every search and ``/similar/`` starts from it.
"""

from __future__ import annotations

from django import forms
from django.db.models import Q, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.routers import DefaultRouter

from django_semantic_images.api import SemanticResultSerializer, SemanticSearchViewSet

from .models import Photo


class PhotoResultSerializer(SemanticResultSerializer):
    """A photo found by a search: its public fields, score and URLs."""

    class Meta:
        model = Photo
        fields = ["id", "title", "alt_text", "score", "relevance", "image_url", "thumbnail_url", "created_at"]


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class PhotoFilter(filters.FilterSet):
    """Facets that compose with the ranking. ``owner`` is a plain number, so an unknown
    id finds nothing rather than revealing which user ids exist."""

    owner = IdFilter(field_name="owner_id")
    created_after = filters.DateFilter(field_name="created_at", lookup_expr="date__gte")
    created_before = filters.DateFilter(field_name="created_at", lookup_expr="date__lte")

    class Meta:
        model = Photo
        fields = ["owner", "created_after", "created_before"]


class PhotoSearchViewSet(SemanticSearchViewSet):
    """Photos you may see: the published ones, and your own when signed in.

    Search them by words at search/?q=words, by a photo with a multipart POST of an image
    file to search/, or by likeness to one of them at {id}/similar/.
    """

    queryset = Photo.objects.all()
    serializer_class = PhotoResultSerializer
    filter_backends = [filters.DjangoFilterBackend]
    filterset_class = PhotoFilter
    ordering_fields = ("created_at", "title")  # ?ordering=-created_at: the 100 best matches, newest first

    def get_queryset(self) -> QuerySet[Photo]:
        visible = Q(published=True)
        if self.request.user.is_authenticated:
            visible |= Q(owner=self.request.user)
        return super().get_queryset().filter(visible)


router = DefaultRouter()
router.register("photos", PhotoSearchViewSet, basename="photo-search")
