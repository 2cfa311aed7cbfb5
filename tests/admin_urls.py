"""Two more admin sites: one shows each editor only their own photos, one uses the ready admin as is."""

from django.contrib import admin
from django.urls import path

from django_semantic_images.admin import SemanticImageAdmin
from photos.models import Photo


class OwnPhotosAdmin(SemanticImageAdmin):
    search_fields = ["title", "alt_text"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(owner=request.user)


site = admin.AdminSite(name="own")
site.register(Photo, OwnPhotosAdmin)

# The ready admin as it comes: no search_fields, no list_display of its own.
plain = admin.AdminSite(name="plain")
plain.register(Photo, SemanticImageAdmin)

urlpatterns = [path("own-admin/", site.urls), path("plain-admin/", plain.urls)]
