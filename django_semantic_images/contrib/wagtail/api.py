"""Wagtail's images API v2 (``/api/v2/images/``), ranked by meaning or by likeness.

Register :class:`SemanticImagesAPIViewSet` in the site's API router instead of Wagtail's
``ImagesAPIViewSet``:

.. code-block:: python

    api_router.register_endpoint("images", SemanticImagesAPIViewSet)

``?semantic=a red bicycle`` ranks the listing by meaning, ``?similar_to=<id>`` by likeness to
that image; each item's ``meta.score`` is ``1 - cosine distance``. A ranked listing is throttled
with the REST API's text-search scope (``SemanticSearchThrottle``, the ``semantic_search`` rate). Both start from the
endpoint's own queryset (Wagtail's: every image outside the collections that a view
restriction hides from this request), after Wagtail's field filters (``?title=``, ``?tags=``).
:class:`SemanticFilter` is the filter backend, for a site's own ``ImagesAPIViewSet`` subclass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from django.db.models import IntegerField, Model, QuerySet
from django.http import Http404
from rest_framework.exceptions import Throttled, ValidationError
from rest_framework.fields import Field, SkipField
from rest_framework.filters import BaseFilterBackend
from rest_framework.response import Response
from wagtail.api import APIField
from wagtail.api.v2.filters import FieldsFilter, OrderingFilter, SearchFilter
from wagtail.api.v2.pagination import WagtailPagination
from wagtail.api.v2.utils import BadRequestError
from wagtail.images.api.v2.views import ImagesAPIViewSet

from ...api.exceptions import SearchUnavailable
from ...api.pagination import is_ranked
from ...api.querystring import INTEGER, NOT_UTF8_MESSAGE, not_utf8_names
from ...api.serializers import SearchTextField
from ...api.throttling import TEXT_SCOPE, SemanticSearchThrottle
from ...api.viewsets import encoder_loaded
from ...conf import semantic_settings
from ...fields import EmbeddingStatus, embedding_path
from ...pipeline.failures import public_reason
from ...query import searchable
from ...words import unreadable_note
from .search import KEYWORD_FIELDS, MAX_SEARCH_WORDS, keyword_search, search_terms

SEMANTIC = "semantic"
SIMILAR_TO = "similar_to"
#: Parameters that cannot be combined with a ranking: both would reorder the results.
CONFLICTS = ("order", "search")


#: The values Wagtail's search backends take for ``?search_operator=``.
SEARCH_OPERATORS = ("and", "or")


class SemanticFilter(BaseFilterBackend):
    """Rank the listing by meaning (``?semantic=words``) or by likeness to a visible image
    (``?similar_to=id``). Images without vectors are left out of a ranked listing.

    Put it after ``FieldsFilter`` and before ``OrderingFilter`` and ``SearchFilter``; errors are
    Wagtail's ``BadRequestError`` (a 400 with ``{"message": ...}`` naming the parameter).
    """

    def filter_queryset(self, request: Any, queryset: QuerySet, view: Any) -> QuerySet:
        given = [name for name in (SEMANTIC, SIMILAR_TO) if name in request.GET]
        if not given:
            return queryset
        if len(given) > 1:
            raise BadRequestError(f"{SEMANTIC} and {SIMILAR_TO} cannot be combined; give one of them")
        name = given[0]
        for other in CONFLICTS:
            if other in request.GET:
                raise BadRequestError(f"{name} cannot be combined with {other}; results are ranked by {name}")
        values = request.GET.getlist(name)
        if len(values) > 1:
            raise BadRequestError(f"{name} must be given once; it was given {len(values)} times")
        if name == SEMANTIC:
            words = semantic_words(request)
            with encoder_loaded(view, "words"):
                if not embedding_path(queryset.model).field.get_encoder().reads(words):
                    # A script the text model cannot read: ranking by meaning would be noise. Wagtail's
                    # own keyword search instead, unranked, and a note for the response's meta.
                    request.semantic_note = unreadable_note(words, KEYWORD_FIELDS)
                    return keyword_search(queryset, words)
                return searchable(queryset).semantic_search(words)
        anchor = similar_anchor(view, values[0])
        return searchable(queryset).similar_to(anchor)


#: PostgreSQL's largest bigint: no primary key, ``offset`` or ``limit`` is above it.
MAX_BIGINT = 2**63 - 1


def above(digits: str, bound: int) -> bool:
    """Whether ``digits`` (ASCII digits, maybe after a '-') is a number above ``bound`` (>= 0),
    by length first: ``int()`` refuses more than 4,300 digits (a ValueError, which was a 500)."""
    if digits.startswith("-"):
        return False
    significant = digits.lstrip("0")
    width = len(str(bound))
    return len(significant) > width or (len(significant) == width and int(significant) > bound)


def semantic_words(request: Any) -> str:
    """The words of ``?semantic=``: not blank, within ``MAX_QUERY_LENGTH``, in a query string that is
    valid UTF-8 (else a 400 naming the first parameter that is not)."""
    for name in not_utf8_names(request.META.get("QUERY_STRING", "")):
        raise BadRequestError(NOT_UTF8_MESSAGE.format(name=name or "the query string").removesuffix("."))
    try:
        return str(SearchTextField().run_validation(request.GET[SEMANTIC]))
    except ValidationError as exc:
        detail = exc.detail[0] if isinstance(exc.detail, list) else exc.detail
        raise BadRequestError(f"{SEMANTIC} error: {detail}") from None


def similar_anchor(view: Any, raw: str) -> Model:
    """The image of ``?similar_to=``, looked up in the endpoint's queryset only: an image this
    request may not see answers exactly like one that does not exist."""
    if INTEGER.fullmatch(raw) is None or raw.startswith("-") or not raw.strip("0"):
        raise BadRequestError(f"{SIMILAR_TO} must be a positive integer")
    queryset = view.get_queryset()
    # Past PostgreSQL's bigint no image exists (and past 4,300 digits int() raises).
    anchor = None if above(raw, MAX_BIGINT) else queryset.filter(pk=int(raw)).first()
    if anchor is None:
        raise BadRequestError(f"{SIMILAR_TO} image doesn't exist")
    path = embedding_path(type(anchor))
    if path.value(anchor, "visual") is None:
        status = path.value(anchor, "status") or EmbeddingStatus.PENDING
        if status == EmbeddingStatus.FAILED:  # waiting will not help: say why
            reason = public_reason(path.value(anchor, "error") or "")
            raise BadRequestError(f"{SIMILAR_TO} image could not be embedded (status: failed): {reason}")
        raise BadRequestError(f"{SIMILAR_TO} image has no vectors yet (status: {status}); try again later")
    visual = path.value(anchor, "visual")
    if not np.asarray(visual.to_numpy() if hasattr(visual, "to_numpy") else visual, dtype=np.float32).any():
        # A zero vector (written by other means than the pipeline): no direction, no cosine to rank by.
        raise BadRequestError(f"{SIMILAR_TO} image has a visual vector of all zeros: no image can be compared with it")
    return anchor


class ScoreField(Field):
    """``meta.score``: ``1 - cosine distance`` in a ranked listing, null for an image without one (a
    zero vector: ``expressions.Score``); left out otherwise (an image not ranked has no ``distance``)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def get_attribute(self, instance: Any) -> Any:
        score = getattr(instance, "score", None)
        if score is None and getattr(instance, "distance", None) is None:
            raise SkipField
        return score  # None is written as null

    def to_representation(self, value: Any) -> float:
        return round(float(value), 6)


