"""Rank Wagtail images by meaning, keeping the images that Wagtail's own search finds first.

Everything starts from the queryset the admin view built (permissions, collection and tag
filters), so an image an editor may not see is never ranked. The nearest images come through
the HNSW index of the vectors table (``ORDER BY distance LIMIT n`` over the one-to-one join).
The Images listing gets an ordinary queryset (``rank_by_meaning``: its sort orders and bulk
actions work unchanged); the chooser gets the ranked keys themselves (``ranked_results``), so
its paginator knows the count and reads each page by key.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import FieldDoesNotExist
from django.db.models import BooleanField, Case, F, Q, QuerySet, Value, When
from django.db.models.constants import LOOKUP_SEP
from django.db.models.functions import Cast
from wagtail.search.backends import get_search_backend
from wagtail.search.backends.base import FilterFieldError

from ...encoders.base import ENCODER_UNAVAILABLE
from ...expressions import Score, SemanticDistance, score_of
from ...fields import embedding_path
from ...query import ranked_rows, read_as_search, semantic_search
from ...words import search_words, spellings
from .renditions import share_renditions

#: How many images a search by words lists besides the keyword matches.
DEFAULT_LIMIT = 100

#: What Wagtail's own search matches, named in the note of a search that falls back to it.
KEYWORD_FIELDS = ("title", "tags")

#: The most terms Wagtail's search backend is given: it nests one condition per term, and 250
#: one-letter terms already exceeded Python's recursion limit (a RecursionError, a 500).
MAX_SEARCH_WORDS = 64
#: Where Wagtail's search backend cuts words into terms (modelsearch's PostgreSQL backend): at
#: whitespace and hyphens, so "a-b-c" is three terms.
TERM_SEPARATORS = re.compile(r"[\s\-]+")

#: Encodes search words while the request's thread queries the database (ONNX Runtime and the
#: tokenizer release the GIL). The threads never touch a database connection.
_encoding = ThreadPoolExecutor(max_workers=2, thread_name_prefix="semantic-images-words")
#: The words being encoded now, by encoder and text: a request that asks again for words it
#: started encoding as it arrived (``start_encoding``) waits for the same encoding.
_in_flight: dict[tuple[int, str], Future[np.ndarray]] = {}
_in_flight_lock = threading.Lock()


def encode_words(model: type, words: str) -> Future[np.ndarray]:
    """The vector of ``words`` for ``model``'s encoder: at once when it is cached, else encoded
    in a worker thread (once, however often it is asked for while it runs), so that the caller
    can run Wagtail's keyword query meanwhile."""
    encoder = embedding_path(model).field.get_encoder()
    cached = encoder.cached_text_vector(words)
    if cached is not None:
        done: Future[np.ndarray] = Future()
        done.set_result(cached)
        return done
    key = (id(encoder), words)
    with _in_flight_lock:
        future = _in_flight.get(key)
        if future is not None:
            return future
        future = _in_flight[key] = _encoding.submit(encoder.encode_text, words)
    future.add_done_callback(lambda finished: _forget(key, finished))  # then the encoder's cache has it
    return future


def _forget(key: tuple[int, str], finished: Future[np.ndarray]) -> None:
    with _in_flight_lock:
        if _in_flight.get(key) is finished:
            del _in_flight[key]


def start_encoding(model: type, text: str) -> None:
    """Start encoding a request's search words as it arrives, before Wagtail's view reads its
    collections and builds its forms, so that the search finds them encoded (``encode_words``
    then gives the same encoding). Words the text model cannot read, and an encoder that cannot
    load, are left to the search, which answers for them."""
    try:
        words = search_words(text)
        if words and embedding_path(model).field.get_encoder().reads(words):
            encode_words(model, words)
    except (ValueError, *ENCODER_UNAVAILABLE):
        return


def search_terms(words: str) -> int:
    """How many terms Wagtail's search backend makes of ``words`` (``TERM_SEPARATORS``)."""
    return sum(1 for term in TERM_SEPARATORS.split(words) if term)


def keyword_matches(
    queryset: QuerySet, words: str, *, backend: str = "default", limit: int = DEFAULT_LIMIT
) -> list[Any]:
    """Primary keys of the images that Wagtail's own search box finds with every word, failed and
    pending images included.

    Wagtail's listing and chooser search with ``autocomplete`` (prefixes of the title and tags, as
    the editor types); so does this, with every word required, which also keeps it about as quick
    as Wagtail's own search (a full-text ``search`` of a sentence costs several times more). A
    model without autocomplete fields falls back on ``search``, as Wagtail's views do.

    Words that decompose (``spellings``: "é" is also "e" and a combining accent) are searched in
    either form, one search each: Wagtail indexes a text as it is stored, and a title stored in NFD
    (from a macOS file name) was missed by the words read in NFC.
    """
    search_backend = get_search_backend(backend)
    plain = read_as_search(_plain(queryset))  # where a ranked search reads (SEARCH_DATABASE)
    forms = spellings(words)
    try:
        found = [_every_word(search_backend, form, plain) for form in forms]
    except (FilterFieldError, AttributeError):
        # A filter that Wagtail's search cannot apply (modelsearch refuses it, or fails on an
        # annotation): the chooser's ``?tag=`` (tags by name), the listing's usage count. Search
        # the same rows by key instead.
        plain = read_as_search(by_key(plain))
        found = [_every_word(search_backend, form, plain) for form in forms]
    keys = dict.fromkeys(key for results in found for key in _first_keys(results, plain, search_backend, limit))
    return list(keys)[:limit]


