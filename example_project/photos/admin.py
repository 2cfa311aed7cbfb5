from django.contrib import admin

from .models import Photo


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = ["__str__", "published", "embedding_status"]
    search_fields = ["title", "alt_text"]
