"""The example site's URLs plus its media files, which the live server serves without DEBUG."""

from django.conf import settings
from django.urls import re_path
from django.views.static import serve

from example_project.urls import urlpatterns as site_urls

urlpatterns = [
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
    *site_urls,
]
