"""The changelist's ranking: the search box by meaning, and the rows nearest a picture.

Ranking happens in ``get_search_results``, after the list filters and on
``get_queryset(request)``, so permissions, filters, pagination and actions work as
in any changelist.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.contrib.admin.views.main import SEARCH_VAR
from django.core.exceptions import BadRequest
from django.db.models import BooleanField, Case, F, Q, QuerySet, Value, When
from django.http import HttpRequest
from django.utils.text import smart_split
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..encoders.base import ENCODER_UNAVAILABLE
from ..expressions import Score, SemanticDistance, VisualDistance
from ..fields import EmbeddingStatus, ImageEmbeddingField
from ..hnsw import hnsw_settings
from ..query import read_as_search
from ..words import keyword_columns, keyword_matches, search_words, spellings, too_long, unreadable_note
from .base import SemanticAdminBase, listing_message, listing_shown
from .changelist import sorted_by_column
from .ranking import VisualRanking

#: The logger docs/admin.md names (that of the module this code came from): logging set up for it still works.
logger = logging.getLogger("django_semantic_images.admin.options")

#: The request attribute that carries the visual ranking from changelist_view to get_search_results.
RANKING_ATTR = "_semantic_visual_ranking"
#: The parameter of Django's autocomplete view (``autocomplete_fields``) that carries the search words.
AUTOCOMPLETE_VAR = "term"


def top_pks(queryset: QuerySet, distance: Any, column: str, limit: int, field: ImageEmbeddingField) -> list[Any]:
    """Primary keys of the ``limit`` nearest rows, through the HNSW index (``ORDER BY distance LIMIT n``)."""
    ranked = (
        queryset.filter(**{f"{column}__isnull": False})
        .annotate(_distance=distance)
        .order_by("_distance", "pk")  # ties by key: the same rows at the limit every time
        .values_list("pk", flat=True)[:limit]
    )
    # Inside the request's transaction (ATOMIC_REQUESTS), the settings get their values back after.
    with hnsw_settings(queryset.db, field=field):
        return list(ranked)


class RankedSearchMixin(SemanticAdminBase):
    """``get_search_results`` ranks by meaning (the search box) or by likeness to the picture that
    ``changelist_view`` left on the request (``?similar_to=``, ``?photo=``)."""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # Reached past changelist_view's check: Django's autocomplete (``?term=``) or a site's view.
        var = AUTOCOMPLETE_VAR if request.GET.get(AUTOCOMPLETE_VAR) == search_term else SEARCH_VAR
        refused = too_long(var, [search_term])
        if refused:
            raise BadRequest(refused)
        # As the APIs read words: NUL and zero-width characters count as spaces (Django's search of
        # the search fields sent a NUL to PostgreSQL, which refuses it: the autocomplete's 500).
        search_term = search_words(search_term)
        field = self.get_embedding_field()
        # The rows listed need no vector values: parsing them costs ~0.8 ms a row (docs/admin.md).
        queryset = queryset.defer(field.visual_field, field.semantic_field)
        ranking: VisualRanking | None = getattr(request, RANKING_ATTR, None)
        if ranking is not None:
            if ranking.vector is None:
                return queryset.none(), False
            queryset = read_as_search(queryset)  # ranked and listed where the API's searches read
            candidates = queryset if ranking.source is None else queryset.exclude(pk=ranking.source.pk)
            self._note_waiting(request, queryset, field.visual_field)
            visual = VisualDistance(field.name, ranking.vector)
            pks = top_pks(candidates, visual, field.visual_field, self.similar_images_results, field)
            qs = self._annotate(queryset.filter(pk__in=pks), visual)
            return self._rank(request, qs, [F("distance").asc()]), False
        if not search_term:
            return super().get_search_results(request, queryset, search_term)
        queryset = read_as_search(queryset)  # a keyword fallback too: it is the search box's search
        try:
            readable = field.get_encoder().reads(search_term)
            vector = field.get_encoder().encode_text(search_term).tolist() if readable else None
        except ENCODER_UNAVAILABLE:
            logger.exception("The search by meaning of %s could not load its encoder", self.model._meta.label)
            text = _(
                "Search by meaning is unavailable now (the encoder could not be loaded; the server log "
                "says why), so only rows whose text matches every word are listed."
            )
            if var == SEARCH_VAR:  # the autocomplete's JSON shows no message: none waits for a later page
                listing_message(request, messages.ERROR, text)
            return self._keyword_results(request, queryset, search_term)
        if vector is None:
            # A script the text model cannot read: the search fields' matches (else the text
            # fields'), unranked, and a message that says so.
            names = [name.lstrip("^=@") for name in self.get_search_fields(request)] or keyword_columns(
                queryset.model, field.text_fields
            )
            if var == SEARCH_VAR:
                listing_message(request, messages.INFO, unreadable_note(search_term, names))
            return self._keyword_results(request, queryset, search_term)
        if var == SEARCH_VAR:
            self._note_waiting(request, queryset, field.semantic_field)
        distance = SemanticDistance(field.name, vector)
        pks = top_pks(queryset, distance, field.semantic_field, self.semantic_search_results, field)
        wanted = Q(pk__in=pks)
        exact = None
        if self.get_search_fields(request):
            matched, _duplicates = self._search_fields_results(request, queryset, search_term)
            exact = Q(pk__in=matched.order_by().values("pk"))
            wanted |= exact
        qs = self._annotate(queryset.filter(wanted), distance)
        ordering = [F("distance").asc(nulls_last=True)]
        if exact is not None:
            qs = qs.annotate(
                search_match=Case(When(exact, then=Value(True)), default=Value(False), output_field=BooleanField())
            )
            ordering.insert(0, F("search_match").desc())
        return self._rank(request, qs, ordering), False

    def _note_waiting(self, request: HttpRequest, queryset: QuerySet, column: str) -> None:
        """Say how many of the listed rows (filters and ``get_queryset`` applied) no ranking can find
        yet: pending, without the vector ranked by (the status is indexed)."""
        if not listing_shown(request):  # no note (listing_message): not even its count
            return
        status = self.get_embedding_field().column("status")
        waiting = queryset.filter(**{f"{column}__isnull": True, status: EmbeddingStatus.PENDING}).count()
        if waiting:
            text = ngettext(
                "%(count)d image is not embedded yet: searches by meaning and by likeness find it once it is.",
                "%(count)d images are not embedded yet: searches by meaning and by likeness find them once they are.",
                waiting,
            )
            listing_message(request, messages.INFO, text % {"count": waiting})

    def _keyword_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """The search fields' matches (else the embedding field's text fields'), unranked."""
        if self.get_search_fields(request):
            return self._search_fields_results(request, queryset, search_term)
        fields = keyword_columns(queryset.model, self.get_embedding_field().text_fields)
        return keyword_matches(queryset, search_term, fields), False

    def _search_fields_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Django's search of the search fields, each word (a quoted phrase too) found composed, as
        read, or decomposed (``spellings``): Django compares a stored text as it is, and missed one
        stored in NFD (a title from a macOS file name) for words read in NFC. Words that decompose
        are matched one subquery each, so that each may be found in either form."""
        if len(spellings(search_term)) == 1:  # nothing decomposes: Django's search as it is
            return super().get_search_results(request, queryset, search_term)
        match = Q()
        for bit in smart_split(search_term):
            either = Q()
            for form in spellings(bit):
                found, _duplicates = super().get_search_results(request, queryset, form)
                either |= Q(pk__in=found.order_by().values("pk"))
            match &= either
        return queryset.filter(match), False

    @staticmethod
    def _annotate(qs: QuerySet, distance: Any) -> QuerySet:
        return qs.annotate(distance=distance).annotate(score=Score("distance"))

    @staticmethod
    def _rank(request: HttpRequest, qs: QuerySet, ordering: list[Any]) -> QuerySet:
        """Nearest first, unless the editor sorted by a column (an ``?o=`` naming none is ignored)."""
        if sorted_by_column(request):
            return qs
        return qs.order_by(*ordering, "-pk")
