"""Rank Wagtail images by meaning, keeping the images that Wagtail's own search finds first.

Everything starts from the queryset the admin view built (permissions, collection and tag
filters), so an image an editor may not see is never ranked. The nearest images come through
the HNSW index of the vectors table (``ORDER BY distance LIMIT n`` over the one-to-one join);
the page the editor sees is an ordinary queryset, so Wagtail's pagination works unchanged.
"""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, Case, ExpressionWrapper, F, FloatField, Q, QuerySet, Value, When
from wagtail.search.backends import get_search_backend

from ...expressions import SemanticDistance
from ...fields import embedding_path
from ...query import semantic_search

#: How many images a search by words lists besides the keyword matches.
DEFAULT_LIMIT = 100


def keyword_matches(
    queryset: QuerySet, words: str, *, backend: str = "default", limit: int = DEFAULT_LIMIT
) -> list[Any]:
    """Primary keys of the images that Wagtail's own search box finds with every word, failed and
    pending images included.

    Wagtail's listing and chooser search with ``autocomplete`` (prefixes of the title and tags, as
    the editor types); so does this, with every word required, which also keeps it about as quick
    as Wagtail's own search (a full-text ``search`` of a sentence costs several times more). A
    model without autocomplete fields falls back on ``search``, as Wagtail's views do.
    """
    search_backend = get_search_backend(backend)
    plain = _plain(queryset)
    if queryset.model.get_autocomplete_search_fields():
        results = search_backend.autocomplete(words, plain, operator="and", order_by_relevance=False)
    else:
        results = search_backend.search(words, plain, operator="and", order_by_relevance=False)
    return [image.pk for image in results[:limit]]


def rank_by_meaning(
    queryset: QuerySet,
    words: str,
    *,
    keyword: list[Any] | None = None,
    limit: int = DEFAULT_LIMIT,
    keep_order: bool = False,
) -> QuerySet:
    """``queryset``'s images for ``words``: the keyword matches first, then the ``limit`` nearest
    by meaning, each annotated with ``distance`` and ``score`` (None without vectors).

    With ``keep_order`` (the editor chose a sort order) the same images keep the queryset's order.
    """
    path = embedding_path(queryset.model)
    vector = path.field.get_encoder().encode_text(words).tolist()
    nearest = list(semantic_search(_plain(queryset), vector, field=path.name).values_list("pk", flat=True)[:limit])
    wanted = Q(pk__in=nearest)
    exact = Q(pk__in=keyword) if keyword else None
    if exact is not None:
        wanted |= exact
    ranked = queryset.filter(wanted).annotate(distance=SemanticDistance(path.name, vector))
    ranked = ranked.annotate(score=ExpressionWrapper(Value(1.0) - F("distance"), output_field=FloatField()))
    if keep_order:
        return ranked
    ordering = [F("distance").asc(nulls_last=True), "-pk"]
    if exact is not None:
        ranked = ranked.annotate(
            keyword_match=Case(When(exact, then=Value(True)), default=Value(False), output_field=BooleanField())
        )
        ordering.insert(0, F("keyword_match").desc())
    return ranked.order_by(*ordering)


def _plain(queryset: QuerySet) -> QuerySet:
    """The same rows without the listing's ordering, joins and prefetches (for a list of keys)."""
    return queryset.order_by().select_related(None).prefetch_related(None)
