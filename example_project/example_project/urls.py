from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from photos.api import router as photos_api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/photos/photo/", permanent=False)),
    path("admin/", admin.site.urls),
    # REST search API, its OpenAPI schema and a browsable page for it.
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include(photos_api.urls)),
] + static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
