"""More admin sites: one shows each editor only their own photos, one lets them change only their
own (and see all), one uses the ready admin as is."""

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.urls import path

from django_semantic_images.admin import SemanticImageAdmin, SemanticSearchAdminMixin
from photos.models import Photo
from tests.multifield.models import CaptionedPhoto


class OwnPhotosAdmin(SemanticImageAdmin):
    search_fields = ["title", "alt_text"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(owner=request.user)


site = admin.AdminSite(name="own")
site.register(Photo, OwnPhotosAdmin)


class ChangeOwnPhotosAdmin(SemanticImageAdmin):
    """Every photo listed; each editor may change only their own (a per-object permission)."""

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed and (obj is None or obj.owner_id == request.user.pk)


change_own = admin.AdminSite(name="change_own")
change_own.register(Photo, ChangeOwnPhotosAdmin)


class DeleteOwnPhotosAdmin(SemanticImageAdmin):
    """Every photo listed; each editor may delete only their own (a per-object permission)."""

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed and (obj is None or obj.owner_id == request.user.pk)


delete_own = admin.AdminSite(name="delete_own")
delete_own.register(Photo, DeleteOwnPhotosAdmin)

# The ready admin as it comes: no search_fields, no list_display of its own.
plain = admin.AdminSite(name="plain")
plain.register(Photo, SemanticImageAdmin)


class CaptionAdmin(SemanticImageAdmin):
    """A model with two embedding fields (its own and Photo's), ranked by the caption's; the other
    field's vector columns named by mistake."""

    embedding_field = "caption_embedding"
    readonly_fields = ["embedding_visual", "embedding_encoder"]
    list_display = ["__str__", "embedding_semantic", "embedding_state"]


two = admin.AdminSite(name="two")
two.register(CaptionedPhoto, CaptionAdmin)


class OwnChangeList(ChangeList):
    """A site's own ChangeList (as an admin package's base admin has): only published photos."""

    def get_queryset(self, request, *args, **kwargs):
        return super().get_queryset(request, *args, **kwargs).filter(published=True)


class OwnChangeListAdmin(admin.ModelAdmin):
    list_display = ["__str__", "search_score"]

    def get_changelist(self, request, **kwargs):
        return OwnChangeList


class MixedInAdmin(SemanticSearchAdminMixin, OwnChangeListAdmin):
    """The mixin put first on an admin that has a ChangeList of its own (docs/admin.md)."""


own_changelist = admin.AdminSite(name="own_changelist")
own_changelist.register(Photo, MixedInAdmin)

urlpatterns = [
    path("own-admin/", site.urls),
    path("change-own-admin/", change_own.urls),
    path("delete-own-admin/", delete_own.urls),
    path("plain-admin/", plain.urls),
    path("two-admin/", two.urls),
    path("own-changelist-admin/", own_changelist.urls),
]
