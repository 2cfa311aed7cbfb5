"""Rank Wagtail images by meaning, keeping the images that Wagtail's own search finds first.

Everything starts from the queryset the admin view built (permissions, collection and tag
filters), so an image an editor may not see is never ranked. The nearest images come through
the HNSW index of the vectors table (``ORDER BY distance LIMIT n`` over the one-to-one join).
The Images listing gets an ordinary queryset (``rank_by_meaning``: its sort orders and bulk
actions work unchanged); the chooser's paginator gets ``ranked_results``: a page and the count
in one query.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from django.db.models import (
    BooleanField,
    Case,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from wagtail.search.backends import get_search_backend

from ...expressions import SemanticDistance
from ...fields import embedding_path
from ...query import ranked_objects, semantic_search

#: How many images a search by words lists besides the keyword matches.
DEFAULT_LIMIT = 100

#: Encodes search words while the request's thread queries the database (ONNX Runtime and the
#: tokenizer release the GIL). The threads never touch a database connection.
_encoding = ThreadPoolExecutor(max_workers=2, thread_name_prefix="semantic-images-words")


def encode_words(model: type, words: str) -> Future[np.ndarray]:
    """The vector of ``words`` for ``model``'s encoder: at once when it is cached, else encoded
    in a worker thread, so that the caller can run Wagtail's keyword query meanwhile."""
    encoder = embedding_path(model).field.get_encoder()
    cached = encoder.cached_text_vector(words)
    if cached is not None:
        done: Future[np.ndarray] = Future()
        done.set_result(cached)
        return done
    return _encoding.submit(encoder.encode_text, words)


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
    results = results[:limit]
    # Wagtail's database backend searches with a queryset: read the keys alone (not up to
    # ``limit`` whole images with their search vectors). Other backends give their results.
    search_queryset = getattr(results, "get_queryset", None)
    if search_queryset is not None:
        keys = search_queryset()
        if isinstance(keys, QuerySet):
            return list(keys.values_list("pk", flat=True))
    return [image.pk for image in results]


def rank_by_meaning(
    queryset: QuerySet,
    words: str,
    *,
    keyword: list[Any] | None = None,
    limit: int = DEFAULT_LIMIT,
    keep_order: bool = False,
    vector: np.ndarray | None = None,
) -> QuerySet:
    """``queryset``'s images for ``words``: the keyword matches first, then the ``limit`` nearest
    by meaning, each annotated with ``distance`` and ``score`` (None without vectors).

    With ``keep_order`` (the editor chose a sort order) the same images keep the queryset's order.
    ``vector`` is the words' vector when the caller has it already (``encode_words``).
    """
    path = embedding_path(queryset.model)
    if vector is None:
        vector = path.field.get_encoder().encode_text(words)
    query = vector.tolist()
    nearest = list(semantic_search(_plain(queryset), query, field=path.name).values_list("pk", flat=True)[:limit])
    wanted = Q(pk__in=nearest)
    exact = Q(pk__in=keyword) if keyword else None
    if exact is not None:
        wanted |= exact
    ranked = queryset.filter(wanted).annotate(distance=SemanticDistance(path.name, query))
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


def ranked_page_queryset(
    queryset: QuerySet, vector: np.ndarray, *, keyword: list[Any], limit: int = DEFAULT_LIMIT
) -> QuerySet:
    """``rank_by_meaning``'s images in its order, as one query a page can be sliced from:
    ``queryset`` (its joins and prefetches) kept to the ``limit`` nearest (through the HNSW
    index, in a subquery run once) and the keyword matches, each given ``distance``,
    ``keyword_match`` after a keyword search, and ``ranked_total``, how many there are in all
    (a window count: the page's query counts them, no ``COUNT(*)`` query of its own). Ordered in
    SQL: keyword matches first, by distance (those without vectors last), ties by key (highest
    first). Evaluate it with ``ranked_objects`` (the HNSW settings in the same message).
    """
    path = embedding_path(queryset.model)
    annotations: dict[str, Any] = {"distance": SemanticDistance(path.name, vector), "ranked_total": Window(Count("*"))}
    ordering = [F("distance").asc(nulls_last=True), F("pk").desc()]
    wanted = Q(
        _AnyOf(F("pk"), Subquery(semantic_search(_plain(queryset), vector, field=path.name).values("pk")[:limit]))
    )
    if keyword:
        annotations["keyword_match"] = Case(
            When(pk__in=keyword, then=Value(True)), default=Value(False), output_field=BooleanField()
        )
        ordering.insert(0, F("keyword_match").desc())
        wanted |= Q(pk__in=keyword)
    return queryset.annotate(**annotations).order_by(*ordering).filter(wanted)