def _first_keys(results: Any, plain: QuerySet, search_backend: Any, limit: int) -> list[Any]:
    """The keys of the first ``limit`` images of Wagtail's search ``results`` of ``plain``."""
    keys = _keys_from_index_entries(results, plain, search_backend)
    if keys is not None:
        return list(keys[:limit])
    results = results[:limit]
    # Wagtail's database backend searches with a queryset: read the keys alone (not up to
    # ``limit`` whole images with their search vectors). Other backends give their results.
    search_queryset = getattr(results, "get_queryset", None)
    if search_queryset is not None:
        keys = search_queryset()
        if isinstance(keys, QuerySet):
            return list(keys.values_list("pk", flat=True))
    return [image.pk for image in results]


def _every_word(search_backend: Any, words: str, plain: QuerySet) -> Any:
    """Wagtail's search of ``plain`` for ``words``, every word required, unordered: autocomplete,
    as Wagtail's listing and chooser search, or ``search`` for a model without autocomplete fields."""
    if plain.model.get_autocomplete_search_fields():
        return search_backend.autocomplete(words, plain, operator="and", order_by_relevance=False)
    return search_backend.search(words, plain, operator="and", order_by_relevance=False)


def keyword_search(
    queryset: QuerySet,
    words: str,
    *,
    backend: str = "default",
    autocomplete: bool = False,
    operator: str | None = "and",
) -> QuerySet:
    """``queryset``'s images that Wagtail's own search (its ``search``, every word required) finds,
    unranked, in ``queryset``'s order: a queryset, so that any filter and ordering after it works.

    The answer of a search whose words the text model cannot read (``?semantic=`` in the images
    API v2). The search runs over all the model's images and ``queryset`` keeps those it finds, so
    ``queryset``'s own filters (collections, tags) need not be ones Wagtail's index can filter by.
    It reads where a ranked search reads (``SEARCH_DATABASE``; ``read_as_search``). Words that
    decompose are searched in either form (``spellings``), as in ``keyword_matches``.

    With ``autocomplete`` (and ``operator=None``: the backend's own), the search of Wagtail's search
    boxes instead (``autocomplete`` where the model has autocomplete fields).
    """
    search_backend = get_search_backend(backend)
    images = queryset.model._default_manager.all()
    search = search_backend.search
    if autocomplete and queryset.model.get_autocomplete_search_fields():
        search = search_backend.autocomplete
    found = Q()
    for form in spellings(words):
        results = search(form, images, operator=operator, order_by_relevance=False)
        search_queryset = getattr(results, "get_queryset", None)  # Wagtail's database backends: a subquery
        keys = search_queryset() if search_queryset is not None else None
        if isinstance(keys, QuerySet):
            found |= Q(pk__in=keys.order_by().values("pk"))
        else:
            found |= Q(pk__in=[image.pk for image in results])
    return read_as_search(queryset.filter(found))


def _keys_from_index_entries(results: Any, plain: QuerySet, search_backend: Any) -> QuerySet | None:
    """With Wagtail's PostgreSQL database backend, the keys its search finds, newest first (as it
    orders them without relevance), read from the matching index entries to the images by key.

    Wagtail's own queryset joins its index entries on the image's key cast to text, so each
    search hashes the key of every image (1.5-2 ms on 10,000 images, where this takes 0.1-0.8).
    The same words (Wagtail's own ``tsquery``), the same index column and content types. None,
    and Wagtail's queryset is used, for any other backend or query.
    """
    try:
        from wagtail.search.backends.database.postgres.postgres import PostgresSearchQueryCompiler
        from wagtail.search.utils import get_descendants_content_types_pks

        compiler = getattr(results, "query_compiler", None)
        if not isinstance(compiler, PostgresSearchQueryCompiler) or compiler.fields is not None:
            return None
        relation = plain.model._meta.get_field("index_entries")
        search_query = compiler.build_tsquery(compiler.query, config=compiler.get_config(search_backend))
        [(vector, _boost)] = compiler.get_search_vectors(search_query)
        prefix, name = relation.name + LOOKUP_SEP, str(getattr(vector, "name", ""))
        if not isinstance(vector, F) or not name.startswith(prefix):  # Wagtail's index column, not fields
            return None
        entries = relation.related_model._default_manager.filter(
            **{
                f"{relation.content_type_field_name}__in": get_descendants_content_types_pks(plain.model),
                name[len(prefix) :]: search_query,
            }
        )
        keys = entries.values_list(Cast(relation.object_id_field_name, output_field=plain.model._meta.pk))
    except (AttributeError, FieldDoesNotExist, ImportError, NotImplementedError, TypeError, ValueError):
        return None
    return plain.filter(pk__in=keys).order_by("-pk").values_list("pk", flat=True)


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
    ranked = ranked.annotate(score=Score("distance"))
    if keep_order:
        return ranked
    ordering = [F("distance").asc(nulls_last=True), "-pk"]
    if exact is not None:
        ranked = ranked.annotate(
            keyword_match=Case(When(exact, then=Value(True)), default=Value(False), output_field=BooleanField())
        )
        ordering.insert(0, F("keyword_match").desc())
    return ranked.order_by(*ordering)