#: The largest ``offset`` / ``limit`` PostgreSQL takes (a bigint); Wagtail's paging passes any
#: integer on, and a larger one was a database error (a 500).
MAX_PAGING = MAX_BIGINT


def paging_above(raw: str, bound: int) -> bool:
    """Whether a paging value that Wagtail's ``int()`` reads is above ``bound``: ASCII digits by
    length (``above``), any other form ``int()`` takes (``+5``, ``9_999``, Arabic-Indic or
    full-width digits) by its value. False for what ``int()`` refuses: Wagtail's own 400."""
    stripped = raw.strip()
    if INTEGER.fullmatch(stripped) is not None:
        return above(stripped, bound)
    try:
        return int(raw) > bound
    except ValueError:
        return False


class SemanticPagination(WagtailPagination):
    """Wagtail's paging, with an ``offset`` or ``limit`` past what the database takes refused
    with Wagtail's 400 naming the parameter.

    A ranked listing holds the ``max_ranked`` nearest images that the HNSW index gives, and
    ``meta.total_count`` counts those: the index is approximate, and deep in it (or past
    ``HNSW_MAX_SCAN_TUPLES``) it reaches fewer rows than a count of every image with vectors,
    so pages promised by such a count came short or empty. Past them a page is empty."""

    #: How many images a ranked listing holds (as the REST API caps ``offset`` at 1,000).
    max_ranked = 1000

    def paginate_queryset(self, queryset: QuerySet, request: Any, view: Any = None) -> Any:
        for name in ("offset", "limit"):
            if paging_above(request.GET.get(name, ""), MAX_PAGING):
                raise BadRequestError(f"{name} cannot be higher than {MAX_PAGING}")
        if is_ranked(queryset):
            # Its count is then that of the rows the ranked query gives (at most max_ranked).
            queryset = queryset[: self.max_ranked]
        return super().paginate_queryset(queryset, request, view)


