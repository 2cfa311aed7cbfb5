"""``SemanticSearchViewSet``: text, photo and similar-image search for a site's router.

.. code-block:: python

    class PhotoSearchViewSet(SemanticSearchViewSet):
        queryset = Photo.objects.all()
        serializer_class = PhotoResultSerializer

        def get_queryset(self):            # the one method that decides who sees what
            return super().get_queryset().filter(published=True)

    router.register("photos", PhotoSearchViewSet, basename="photo-search")

gives ``GET photos/search/?q=words``, ``POST photos/search/`` (multipart ``image``) and
``GET photos/{id}/similar/``. Every search starts from ``get_queryset()`` and the
filter backends, then ranks, so nothing outside the site's queryset is returned.
"""

from __future__ import annotations

import warnings
from typing import Any

from django.db import DataError
from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from ..conf import semantic_settings
from ..fields import get_embedding_field
from ..imaging import ImageDecodeError, load_query_image
from .exceptions import NotEmbeddedYet, PayloadTooLarge
from .pagination import RankedPagination
from .querystring import ensure_filled, ensure_known, ensure_utf8
from .schema import SemanticSearchSchema, image_search_schema, similar_schema, text_search_schema
from .serializers import ImageQuerySerializer, TextQuerySerializer
from .throttling import IMAGE_SCOPE, TEXT_SCOPE, SemanticSearchThrottle

# Multipart framing around the file: the Content-Length check allows this much on top.
MULTIPART_OVERHEAD = 64 * 1024


class SemanticSearchViewSet(viewsets.GenericViewSet):
    """Ranked search over ``get_queryset()``; set ``queryset`` and ``serializer_class``.

    ``embedding_field`` names the model's ``ImageEmbeddingField`` when it has several.
    """

    embedding_field: str | None = None
    # Results leave the vector columns unread (a 1280-d vector is ~5 KB of TOAST per row).
    defer_vectors = True
    pagination_class = RankedPagination
    throttle_classes = [SemanticSearchThrottle]
    parser_classes = [MultiPartParser, FormParser]
    # Any path segment reaches the view, so a malformed id gets the API's JSON 404.
    lookup_value_regex = "[^/]+"
    text_scope = TEXT_SCOPE
    image_scope = IMAGE_SCOPE
    # Parameters accepted besides the paginator's and the filter backends'.
    common_params = ("format",)

    @property
    def throttle_scope(self) -> str:
        if self.action == "search" and self.request is not None and self.request.method == "POST":
            return self.image_scope
        return self.text_scope

    # -- request checks ---------------------------------------------------------
    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        ensure_utf8(request)
        if self.action in ("search", "similar"):
            filters = self.filter_params()
            allowed = set(self.common_params) | set(self.paging_params()) | set(filters)
            if self.action == "search" and request.method == "GET":
                allowed.add("q")
            ensure_known(request.query_params.keys(), allowed)
            ensure_filled(request.query_params, filters)

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

    # -- ranking ------------------------------------------------------------------
    def searchable_queryset(self) -> QuerySet:
        """What the caller may see, narrowed by the filter backends: the base of every ranking."""
        return self.filter_queryset(self.get_queryset())

    def ranked_response(self, ranked: QuerySet) -> Response:
        if self.defer_vectors:
            field = get_embedding_field(ranked.model, self.embedding_field)
            ranked = ranked.defer(field.visual_field, field.semantic_field)
        try:
            page = self.paginate_queryset(ranked)
            data = self.get_serializer(page if page is not None else ranked, many=True).data
        except DataError as exc:
            # A filter value the form accepted but PostgreSQL cannot hold (a date in year 0,
            # a time zone offset of +18:38): the caller's input, so a 400.
            message = str(exc).splitlines()[0]
            raise ValidationError({"detail": f"A filter value is out of range: {message}"}) from None
        return self.get_paginated_response(data) if page is not None else Response(data)

    @text_search_schema
    @image_search_schema
    @action(detail=False, methods=["get", "post"], schema=SemanticSearchSchema())
    def search(self, request: Request) -> Response:
        """``GET ?q=words``: images ranked by meaning; ``POST`` an ``image``: ranked by likeness."""
        if request.method == "POST":
            return self.image_search(request)
        params = TextQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        ranked = self.searchable_queryset().semantic_search(params.validated_data["q"], field=self.embedding_field)
        return self.ranked_response(ranked)

    def image_search(self, request: Request) -> Response:
        limit = int(semantic_settings.MAX_UPLOAD_BYTES)
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > limit + MULTIPART_OVERHEAD:
            raise PayloadTooLarge(f"The upload is {declared:,} bytes; the limit is {limit:,} bytes.")
        ensure_known(request.data.keys(), ["image"], where="form body")
        body = ImageQuerySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["image"]
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLarge(f"The image is {upload.size:,} bytes; the limit is {limit:,} bytes.")
        try:
            image = load_query_image(
                upload,
                max_bytes=limit,
                max_side=semantic_settings.MAX_IMAGE_SIDE,
                max_pixels=semantic_settings.MAX_IMAGE_PIXELS,
            )
        except ImageDecodeError as exc:
            raise ValidationError({"image": [str(exc)]}) from None
        ranked = self.searchable_queryset().similar_to(image, field=self.embedding_field)
        return self.ranked_response(ranked)

    @similar_schema
    @action(detail=True, methods=["get"], schema=SemanticSearchSchema())
    def similar(self, request: Request, pk: Any = None) -> Response:
        """Images that look like the stored image ``pk`` (which the caller must be able to see)."""
        lookup = self.lookup_url_kwarg or self.lookup_field
        anchor = get_object_or_404(self.get_queryset(), **{self.lookup_field: self.kwargs[lookup]})
        self.check_object_permissions(request, anchor)
        try:
            ranked = self.searchable_queryset().similar_to(anchor, field=self.embedding_field)
        except ValueError as exc:
            raise NotEmbeddedYet(str(exc)) from None
        return self.ranked_response(ranked)


def filterset_param_names(filterset_class: Any) -> list[str]:
    """The query parameter names of a django-filter ``FilterSet`` (range filters have two)."""
    if filterset_class is None:
        return []
    names = []
    for name, flt in filterset_class.base_filters.items():
        widget = flt.extra.get("widget") or getattr(flt.field_class, "widget", None)
        suffixes = getattr(widget, "suffixes", None)
        names += [f"{name}_{s}" if s else name for s in suffixes] if suffixes else [name]
    return names
