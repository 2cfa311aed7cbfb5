"""What every part of the admin integration shares: its options and the embedding field it ranks by.

The mixins of ``visual_ranking``, ``search_results``, ``columns``, ``change_form`` and ``actions``
build on ``SemanticAdminBase``; ``options.SemanticSearchAdminMixin`` combines them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core import checks
from django.http import HttpRequest
from django.urls import reverse

from ..checks import photo_search_session_check
from ..fields import ImageEmbeddingField, embedding_fields, get_embedding_field
from .changelist import SEARCH_HELP, counting_facets

if TYPE_CHECKING:  # the mixins are only ever combined with a ModelAdmin
    _AdminBase = admin.ModelAdmin
else:
    _AdminBase = object


def listing_shown(request: HttpRequest) -> bool:
    """Are the rows listed for the page the editor sees? Not while Django builds the changelist of a
    POST (an action, ``list_editable``'s save), whose answer is a redirect or a confirmation page (the
    page after it lists the rows again), nor while it lists them for a filter's facet counts."""
    return request.method != "POST" and not counting_facets(request)


def listing_message(request: HttpRequest, level: int, text: str) -> None:
    """A message about the rows listed (a ranking's source, rows not embedded yet), said once: only
    where ``listing_shown``."""
    if listing_shown(request):
        messages.add_message(request, level, text)


class SemanticAdminBase(_AdminBase):
    """The options (docs/admin.md) and the helpers that the admin's mixins use."""

    #: Which ``ImageEmbeddingField`` to use when the model has several.
    embedding_field: str | None = None
    #: How many rows a search by words lists (besides the ordinary search matches).
    semantic_search_results: int = 100
    #: How many rows "similar images" and search by photo list.
    similar_images_results: int = 50
    #: Largest photo the search-by-photo form accepts, in bytes.
    search_by_photo_max_bytes: int = 20 * 1024 * 1024
    #: The form field that label suggestions fill in (None: show labels without buttons).
    suggestions_field: str | None = "alt_text"
    #: Labels below this probability are not suggested.
    suggestion_min_probability: float = 0.1
    change_list_template = "admin/semantic_images/change_list.html"
    #: The "Duplicates" page (docs/duplicates.md): groups per page, the date column (None: the
    #: model's first date or date-time field) and the templates.
    duplicate_groups_per_page: int = 20
    duplicate_date_field: str | None = None
    duplicates_template = "admin/semantic_images/duplicates.html"
    duplicates_confirm_template = "admin/semantic_images/duplicates_confirm.html"
    search_help_text = SEARCH_HELP  # without search_fields, no ordinary matches: "Ranks images by meaning."

    def get_embedding_field(self) -> ImageEmbeddingField:
        return get_embedding_field(self.model, self.embedding_field)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        try:
            self.get_embedding_field()
        except LookupError as exc:
            errors.append(
                checks.Error(
                    f"{type(self).__name__} searches by meaning, but {exc}",
                    hint="Declare an ImageEmbeddingField on the model, or name it with `embedding_field`.",
                    obj=type(self),
                    id="semantic_images.E101",
                )
            )
        return errors + photo_search_session_check(f"{type(self).__name__}'s search by photo", obj=type(self))

    def changelist_url(self) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=self.admin_site.name)

    def _vector_columns(self) -> set[str]:
        """The vector columns of every embedding field of the model, not only the one ranked by."""
        return {column for f in embedding_fields(self.model) for column in (f.visual_field, f.semantic_field)}