class CheckedImagesAPIViewSet(ImagesAPIViewSet):
    """Wagtail's images endpoint, with the input its search, paging, content negotiation and
    ``find`` failed on (a 500, or a message that named no parameter) refused with a 400 naming the
    parameter. The base of :class:`SemanticImagesAPIViewSet`, and of the admin API's images
    endpoint that ``wagtail_hooks`` registers (``hidden.VisibleImagesAdminAPIViewSet``)."""

    pagination_class = SemanticPagination

    def check_query_parameters(self, queryset: QuerySet) -> None:
        """Wagtail's check of the listing's parameters, then ``check_filter_values``."""
        super().check_query_parameters(queryset)
        self.check_filter_values()

    def check_filter_values(self) -> None:
        """A 400 naming the parameter where Wagtail's filters would fail, for the listing and the detail
        view (which runs the same filters, and where Wagtail checks nothing):

        - a value holding a NUL character (PostgreSQL refuses it in text: Wagtail's ``search``
          and field filters were a 500); ``semantic`` reads a NUL as a space, as the REST API's
          ``q`` does;
        - ``search`` longer than ``MAX_QUERY_LENGTH`` or of more than ``MAX_SEARCH_WORDS`` words
          (Wagtail's search backend nests one condition per term, cutting at whitespace and
          hyphens: a RecursionError, a 500);
        - ``search_operator`` other than ``and``/``or`` with ``search`` (Wagtail's backend raised
          ``ValueError``, a 500);
        - ``tags`` with ``search``, which Wagtail does not support (a later field filter made its
          answer a message that named no parameter).
        """
        params = self.request.GET
        for name, values in params.lists():
            if name != SEMANTIC and any("\x00" in value for value in values):
                raise BadRequestError(f"{name} cannot contain NUL characters")
        if "search" in params:
            words = params.get("search", "")
            limit = int(semantic_settings.MAX_QUERY_LENGTH)
            if len(words) > limit:
                raise BadRequestError(f"search: the search text is longer than {limit} characters")
            if search_terms(words) > MAX_SEARCH_WORDS:
                raise BadRequestError(f"search: more than {MAX_SEARCH_WORDS} words")
            if params.get("search_operator", "and") not in SEARCH_OPERATORS:
                raise BadRequestError("search_operator must be 'and' or 'or'")
            if "tags" in params:
                raise BadRequestError("tags cannot be combined with search (filtering by tag while searching)")

    def detail_view(self, request: Any, pk: Any) -> Any:
        """Wagtail's detail view, its filters' values checked first (``check_filter_values``)."""
        self.check_filter_values()
        return super().detail_view(request, pk)

    def filter_queryset(self, queryset: QuerySet) -> Any:
        """The filter backends' narrowing. On the detail view with ``?search=``, the image among
        what Wagtail's search finds: its results are no queryset, and the detail view looked the image
        up in them with ``get()``, which they lack (a 404 with an empty message, for any image)."""
        if self.action != "detail_view" or "search" not in self.request.GET:
            return super().filter_queryset(queryset)
        lookup = self.lookup_url_kwarg or self.lookup_field
        image = queryset.filter(**{self.lookup_field: self.kwargs[lookup]})  # the search reads one image
        return image.filter(pk__in=[found.pk for found in super().filter_queryset(image)])

    def perform_content_negotiation(self, request: Any, force: bool = False) -> Any:
        """DRF's, with a ``?format=`` that none of the renderers writes a 400 naming ``format``
        (Wagtail answered 404 with an empty message)."""
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            formats = ", ".join(dict.fromkeys(renderer.format for renderer in self.get_renderers()))
            raise BadRequestError(f"format must be one of: {formats}") from None

    def find_object(self, queryset: QuerySet, request: Any) -> Any:
        """Wagtail's ``find/?id=``, with an id not written in ASCII digits (after an optional '-') a
        400 naming it: Wagtail passed it to the lookup as it was (``abc``: a ValueError, a 500), which
        also read " 5", "+5" and "٥" as 5 and "1_2" as 12, other addresses of an image."""
        if "id" in request.GET:
            key, raw = queryset.model._meta.pk, request.GET["id"]
            try:
                key.get_prep_value(raw)
            except (TypeError, ValueError):
                raise BadRequestError("id must be an integer") from None
            if isinstance(key, IntegerField) and INTEGER.fullmatch(raw) is None:
                raise BadRequestError("id must be an integer")
        return super().find_object(queryset, request)


