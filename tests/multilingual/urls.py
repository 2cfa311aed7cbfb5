"""The example site's URLs plus the search API of ``MultilingualPhoto`` at ``test-api/multilingual/``."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from django_semantic_images.api import SemanticResultSerializer, SemanticSearchViewSet
from example_project.urls import urlpatterns as site_urls
from tests.multilingual.photos.models import MultilingualPhoto


class MultilingualResultSerializer(SemanticResultSerializer):
    class Meta:
        model = MultilingualPhoto
        fields = ["id", "alt_text", "score"]


class Multilingual(SemanticSearchViewSet):
    queryset = MultilingualPhoto.objects.all()
    serializer_class = MultilingualResultSerializer


router = SimpleRouter()
router.register("multilingual", Multilingual, basename="multilingual")

urlpatterns = [path("test-api/", include(router.urls)), *site_urls]
