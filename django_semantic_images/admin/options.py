"""``SemanticSearchAdminMixin`` and the ready ``SemanticImageAdmin``.

The search box ranks rows by meaning; ``?similar_to=<pk>`` and ``?photo=<token>``
rank them by likeness to a picture (``search_results``, ``visual_ranking``). The mixin combines
those with the changelist's columns (``columns``), the change form's entries
(``change_form``) and the re-embed action (``actions``), on the options of ``base``;
here are its pages: the changelist, search by photo and the duplicates.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import URLPattern, path, reverse

from .. import uploads
from ..words import too_long
from . import display, duplicates
from .actions import ReembedActionMixin
from .change_form import ChangeFormMixin
from .changelist import SemanticChangeListMixin, semantic_changelist, sorted_by_column
from .columns import ListColumnsMixin
from .filters import EmbeddingStatusFilter
from .search_results import RANKING_ATTR, RankedSearchMixin
from .views import PhotoSearchForm, kept_filters, refuse_oversized, search_by_photo
from .visual_ranking import VisualRankingMixin


class SemanticSearchAdminMixin(
    VisualRankingMixin, RankedSearchMixin, ChangeFormMixin, ListColumnsMixin, ReembedActionMixin
):
    """Add to a ``ModelAdmin`` of a model with an ``ImageEmbeddingField``.

    The changelist's search box ranks by meaning; rows that the ordinary
    ``search_fields`` match (Django's usual search: every word found in some field)
    are listed first, then the nearest rows by meaning. Clicking a column header
    sorts the same rows by that column instead. Its options are ``SemanticAdminBase``'s
    (docs/admin.md).
    """

    @property
    def media(self) -> forms.Media:
        return super().media + forms.Media(
            css={"all": ["semantic_images/admin/semantic_admin.css"]},
            js=["semantic_images/admin/suggestions.js"],
        )

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        return [
            path(
                "search-by-photo/",
                # An upload over the limit is refused before Django's CSRF check reads it (uploads.py).
                self.admin_site.admin_view(
                    uploads.size_checked(
                        self.search_by_photo_view,
                        self.refuse_oversized_photo,
                        lambda: int(self.search_by_photo_max_bytes),
                    )
                ),
                name=f"{opts.app_label}_{opts.model_name}_search_by_photo",
            ),
            path(
                "duplicates/",
                self.admin_site.admin_view(self.duplicates_view),
                name=f"{opts.app_label}_{opts.model_name}_duplicates",
            ),
            *super().get_urls(),
        ]

    def search_by_photo_view(self, request: HttpRequest) -> HttpResponse:
        return search_by_photo(self, request)

    def refuse_oversized_photo(self, request: HttpRequest) -> HttpResponse | None:
        """A search by photo whose body is too large for ``search_by_photo_max_bytes``, unread."""
        return refuse_oversized(self, request)

    def duplicates_view(self, request: HttpRequest) -> HttpResponse:
        return duplicates.duplicates_view(self, request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[SemanticChangeListMixin]:
        """The ChangeList of the admin's other bases (a site's own, or Django's), with the ranking's parameters."""
        return semantic_changelist(super().get_changelist(request, **kwargs))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Before the ranking's source row is looked up: its messages would name the row (or tell a
        # hidden one from a missing one) to a user who may not see the changelist at all.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        refused = too_long(SEARCH_VAR, request.GET.getlist(SEARCH_VAR))
        if refused:
            # As the APIs: Django's search of the search fields costs a condition per word and field.
            return HttpResponseBadRequest(refused)
        ranking = self.get_visual_ranking(request)
        setattr(request, RANKING_ATTR, ranking)
        opts = self.model._meta
        context = {
            "semantic_ranking": ranking,
            "photo_search_form": PhotoSearchForm(),
            "photo_search_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_search_by_photo", current_app=self.admin_site.name
            ),
            "ranking_clear_url": "?" + kept_filters(request.GET.urlencode()).urlencode(),
            "duplicates_url": duplicates.duplicates_url(self),
            **(extra_context or {}),
        }
        response = super().changelist_view(request, context)
        context_data = getattr(response, "context_data", None)
        cl = (context_data or {}).get("cl")
        if context_data is not None and cl is not None:  # a TemplateResponse, not yet rendered
            context_data["photo_search_filters"] = kept_filters(cl.get_query_string()).urlencode()
            context_data["semantic_sorted_by_column"] = sorted_by_column(request)
        return response

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """The admin's rows, each knowing whether it holds vectors (without loading them)."""
        field = self.get_embedding_field()
        return (
            super().get_queryset(request).annotate(**{display.vectors_annotation(field): display.vectors_stored(field)})
        )


class SemanticImageAdmin(SemanticSearchAdminMixin, admin.ModelAdmin):
    """A ready admin: thumbnail, title, score, status and "similar images" columns,
    the status filter and the re-embed action."""

    list_display = ["thumbnail", "__str__", "search_score", "embedding_state", "similar_images"]
    list_display_links = ["thumbnail", "__str__"]
    list_filter = [EmbeddingStatusFilter]
