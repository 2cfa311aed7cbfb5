from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter
from wagtail.admin import urls as wagtailadmin_urls
from wagtail.api.v2.router import WagtailAPIRouter

from django_semantic_images.contrib.wagtail.api import SemanticImagesAPIViewSet
from django_semantic_images.contrib.wagtail.search_api import WagtailImageSearchViewSet
from example_project.urls import urlpatterns as example_urlpatterns

# Wagtail's images API v2, ranked by ?semantic= and ?similar_to= (docs/wagtail.md, "Frontends").
wagtail_api = WagtailAPIRouter("wagtailapi")
wagtail_api.register_endpoint("images", SemanticImagesAPIViewSet)

# The package's REST search API over the Wagtail images the caller may choose.
search_api = DefaultRouter()
search_api.register("images", WagtailImageSearchViewSet, basename="wagtail-image-search")
search_api_urls = [path("api/wagtail/", include(search_api.urls))]

urlpatterns = [
    path("cms/", include(wagtailadmin_urls)),
    path("api/v2/", wagtail_api.urls),
    # The search API's OpenAPI schema alone (the example site's /api/schema/ has every API here):
    # what tests/wagtail/test_api_fuzz.py generates requests from.
    path("api/wagtail/schema/", SpectacularAPIView.as_view(urlconf=search_api_urls), name="wagtail-search-schema"),
    *search_api_urls,
    *example_urlpatterns,
]
