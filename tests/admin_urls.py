"""A second admin site whose Photo admin shows each editor only their own photos."""

from django.contrib import admin
from django.urls import path
from photos.models import Photo

from django_semantic_images.admin import SemanticImageAdmin


class OwnPhotosAdmin(SemanticImageAdmin):
    search_fields = ["title", "alt_text"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(owner=request.user)


site = admin.AdminSite(name="own")
site.register(Photo, OwnPhotosAdmin)

urlpatterns = [path("own-admin/", site.urls)]
