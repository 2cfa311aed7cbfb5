"""An admin whose form picks a photo with Django's autocomplete (searching the Photo admin)."""

from django.contrib import admin

from .models import PhotoAlbum


@admin.register(PhotoAlbum)
class PhotoAlbumAdmin(admin.ModelAdmin):
    autocomplete_fields = ["cover"]
