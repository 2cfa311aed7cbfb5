"""The example site's API and admin under ``i18n_patterns``, as a multilingual site mounts them
(``/en-us/api/...``, ``/fr/api/...``)."""

from django.conf.urls.i18n import i18n_patterns
from django.contrib import admin
from django.urls import include, path

from photos.api import router as photos_api

urlpatterns = i18n_patterns(path("admin/", admin.site.urls), path("api/", include(photos_api.urls)))
