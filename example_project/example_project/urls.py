from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from photos.api import router as photos_api
from photos.views import SearchPageView

urlpatterns = [
    # The public side: a search page that calls the API below (photos/views.py).
    path("", SearchPageView.as_view(), name="search"),
    path("admin/", admin.site.urls),
    # REST search API, its OpenAPI schema and a browsable page for it.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include(photos_api.urls)),
] + static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
