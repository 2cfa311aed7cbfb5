"""The example site's URLs plus two API wirings the example site does not have.

``objperm/``: every photo is in the queryset and an object permission hides the
unpublished ones, so a /similar/ anchor is refused after its lookup. ``two-*/``: a
model with two image fields and two embedding fields, searched by each. ``unpaged/``: the
example viewset without pagination. ``photo-id/``: the example viewset with its own
``lookup_url_kwarg``.
"""

from django.urls import include, path
from rest_framework.permissions import BasePermission
from rest_framework.routers import SimpleRouter

from django_semantic_images.api import SemanticResultSerializer, SemanticSearchViewSet
from example_project.urls import urlpatterns as site_urls
from photos.api import PhotoSearchViewSet
from photos.models import Photo
from tests.multifield.models import TwoImagePhoto


class PublishedOrOwn(BasePermission):
    def has_object_permission(self, request, view, obj) -> bool:
        return obj.published or obj.owner_id == getattr(request.user, "pk", None)


class ObjectPermissionViewSet(PhotoSearchViewSet):
    permission_classes = [PublishedOrOwn]

    def get_queryset(self):
        return Photo.objects.all()


class TwoImageResultSerializer(SemanticResultSerializer):
    class Meta:
        model = TwoImagePhoto
        fields = ["id", "score", "image_url"]


class ByPicture(SemanticSearchViewSet):
    queryset = TwoImagePhoto.objects.all()
    serializer_class = TwoImageResultSerializer


class ByThumbnail(ByPicture):
    embedding_field = "thumbnail_embedding"


class UnpagedViewSet(PhotoSearchViewSet):
    pagination_class = None


class PhotoIdViewSet(PhotoSearchViewSet):
    lookup_url_kwarg = "photo_id"


router = SimpleRouter()
router.register("objperm", ObjectPermissionViewSet, basename="objperm")
router.register("unpaged", UnpagedViewSet, basename="unpaged")
router.register("photo-id", PhotoIdViewSet, basename="photo-id")
router.register("two-picture", ByPicture, basename="two-picture")
router.register("two-thumbnail", ByThumbnail, basename="two-thumbnail")

urlpatterns = [path("test-api/", include(router.urls)), *site_urls]
