"""The test site's URLs with Wagtail's dynamic image serve view (``wagtailimages_serve``): Wagtail's
URL generator pages need it (without it they answer 404 for every image)."""

from django.urls import re_path
from wagtail.images.views.serve import ServeView

from .urls import urlpatterns as site_urlpatterns

urlpatterns = [
    re_path(r"^images/([^/]*)/(\d*)/([^/]*)/[^/]*$", ServeView.as_view(), name="wagtailimages_serve"),
    *site_urlpatterns,
]