class _AnyOf(Func):
    """``key = ANY(ARRAY(subquery))``: the subquery runs once, before the rows are read by key
    (``key IN (subquery)`` lets the planner hash it against a scan of the whole table)."""

    output_field = BooleanField()
    conditional = True

    def as_sql(  # type: ignore[override]
        self, compiler: Any, connection: Any, **extra_context: Any
    ) -> tuple[str, tuple[Any, ...]]:
        key, subquery = self.get_source_expressions()
        key_sql, key_params = compiler.compile(key)
        subquery_sql, subquery_params = compiler.compile(subquery)
        return f"{key_sql} = ANY(ARRAY{subquery_sql})", (*key_params, *subquery_params)


class RankedResults:
    """Ranked images as a paginator reads them: each slice (a page) is one query
    (``ranked_page_queryset`` sliced, with the HNSW settings in the same message), whose rows
    also carry the count, so ``len()`` reads the page it expects to be asked for next
    (``window``: the request's page) and the slice that follows is answered from it."""

    def __init__(self, ranked: QuerySet, *, window: tuple[int, int] | None = None) -> None:
        self.ranked = ranked
        self.model = ranked.model
        self.window = window or (0, 1)
        self._count: int | None = None
        self._read: tuple[int, list[Any]] | None = None  # (start, the images from there)

    def __len__(self) -> int:
        if self._count is None:
            self._fetch(*self.window)
        if self._count is None:  # the expected page lies past the end: count from the start
            self._fetch(0, 1)
        return self._count or 0

    def __getitem__(self, index: int | slice) -> Any:
        if not isinstance(index, slice):
            found = self[index : index + 1]
            if not found:
                raise IndexError(index)
            return found[0]
        start, stop, step = index.indices(len(self))
        if step != 1:
            return self[start:stop][::step]
        if stop <= start:
            return []
        if self._read is not None:
            read_start, images = self._read
            if read_start <= start and (stop <= read_start + len(images) or read_start + len(images) == self._count):
                return images[start - read_start : stop - read_start]
        return self._fetch(start, stop)

    def __iter__(self) -> Iterator[Any]:
        return iter(self[0 : len(self)])

    def _fetch(self, start: int, stop: int) -> list[Any]:
        images = ranked_objects(self.ranked[start:stop])
        for image in images:  # as rank_by_meaning's annotation
            image.score = None if image.distance is None else 1.0 - image.distance
        if images:
            self._count = images[0].ranked_total
        elif start == 0:
            self._count = 0
        self._read = (start, images)
        return images


def ranked_results(
    queryset: QuerySet,
    vector: np.ndarray,
    *,
    keyword: list[Any],
    limit: int = DEFAULT_LIMIT,
    window: tuple[int, int] | None = None,
) -> RankedResults:
    """``queryset``'s images in ``rank_by_meaning``'s order, for a paginator (the chooser's),
    ``window`` the slice it is expected to read (the request's page)."""
    return RankedResults(ranked_page_queryset(queryset, vector, keyword=keyword, limit=limit), window=window)


def _plain(queryset: QuerySet) -> QuerySet:
    """The same rows without the listing's ordering, joins and prefetches (for a list of keys)."""
    return queryset.order_by().select_related(None).prefetch_related(None)
