from django.urls import include, path
from wagtail.admin import urls as wagtailadmin_urls

from example_project.urls import urlpatterns as example_urlpatterns

urlpatterns = [path("cms/", include(wagtailadmin_urls)), *example_urlpatterns]