class SemanticImagesAPIViewSet(CheckedImagesAPIViewSet):
    """Wagtail's images endpoint with ``?semantic=`` and ``?similar_to=``; ``meta.score`` on a
    ranked listing. Everything else (``fields``, ``limit``, ``offset``, field filters,
    ``order`` and ``search`` without a ranking, detail and find views) is Wagtail's."""

    filter_backends = [FieldsFilter, SemanticFilter, OrderingFilter, SearchFilter]
    known_query_parameters = ImagesAPIViewSet.known_query_parameters.union([SEMANTIC, SIMILAR_TO])
    meta_fields = [*ImagesAPIViewSet.meta_fields, APIField("score", serializer=ScoreField())]
    listing_default_fields = [*ImagesAPIViewSet.listing_default_fields, "score"]
    #: The rate (``DEFAULT_THROTTLE_RATES``) that a ranked listing counts against (``get_throttles``).
    semantic_throttle_scope = TEXT_SCOPE

    def get_throttles(self) -> list[Any]:
        """The site's throttles, and for a listing ranked by ``semantic`` or ``similar_to`` (the text
        model or a vector search, as the REST API's searches) ``SemanticSearchThrottle`` in the
        text search's scope (``semantic_throttle_scope``)."""
        throttles = list(super().get_throttles())
        if SEMANTIC in self.request.GET or SIMILAR_TO in self.request.GET:
            throttle = SemanticSearchThrottle()
            throttle.scope_attr = "semantic_throttle_scope"  # not throttle_scope: DRF's ScopedRateThrottle reads that
            throttles.append(throttle)
        return throttles

    def handle_exception(self, exc: Exception) -> Response:
        """Wagtail's handling; a throttled request's 429 (with ``Retry-After``), and the 503 of an
        encoder that cannot load, say why in Wagtail's ``{"message": ...}``, as its 400s and 404s do."""
        response = super().handle_exception(exc)
        explained = isinstance(exc, (Throttled, SearchUnavailable))
        if explained and isinstance(response.data, dict) and "detail" in response.data:
            response.data = {"message": str(response.data["detail"])}
        return response

    def listing_view(self, request: Any) -> Any:
        """Wagtail's listing; ``meta.note`` says when ``?semantic=`` words were matched as
        keywords (a script the text model cannot read)."""
        response = super().listing_view(request)
        note = getattr(request, "semantic_note", None)
        if note is not None and isinstance(response.data, dict) and isinstance(response.data.get("meta"), dict):
            response.data["meta"]["note"] = note
        return response
