"""The changelist's columns: thumbnail, score, embedding status and the "similar images" link.

``get_list_display`` hides the vector columns and gives ``similar_images`` links that keep
the listing's filters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, QueryDict
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import thumbnails
from . import display
from .base import SemanticAdminBase
from .ranking import SIMILAR_VAR
from .views import kept_filters


class ListColumnsMixin(SemanticAdminBase):
    """Columns for ``list_display``: ``thumbnail``, ``search_score``, ``embedding_state``, ``similar_images``."""

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        hidden = self._vector_columns()
        names = [name for name in super().get_list_display(request) if name not in hidden]
        if "similar_images" in names and type(self).similar_images is ListColumnsMixin.similar_images:
            return [self._similar_images_column(request) if name == "similar_images" else name for name in names]
        return names

    @admin.display(description=gettext_lazy("Image"))
    def thumbnail(self, obj: Any) -> str:
        return display.thumbnail_html(self.thumbnail_url(obj), str(obj))

    def thumbnail_url(self, obj: Any) -> str:
        """The URL shown as a thumbnail: the API's cached thumbnail (sorl-thumbnail, the
        ``thumbnails`` extra), else, without sorl-thumbnail, the image itself; override to point at
        your renditions. With sorl-thumbnail a file that gives none (missing, broken, over
        ``MAX_FILE_BYTES`` or ``MAX_IMAGE_PIXELS``) shows none: not the original, loaded whole."""
        file = self.get_embedding_field().file(obj)
        if thumbnails.thumbnails_enabled():
            return thumbnails.thumbnail_url(file) or ""
        return display.file_url(file)

    @admin.display(description=gettext_lazy("Score"))
    def search_score(self, obj: Any) -> str:
        score = getattr(obj, "score", None)
        if score is None:  # unranked, or a zero vector (no cosine: expressions.Score)
            return display.EMPTY
        # "0,873" in French, as Django's admin writes numbers (number_format cuts, so round first).
        shown = number_format(round(score, 3), 3)
        return format_html('<span class="si-score" title="{}">{}</span>', _("cosine similarity"), shown)

    @admin.display(description=gettext_lazy("Embedding"))
    def embedding_state(self, obj: Any) -> str:
        return display.status_html(obj, self.get_embedding_field())

    @admin.display(description=gettext_lazy("Similar"))
    def similar_images(self, obj: Any) -> str:
        return self.similar_images_link(obj, QueryDict())

    def similar_images_link(self, obj: Any, filters: QueryDict) -> str:
        """The "Similar images" link of a row with vectors: the changelist with ``filters`` (the
        listing's, in the changelist's column) and ``?similar_to=<pk>``."""
        if not display.has_vectors(obj, self.get_embedding_field()):
            return display.EMPTY
        params = filters.copy()
        params[SIMILAR_VAR] = str(obj.pk)
        return format_html(
            '<a class="si-similar" href="{}?{}">{}</a>', self.changelist_url(), params.urlencode(), _("Similar images")
        )

    def _similar_images_column(self, request: HttpRequest) -> Callable[[Any], str]:
        """The ``similar_images`` column for this request: its links keep the listing's filters
        (not its search, ranking or page), as search by photo does."""
        filters = kept_filters(request.GET.urlencode())

        @admin.display(description=gettext_lazy("Similar"))
        def similar_images(obj: Any) -> str:
            return self.similar_images_link(obj, filters)

        return similar_images
