"""``SemanticSearchViewSet``: text, photo and similar-image search for a site's router.

.. code-block:: python

    class PhotoSearchViewSet(SemanticSearchViewSet):
        queryset = Photo.objects.all()
        serializer_class = PhotoResultSerializer

        def get_queryset(self):            # the one method that decides who sees what
            return super().get_queryset().filter(published=True)

    router.register("photos", PhotoSearchViewSet, basename="photo-search")

gives ``GET photos/`` (the images the caller may see), ``GET photos/search/?q=words``,
``POST photos/search/`` (multipart ``image``), ``GET photos/{id}/similar/`` and
``GET photos/duplicates/?threshold=`` (groups of near-identical images). Every
request starts from ``get_queryset()`` and the filter backends, then ranks, so nothing
outside the site's queryset is returned.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np
from django import forms
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DataError, models
from django.db.models import FloatField, Model, QuerySet, Value
from django.http import Http404
from django.utils.datastructures import MultiValueDict
from django.utils.decorators import classonlymethod
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotAuthenticated, NotFound, ParseError, PermissionDenied, ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from ..conf import semantic_settings
from ..duplicates import check_threshold, group_rows, near_duplicates
from ..encoders.base import ENCODER_UNAVAILABLE
from ..expressions import BY_SCORE
from ..fields import EmbeddingPath, EmbeddingStatus, embedding_path
from ..imaging import ImageDecodeError, query_image
from ..pipeline.failures import public_reason
from ..query import SemanticQuerySetMixin, searchable, text_search
from ..uploads import declared_over, limit_uploads
from .exceptions import NotEmbeddedYet, PayloadTooLarge, SearchUnavailable
from .filtering import filter_widget, filters_nothing, filterset_param_names, is_comma_separated
from .pagination import UNCAPPED_ACTIONS, UNRANKED_ACTIONS, RankedPagination
from .querystring import (
    INTEGER,
    ensure_boolean,
    ensure_filled,
    ensure_known,
    ensure_numeric,
    ensure_single,
    ensure_utf8,
    strict_number,
)
from .schema import (
    RANKED_ACTIONS,
    SemanticSearchSchema,
    duplicates_schema,
    image_search_schema,
    list_schema,
    similar_schema,
    text_search_schema,
)
from .serializers import ImageQuerySerializer, TextQuerySerializer, duplicate_group_serializer
from .throttling import IMAGE_SCOPE, TEXT_SCOPE, SemanticSearchThrottle, search_throttle_classes

logger = logging.getLogger(__name__)

#: The response header that repeats a text search's ``note`` (words matched as keywords).
NOTE_HEADER = "Search-Note"
THRESHOLD_PARAM = "threshold"
THRESHOLD_MESSAGE = "threshold must be a number greater than 0 and at most 1 (a cosine distance)."

#: ``throttle_classes`` of a viewset that names none: the site's defaults and the search scopes
#: (``SemanticSearchViewSet.get_throttles``).
SEARCH_THROTTLES: Sequence[type[BaseThrottle]] = (SemanticSearchThrottle,)


class ParamRules(NamedTuple):
    """The query string a list or search action takes: what ``initial`` checks."""

    accepted: frozenset[str]  # every parameter it knows
    single: frozenset[str]  # those that may be given once only
    filters: tuple[str, ...]  # the filter backends' (an empty value is refused)
    integers: tuple[str, ...]  # written as the schema's integer
    numbers: tuple[str, ...]  # written as the schema's number
    lists: frozenset[str]  # of those, the ones whose value is a comma-separated list of them
    booleans: tuple[tuple[str, Any], ...]  # true/false filters, each with the widget that reads it


_param_rules: dict[tuple[Any, ...], ParamRules] = {}


class SemanticSearchViewSet(viewsets.GenericViewSet):
    """Ranked search over ``get_queryset()``; set ``queryset`` and ``serializer_class``.

    ``embedding_field`` names the model's ``ImageEmbeddingField`` when it has several.
    """

    embedding_field: str | None = None
    # Results leave the vector columns unread (a 1280-d vector is ~5 KB of TOAST per row).
    defer_vectors = True
    pagination_class = RankedPagination
    schema = SemanticSearchSchema()
    # Left as it is: the site's DEFAULT_THROTTLE_CLASSES and SemanticSearchThrottle (get_throttles);
    # a viewset that sets its own gets those alone, as any DRF view.
    throttle_classes = SEARCH_THROTTLES
    parser_classes = [MultiPartParser, FormParser]
    # The body of POST search/: the browsable API's form and the schema's request body.
    image_query_serializer_class = ImageQuerySerializer
    # Any path segment reaches the view, so a malformed id gets the API's JSON 404.
    lookup_value_regex = "[^/]+"
    text_scope = TEXT_SCOPE
    image_scope = IMAGE_SCOPE
    # duplicates/ compares every visible image with its nearest ones: the costlier scope.
    duplicates_scope = IMAGE_SCOPE
    # The plain list and OPTIONS run no model: no search scope unless a site names one (the
    # site's DEFAULT_THROTTLE_CLASSES still apply).
    list_scope: str | None = None
    # Parameters accepted besides the paginator's and the filter backends'.
    common_params = ("format",)
    # Query parameters that may be repeated, besides multiple-choice filters; any other
    # parameter given twice is a 400 (the last value would silently replace the first).
    multi_valued_params: tuple[str, ...] = ()
    # Columns a search's best matches can be sorted by (``?ordering=-created_at``): the
    # ``ordering_within`` best, then that column (``QuerySet.best(n).order_by(...)``).
    ordering_fields: tuple[str, ...] = ()
    ordering_within = 100
    ordering_param = "ordering"
    # Where the words of a search the text model cannot read are matched (``icontains``, every
    # word): None for the embedding field's ``text_fields`` (``query.text_search``).
    keyword_fields: tuple[str, ...] | None = None
    # The accepted query parameters are read from the filter backends, the filterset's form and
    # the paginator once per process (``param_rules``); False reads them on every request.
    cache_param_rules = True

    @classonlymethod
    def as_view(cls, actions: dict[str, Any] | None = None, **initkwargs: Any) -> Any:
        """DRF's view, marked with ``MAX_UPLOAD_BYTES`` where it takes ``POST search/`` (the search by
        photo): ``asgi.UploadLimitMiddleware`` then keeps a larger body from being received."""
        view = super().as_view(actions, **initkwargs)
        if (actions or {}).get("post") == "search":
            limit_uploads(view, lambda: int(semantic_settings.MAX_UPLOAD_BYTES))
        return view

    def get_throttles(self) -> list[BaseThrottle]:
        """DRF's, with the site's ``DEFAULT_THROTTLE_CLASSES`` before ``SemanticSearchThrottle`` while
        ``throttle_classes`` is left as it is (``search_throttle_classes``): a site-wide rate for
        anonymous callers covers the searches too."""
        if self.throttle_classes is SEARCH_THROTTLES:
            return [throttle() for throttle in search_throttle_classes()]
        return super().get_throttles()

    @property
    def throttle_scope(self) -> str | None:
        if self.action == "search" and self.request is not None and self.request.method == "POST":
            return self.image_scope
        if self.action == "duplicates":
            return self.duplicates_scope
        if self.action in ("list", "metadata"):
            return self.list_scope
        return self.text_scope

    # -- serializers --------------------------------------------------------------
    def get_serializer_class(self) -> type[BaseSerializer]:
        """The upload form for ``POST search/`` (also as OPTIONS describes it: DRF's metadata asks
        with the method set to POST, under the action ``metadata``), else the result serializer."""
        posts_search = getattr(self, "action_map", {}).get("post") == "search"
        if posts_search and self.request is not None and self.request.method == "POST":
            return self.image_query_serializer_class
        return self.get_result_serializer_class()

    def get_result_serializer_class(self) -> type[BaseSerializer]:
        """The serializer of each result (``serializer_class``)."""
        return super().get_serializer_class()

    def get_result_serializer(self, *args: Any, **kwargs: Any) -> BaseSerializer:
        kwargs.setdefault("context", self.get_serializer_context())
        return self.get_result_serializer_class()(*args, **kwargs)

    # -- errors -------------------------------------------------------------------------
    def handle_exception(self, exc: Exception) -> Response:
        """DRF's handling, with Django's own limits on a request (``request_limit_error``) answered
        as the API's JSON errors instead of Django's bare HTML 400 page."""
        return super().handle_exception(request_limit_error(exc))

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        """DRF's, with a ``?format=`` that none of the view's renderers writes a 400 naming ``format``:
        DRF answered 404 "Not found.", which named nothing and read as a missing endpoint (or image)."""
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            name = str(api_settings.URL_FORMAT_OVERRIDE or "format")
            formats = ", ".join(dict.fromkeys(renderer.format for renderer in self.get_renderers()))
            raise ValidationError({name: [f"{name} must be one of: {formats}."]}) from None

    # -- authentication -------------------------------------------------------------
    def get_authenticate_header(self, request: Request) -> str:
        """The first challenge any authenticator offers (DRF asks only the first one).

        With DRF's default ``[SessionAuthentication, BasicAuthentication]`` a failed login
        is then a 401 with ``WWW-Authenticate: Basic ...``, not a 403.
        """
        for authenticator in self.get_authenticators():
            header = authenticator.authenticate_header(request)
            if header:
                return header
        return ""  # no challenge: DRF answers 403

    # -- request checks ---------------------------------------------------------
    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if self.action == "search" and request.method == "POST":
            # Before authentication: a session's CSRF check reads the form, the whole upload.
            refuse_declared_oversize(request)
        super().initial(request, *args, **kwargs)
        ensure_utf8(request)
        ensure_one_format(request, self.format_kwarg)
        if self.action in ("list", "search", "similar", "duplicates"):
            rules = self.param_rules()
            ensure_known(request.query_params.keys(), rules.accepted)
            ensure_single(request.query_params, rules.single)
            ensure_filled(request.query_params, rules.filters)
            ensure_numeric(request.query_params, rules.integers, rules.numbers, rules.lists)
            ensure_boolean(request.query_params, rules.booleans)
            paginator = self.paginator
            if isinstance(paginator, RankedPagination):
                # Bad paging is a 400 before any work: duplicates/ probes the whole library first,
                # a search runs the text model or the CNN.
                ranked, capped = self.action not in UNRANKED_ACTIONS, self.action not in UNCAPPED_ACTIONS
                paginator.get_params(request, ranked=ranked, capped=capped, in_sql=self.action != "duplicates")

    def param_rules(self) -> ParamRules:
        """What ``initial`` checks the query string against, for this action and method.

        Built from ``filter_params``, ``paging_params``, ``repeatable_params`` and
        ``numeric_filter_params`` (which build the filterset's form): per process, once per view
        class, action, method, filter backends and filterset, unless ``cache_param_rules`` is off
        (a site whose filters or paging change per request).
        """
        key = None
        if self.cache_param_rules:
            fields = getattr(self, "filterset_fields", None)
            key = (
                type(self),
                self.action,
                self.request.method if self.request is not None else None,
                tuple(self.filter_backends),
                getattr(self, "filterset_class", None),
                None if fields is None else repr(fields),
                self.pagination_class,
                tuple(self.common_params),
                tuple(self.multi_valued_params),
                tuple(self.ordering_fields),
                self.ordering_param,
            )
            found = _param_rules.get(key)
            if found is not None:
                return found
        filters = self.filter_params()
        accepted = {*self.common_params, *self.paging_params(), *filters}
        if self.action == "search" and self.request is not None and self.request.method in ("GET", "HEAD"):
            accepted.add("q")  # DRF answers HEAD with the GET action
        if self.action == "duplicates":
            accepted.add(THRESHOLD_PARAM)
        if self.action in RANKED_ACTIONS and self.ordering_fields:
            accepted.add(self.ordering_param)
        integers, numbers, lists = self.numeric_filter_params()
        rules = ParamRules(
            frozenset(accepted),
            frozenset(accepted - self.repeatable_params()),
            tuple(filters),
            tuple(integers),
            tuple(numbers),
            frozenset(lists),
            tuple(self.boolean_filter_params()),
        )
        if key is not None:
            _param_rules[key] = rules
        return rules

    def paging_params(self) -> list[str]:
        paginator = self.paginator
        if paginator is None:
            return []
        return [p["name"] for p in paginator.get_schema_operation_parameters(self)]

    def filter_params(self) -> list[str]:
        """Query parameters the filter backends read (django-filter's filterset fields included)."""
        names: list[str] = []
        for backend_class in self.filter_backends:
            backend = backend_class()
            if hasattr(backend, "get_filterset_class"):
                names += filterset_param_names(backend.get_filterset_class(self, self.get_queryset()))
            if hasattr(backend, "get_schema_operation_parameters"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    names += [p["name"] for p in backend.get_schema_operation_parameters(self)]
        return names

    def numeric_filter_params(self) -> tuple[list[str], list[str], list[str]]:
        """The filter parameters the schema declares ``integer`` and those it declares ``number``,
        then those of them whose value is a comma-separated list (an array in the schema:
        django-filter's ``BaseInFilter`` and ``BaseRangeFilter`` on a number, ``?ids=3,5``).

        Read from the filterset's form fields (a ``RangeFilter``'s halves included), so the
        strict check in ``initial`` covers every numeric filter a site declares.
        """
        integers: list[str] = []
        numbers: list[str] = []
        lists: list[str] = []
        for backend_class in self.filter_backends:
            get_filterset = getattr(backend_class(), "get_filterset", None)
            filterset = get_filterset(self.request, self.get_queryset(), self) if get_filterset else None
            if filterset is None:
                continue
            for name, field in filterset.form.fields.items():
                suffixes = getattr(field.widget, "suffixes", None)
                if suffixes and isinstance(field, forms.MultiValueField):
                    parts = list(zip([f"{name}_{s}" if s else name for s in suffixes], field.fields, strict=True))
                else:
                    parts = [(name, field)]
                for param, part in parts:
                    kind = numeric_kind(part)
                    if kind == "integer":
                        integers.append(param)
                    elif kind == "number":
                        numbers.append(param)
                    if kind is not None and is_comma_separated(part):
                        lists.append(param)
        return integers, numbers, lists

    def boolean_filter_params(self) -> list[tuple[str, Any]]:
        """The true/false filters (django-filter's ``BooleanFilter``), each with its form field's widget:
        the widget reads ``true``, ``false`` (and the like) and leaves the filter out for anything else."""
        found: list[tuple[str, Any]] = []
        for backend_class in self.filter_backends:
            get_filterset = getattr(backend_class(), "get_filterset", None)
            filterset = get_filterset(self.request, self.get_queryset(), self) if get_filterset else None
            if filterset is not None:
                found += [
                    (name, field.widget)
                    for name, field in filterset.form.fields.items()
                    if isinstance(field, forms.BooleanField)  # NullBooleanField too
                ]
        return found

    def repeatable_params(self) -> set[str]:
        """``multi_valued_params`` and the multiple-choice filters (``?tag=a&tag=b``)."""
        names = set(self.multi_valued_params)
        for backend_class in self.filter_backends:
            get_filterset_class = getattr(backend_class(), "get_filterset_class", None)
            if get_filterset_class is not None:
                names |= filterset_multi_valued(get_filterset_class(self, self.get_queryset()))
        return names

    # -- responses ------------------------------------------------------------------
    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        """The filter backends' filtering, leaving out a django-filter backend given none of its
        parameters (``filtering.filters_nothing``: it would build and check its form for nothing)."""
        for backend_class in list(self.filter_backends):
            backend = backend_class()
            get_filterset_class = getattr(backend, "get_filterset_class", None)
            if get_filterset_class is not None and filters_nothing(
                backend_class, get_filterset_class(self, queryset), self.request.query_params
            ):
                continue
            queryset = backend.filter_queryset(self.request, queryset, self)
        return queryset

    def searchable_queryset(self) -> SemanticQuerySetMixin:
        """What the caller may see, narrowed by the filter backends: the base of every ranking
        (with the search methods, whatever the model's manager), its relevance measured
        against what the caller may see (a hidden row moves no relevance)."""
        visible = self.get_queryset()
        return searchable(self.filter_queryset(visible)).calibrated_on(visible)

    def page_response(self, queryset: QuerySet) -> Response:
        """One page of ``queryset`` (ranked or not) through the result serializer."""
        path = embedding_path(queryset.model, self.embedding_field)
        if self.defer_vectors and not path.prefix:  # vectors in a joined table are not selected
            queryset = queryset.defer(path.field.visual_field, path.field.semantic_field)
        with filter_values_checked():
            page = self.paginate_queryset(queryset)
            data = self.get_result_serializer(page if page is not None else queryset, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def ordering_choices(self) -> list[str]:
        """The values ``ordering`` takes: each of ``ordering_fields``, ascending or descending."""
        return [f"{sign}{name}" for name in self.ordering_fields for sign in ("", "-")]

    def sort_best(self, ranked: QuerySet) -> QuerySet:
        """``ranked`` as it is, or its ``ordering_within`` best sorted by the column the caller named."""
        value = self.request.query_params.get(self.ordering_param) if self.ordering_fields else None
        if value is None:
            return ranked
        choices = self.ordering_choices()
        if value not in choices:
            message = f"{self.ordering_param} must be one of: {', '.join(choices)}."
            raise ValidationError({self.ordering_param: [message]})
        by = BY_SCORE if value == "-score" else value  # a row without a score last, as when ranked
        return ranked.best(self.ordering_within).order_by(by, "pk")  # type: ignore[attr-defined]

    # -- actions ----------------------------------------------------------------------
    @list_schema
    def list(self, request: Request, **kwargs: Any) -> Response:
        """The images you may see, in the site's order, without a score.

        Search them by words at search/?q=words, by a photo with a POST to search/, or
        by likeness to one of them at {id}/similar/.
        """
        # Each action takes **kwargs: DefaultRouter's format suffix (photos.json) comes as format=, and
        # {id}/similar/ names the id after lookup_url_kwarg (get_anchor reads it from self.kwargs).
        queryset = total_order(self.searchable_queryset())
        return self.page_response(queryset.annotate(score=Value(None, output_field=FloatField())))

    @text_search_schema
    @image_search_schema
    @action(detail=False, methods=["get", "post"])
    def search(self, request: Request, **kwargs: Any) -> Response:
        """Images ranked by meaning for the words in q (GET), or by visual likeness to an
        uploaded photo (POST, multipart/form-data with an image file).
        """
        if request.method == "POST":
            return self.image_search(request)
        params = TextQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        with encoder_loaded(self, "words"):
            rows, note = text_search(
                self.searchable_queryset(),
                params.validated_data["q"],
                field=self.embedding_field,
                keyword_fields=self.keyword_fields,
            )
        if note is None:
            return self.page_response(self.sort_best(rows))
        # Words the text model cannot read: keyword matches, unranked, in the caller's order or by key.
        # The ranked search's parameters are still checked (a bad min_score is a 400 either way).
        if self.paginator is not None and hasattr(self.paginator, "get_params"):
            self.paginator.get_params(request, ranked=True)
        value = self.request.query_params.get(self.ordering_param) if self.ordering_fields else None
        if value is not None and value not in self.ordering_choices():
            message = f"{self.ordering_param} must be one of: {', '.join(self.ordering_choices())}."
            raise ValidationError({self.ordering_param: [message]})
        # The null score first: a viewset's ordering_fields may take score.
        rows = rows.annotate(score=Value(None, output_field=FloatField()))
        response = self.page_response(rows.order_by(*([value] if value else []), "pk"))
        if isinstance(response.data, dict):
            response.data["note"] = note
        # Also a header: the only place for it without pagination, whose body is the schema's array.
        response[NOTE_HEADER] = note if note.isascii() else quote(note, safe=" ,.;:()'")
        return response

    def image_search(self, request: Request) -> Response:
        limit = int(semantic_settings.MAX_UPLOAD_BYTES)
        form = form_data(request)
        ensure_known(list(form), ["image"], where="form body")
        ensure_single(form, ["image"])
        body = self.get_serializer(data=form)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["image"]
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"The image is {upload.size:,} bytes; the limit is {limit:,} bytes.")
        try:
            image = query_image(upload, max_bytes=limit)
        except ImageDecodeError as exc:
            raise ValidationError({"image": [str(exc)]}) from None
        with encoder_loaded(self, "photo"):
            ranked = self.searchable_queryset().similar_to(image, field=self.embedding_field)
        return self.page_response(self.sort_best(ranked))

    @similar_schema
    @action(detail=True, methods=["get"])
    def similar(self, request: Request, pk: Any = None, **kwargs: Any) -> Response:
        """Images that look like the stored image {id}, which you must be able to see; the
        image itself is left out.
        """
        anchor = self.get_anchor()
        path = embedding_path(type(anchor), self.embedding_field)
        visual = path.value(anchor, "visual")
        if visual is None:
            raise NotEmbeddedYet(not_embedded_message(anchor, path))
        if not np.asarray(visual.to_numpy() if hasattr(visual, "to_numpy") else visual, dtype=np.float32).any():
            # A zero vector (written by other means than the pipeline): no direction, no cosine to rank by.
            name = f"{str(anchor._meta.verbose_name).capitalize()} {anchor.pk}"
            raise NotEmbeddedYet(
                f"{name} has a visual vector of all zeros: no image can be compared with it; re-embed it."
            )
        ranked = self.searchable_queryset().similar_to(anchor, field=self.embedding_field)
        return self.page_response(self.sort_best(ranked))

    @duplicates_schema
    @action(detail=False, methods=["get"])
    def duplicates(self, request: Request, **kwargs: Any) -> Response:
        """Groups of images you may see that look like copies of one picture, largest first."""
        queryset = self.searchable_queryset()
        threshold = read_threshold(request)
        path = embedding_path(queryset.model, self.embedding_field)
        rows = queryset.annotate(score=Value(None, output_field=FloatField()))
        if self.defer_vectors and not path.prefix:
            rows = rows.defer(path.field.visual_field, path.field.semantic_field)
        group_class = duplicate_group_serializer(self.get_result_serializer_class())
        context = self.get_serializer_context()
        with filter_values_checked():  # the filters' values reach the database here, not in a page_response
            groups = near_duplicates(queryset, threshold, field=self.embedding_field)
            page = self.paginate_queryset(groups)
            shown = groups if page is None else page
            data = [
                group_class({"distance": group.distance, "images": members}, context=context).data
                for group, members in group_rows(rows, shown)
            ]
        return self.get_paginated_response(data) if page is not None else Response(data)

    def get_anchor(self) -> Model:
        """The image of ``{id}/similar/``, looked up only among ``get_queryset()``.

        A hidden image answers exactly like a missing one, with the same 404 and body:
        also a malformed id (an integer key not in ASCII digits, ``malformed_key``), and one that
        an object permission refuses.
        """
        queryset = self.get_queryset()
        missing = NotFound(f"No {queryset.model._meta.object_name} matches the given query.")
        lookup = self.lookup_url_kwarg or self.lookup_field
        raw = self.kwargs[lookup]
        if malformed_key(queryset.model, self.lookup_field, raw):
            raise missing
        try:
            anchor = get_object_or_404(queryset, **{self.lookup_field: raw})
            self.check_object_permissions(self.request, anchor)
        except (Http404, PermissionDenied, NotAuthenticated):
            raise missing from None
        return anchor


@contextmanager
def encoder_loaded(view: Any, what: str) -> Iterator[None]:
    """A 503 saying the search is unavailable, the error logged, where the encoder cannot load (a
    text model or weights missing): it was a 500 with no message."""
    try:
        yield
    except ENCODER_UNAVAILABLE as exc:
        logger.exception("The search by %s of %s could not load its encoder", what, type(view).__name__)
        raise SearchUnavailable() from exc


@contextmanager
def filter_values_checked() -> Iterator[None]:
    """Turn a filter value the form accepted but PostgreSQL cannot hold (a date in year 0, a
    time zone offset of +18:38) into a 400: it is the caller's input, met in the first query."""
    try:
        yield
    except DataError as exc:
        message = str(exc).splitlines()[0]
        raise ValidationError({"detail": f"A filter value is out of range: {message}"}) from None


def total_order(queryset: QuerySet) -> QuerySet:
    """``queryset`` in its own order (its ``order_by()``, else the model's ``Meta.ordering``), then
    by primary key: rows tied on the site's columns (one ``created_at`` for a whole import) come in
    one order on every page, where LIMIT/OFFSET alone gave each page its own and repeated or
    skipped rows. A random order (``"?"``) is left as it is."""
    query = queryset.query
    if query.extra_order_by:  # extra(order_by=...): the site's own SQL, left as it is
        return queryset
    ordering = list(query.order_by or (queryset.model._meta.ordering if query.default_ordering else ()))
    pk = queryset.model._meta.pk
    keys = {"pk", "-pk", pk.name, f"-{pk.name}", pk.attname, f"-{pk.attname}"}
    if "?" in ordering or any(isinstance(name, str) and name in keys for name in ordering):
        return queryset
    return queryset.order_by(*ordering, "pk")


def form_data(request: Request) -> Any:
    """The parsed form of a POST: DRF gives a body without a Content-Type (``curl -X POST``) as a
    plain ``{}``, which has no ``getlist``; it is then an empty form."""
    data: Any = request.data
    return data if isinstance(data, MultiValueDict) else MultiValueDict({key: [value] for key, value in data.items()})


def ensure_one_format(request: Request, suffix: str | None) -> None:
    """A 400 naming ``format`` for a ``?format=`` beside a format suffix (``photos.json?format=xml``):
    the suffix won and the parameter was silently left out, as a single-valued parameter given twice."""
    name = api_settings.URL_FORMAT_OVERRIDE
    if suffix is None or not name or name not in request.query_params:
        return
    count = 1 + len(request.query_params.getlist(name))
    raise ValidationError({name: [f"Give {name} once; it was given {count} times."]})


def refuse_declared_oversize(request: Request) -> None:
    """``PayloadTooLarge`` for a request whose ``Content-Length`` says its upload is over
    ``MAX_UPLOAD_BYTES`` (and the form's overhead): refused before anything reads its body."""
    limit = int(semantic_settings.MAX_UPLOAD_BYTES)
    declared = declared_over(request, limit)
    if declared is not None:
        raise PayloadTooLarge(f"The upload is {declared:,} bytes; the limit is {limit:,} bytes.")


def request_limit_error(exc: Exception) -> Exception:
    """The API error for a request over one of Django's ``DATA_UPLOAD_MAX_*`` limits (Django raises
    them as a ``SuspiciousOperation``, which DRF leaves to Django: an HTML page with no message);
    any other exception as it is."""
    if isinstance(exc, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return ParseError(f"The request has more than {limit:,} parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS).")
    if isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return ParseError(
            f"The form has more than {limit:,} files (DATA_UPLOAD_MAX_NUMBER_FILES); upload one, in the image field."
        )
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return PayloadTooLarge(
            f"The form's fields besides its files are over {limit:,} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE); "
            "send the image as a file."
        )
    return exc


def read_threshold(request: Request) -> float | None:
    """``?threshold=`` as a cosine distance in (0, 1] (None when absent); else a 400 naming it."""
    raw = request.query_params.get(THRESHOLD_PARAM)
    if raw is None:
        return None
    value = strict_number(THRESHOLD_PARAM, raw, THRESHOLD_MESSAGE)
    try:
        return check_threshold(value)
    except ValueError:
        raise ValidationError({THRESHOLD_PARAM: [THRESHOLD_MESSAGE]}) from None


def not_embedded_message(instance: Model, path: EmbeddingPath) -> str:
    """Why ``instance`` has no visual vector: still pending, or failed (with the pipeline's reason,
    ``public_reason``).

    ``path`` finds the vectors on the instance or across a one-to-one (a Wagtail image's
    ``semantic_vectors``); a missing row of vectors counts as pending.
    """
    status = path.value(instance, "status") or EmbeddingStatus.PENDING
    name = f"{str(instance._meta.verbose_name).capitalize()} {instance.pk}"
    if status == EmbeddingStatus.FAILED:
        return f"{name} could not be embedded (status: failed): {public_reason(path.value(instance, 'error') or '')}"
    if status == EmbeddingStatus.PENDING:
        return f"{name} has not been embedded yet (status: pending); try again shortly."
    return f"{name} has no visual vector (status: {status})."


def filterset_multi_valued(filterset_class: Any) -> set[str]:
    """The filters of a ``FilterSet`` that take several values (``MultipleChoiceFilter`` ...)."""
    if filterset_class is None:
        return set()
    return {
        name
        for name, flt in filterset_class.base_filters.items()
        if getattr(filter_widget(flt), "allow_multiple_selected", False)
    }


def malformed_key(model: type[Model], lookup_field: str, raw: Any) -> bool:
    """Whether ``raw`` looks up an integer column (the primary key, by default) in a form other than
    ASCII digits after an optional '-': Django's lookup reads " 5", "+5", "0_5" and "٥" as 5."""
    try:
        field = model._meta.pk if lookup_field == "pk" else model._meta.get_field(lookup_field)
    except FieldDoesNotExist:  # a lookup across a relation: left to Django
        return False
    return isinstance(field, models.IntegerField) and INTEGER.fullmatch(str(raw)) is None


def numeric_kind(field: forms.Field) -> str | None:
    """``"integer"`` or ``"number"`` for a form field the schema describes so, else None.

    A model choice whose key is an integer column (a ``ModelChoiceFilter`` on a foreign key)
    is an ``integer`` too.
    """
    if isinstance(field, (forms.FloatField, forms.DecimalField)):  # both subclass IntegerField
        return "number"
    if isinstance(field, forms.IntegerField):
        return "integer"
    if isinstance(field, forms.ModelChoiceField) and field.queryset is not None:
        meta = field.queryset.model._meta
        key = meta.get_field(field.to_field_name) if field.to_field_name else meta.pk
        if isinstance(key, models.IntegerField):  # AutoField and BigAutoField included
            return "integer"
    return None