@dataclass(frozen=True)
class Ranked:
    """One ranked image: its key, its distance to the words (None without vectors), and whether
    Wagtail's keyword search found it."""

    pk: Any
    distance: float | None
    keyword_match: bool


def ranking(queryset: QuerySet, vector: np.ndarray, *, keyword: list[Any], limit: int = DEFAULT_LIMIT) -> list[Ranked]:
    """The order ``rank_by_meaning`` gives, as keys: the keyword matches (``keyword``, keys of
    ``queryset``'s images) by distance, those without vectors last, then the ``limit`` nearest
    of ``queryset`` by meaning; ties by key, highest first.

    One query, one round trip (``ranked_rows``): the nearest through the HNSW index, with the
    keyword matches' distances beside them (``UNION ALL``).
    """
    path = embedding_path(queryset.model)
    plain = _plain(queryset)
    # Ties by key, highest first, as rank_by_meaning's order: the same rows at the limit in both.
    nearest = semantic_search(plain, vector, field=path.name).order_by("distance", "-pk")
    rows = nearest.values_list("pk", "distance")[:limit]
    if keyword:
        hits = plain.filter(pk__in=keyword).annotate(distance=SemanticDistance(path.name, vector))
        rows = rows.union(hits.values_list("pk", "distance"), all=True)
    distances = dict(ranked_rows(rows))
    exact = set(keyword)
    first = _by_distance([pk for pk in distances if pk in exact], distances)
    rest = _by_distance([pk for pk in distances if pk not in exact], distances)
    return [Ranked(pk, distances[pk], bool(keyword) and pk in exact) for pk in first + rest]


def _by_distance(keys: list[Any], distances: dict[Any, float | None]) -> list[Any]:
    """``keys`` nearest first, then those whose distance is NaN (a zero vector: no direction), those
    without a distance last, ties by key (highest first)."""

    def key(pk: Any) -> tuple[int, float]:
        distance = distances[pk]
        if distance is None:
            return 2, 0.0
        return (1, 0.0) if math.isnan(distance) else (0, distance)  # NaN compares with nothing: sorted apart

    keys = sorted(keys, reverse=True)
    keys.sort(key=key)  # stable: keeps the ties' order
    return keys


class RankedResults:
    """Ranked images as a paginator reads them: ``len()`` is known, and a page (a slice) is
    one query by key over the view's queryset (its joins and prefetched renditions), in the
    ranking's order, each image given ``distance``, ``score`` and, after a keyword search,
    ``keyword_match``, as ``rank_by_meaning``'s annotations. The page's images render their
    prefetched thumbnails without writing them to Wagtail's renditions cache (``renditions``)."""

    def __init__(self, queryset: QuerySet, ranked: list[Ranked], *, keyword: bool) -> None:
        self.queryset = queryset
        self.model = queryset.model
        self.ranked = ranked
        self.keyword = keyword

    def __len__(self) -> int:
        return len(self.ranked)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._fetch(self.ranked[index])
        return self._fetch([self.ranked[index]])[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._fetch(self.ranked))

    def _fetch(self, ranked: list[Ranked]) -> list[Any]:
        if not ranked:
            return []
        found = {image.pk: image for image in self.queryset.filter(pk__in=[r.pk for r in ranked]).order_by()}
        images = []
        for r in ranked:
            image = found.get(r.pk)
            if image is None:  # deleted since it was ranked
                continue
            image.distance = r.distance
            image.score = score_of(r.distance)
            if self.keyword:
                image.keyword_match = r.keyword_match
            images.append(image)
        share_renditions(images)
        return images


def ranked_results(
    queryset: QuerySet, vector: np.ndarray, *, keyword: list[Any], limit: int = DEFAULT_LIMIT
) -> RankedResults:
    """``queryset``'s images in ``rank_by_meaning``'s order, for a paginator (the chooser's)."""
    return RankedResults(queryset, ranking(queryset, vector, keyword=keyword, limit=limit), keyword=bool(keyword))


def by_key(queryset: QuerySet) -> QuerySet:
    """``queryset``'s rows as a filter on their keys (a subquery): a queryset whose filters Wagtail's
    search backend cannot apply (a tag by name, an annotation) made searchable."""
    return queryset.model._default_manager.filter(pk__in=_plain(queryset).values("pk"))


def _plain(queryset: QuerySet) -> QuerySet:
    """The same rows without the listing's ordering, joins and prefetches (for a list of keys)."""
    return queryset.order_by().select_related(None).prefetch_related(None)
