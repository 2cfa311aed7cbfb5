"""OpenAPI description of the search actions, through drf-spectacular.

``SemanticSearchSchema`` tells drf-spectacular that the search actions return pages
of the site's result serializer (so paging and filter parameters appear) and lists
every error status with its body; the decorators add summaries and parameters.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema

from .serializers import (
    DuplicatesQuerySerializer,
    ErrorSerializer,
    ImageQuerySerializer,
    TextQuerySerializer,
    duplicate_group_serializer,
)

PAGED_ACTIONS = ("list", "search", "similar", "duplicates")
#: The actions that rank, and so can sort their best matches by a column.
RANKED_ACTIONS = ("search", "similar")


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


COMMON_ERRORS = {
    400: _error("A missing, malformed or unsupported parameter; the body names it."),
    401: _error("Authentication failed (when the site's permissions require it)."),
    403: _error("The site's permission classes refused the request."),
    406: _error("No acceptable response format."),
    429: _error("Throttled: too many searches; see the Retry-After header."),
}


class SemanticSearchSchema(AutoSchema):
    """AutoSchema for ``SemanticSearchViewSet``: every action answers a page of results."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        if getattr(self.view, "action", None) in PAGED_ACTIONS:
            return True
        return super()._is_list_view(serializer)

    def get_override_parameters(self) -> list[Any]:
        """Besides the decorators' parameters, ``ordering`` on the ranked actions of a view with
        ``ordering_fields``."""
        params = list(super().get_override_parameters())
        view: Any = self.view
        if getattr(view, "action", None) in RANKED_ACTIONS and tuple(getattr(view, "ordering_fields", None) or ()):
            params.append(
                OpenApiParameter(
                    view.ordering_param,
                    OpenApiTypes.STR,
                    enum=view.ordering_choices(),
                    description=f"Sort the {view.ordering_within} best matches by this column ('-' for "
                    "descending) instead of by relevance.",
                )
            )
        return params

    def get_request_serializer(self) -> Any:
        if self.method == "POST":
            return getattr(self.view, "image_query_serializer_class", ImageQuerySerializer)
        return None

    def get_response_serializers(self) -> Any:
        view: Any = self.view  # a SemanticSearchViewSet
        result = view.get_result_serializer_class()
        if getattr(view, "action", None) == "duplicates":
            result = duplicate_group_serializer(result)
        responses: dict[int, Any] = {200: result, **COMMON_ERRORS}
        if self.method == "POST":
            responses[413] = _error("The upload is over the site's MAX_UPLOAD_BYTES.")
            responses[415] = _error("The body is neither multipart/form-data nor a urlencoded form.")
        if getattr(self.view, "action", None) == "search":
            responses[503] = _error("The encoder cannot load (its model files missing): search is unavailable now.")
        if getattr(self.view, "action", None) == "similar":
            responses[404] = _error("No image with this id among those the caller may see.")
            responses[409] = _error("The image has no vector: still pending, or its embedding failed (the reason).")
        return responses


class ImageQueryExtension(OpenApiSerializerExtension):
    """The upload form takes the ``image`` field and nothing else (others are a 400)."""

    target_class = ImageQuerySerializer

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


list_schema = extend_schema(
    summary="List the images the caller may see",
    description="The images of the site's queryset that the caller may see, narrowed by the filters, in the "
    "site's order and paged like the searches. Not ranked: `score` is null.",
)

text_search_schema = extend_schema(
    methods=["GET"],
    summary="Search images by words",
    description="Images ranked by meaning for the words in `q` (any language the text model knows; "
    "English works best). `score` orders results within this query only.",
    parameters=[
        TextQuerySerializer,
        OpenApiParameter(
            "Search-Note",
            str,
            OpenApiParameter.HEADER,
            response=True,
            description="Only when the words could not be ranked by meaning: why, and what was done instead "
            "(as the body's `note`; percent-encoded where it is not ASCII).",
        ),
    ],
    examples=[OpenApiExample("a query", value="a cat lying on a blanket", parameter_only=("q", "query"))],
)

image_search_schema = extend_schema(
    methods=["POST"],
    summary="Search images by a photo",
    description="Upload a photo as `image` (multipart/form-data); images ranked by visual likeness. "
    "Paging and filters go in the query string.",
    request={"multipart/form-data": ImageQuerySerializer},
)

similar_schema = extend_schema(
    summary="Images similar to a stored one",
    description="Images ranked by visual likeness to image `id`, which must be visible to the caller; "
    "the image itself is left out.",
)

duplicates_schema = extend_schema(
    summary="Groups of near-duplicate images",
    description="Groups of images the caller may see that look like copies of one picture (resized, "
    "re-encoded, cropped, mirrored), from their visual vectors; largest group first, paged like the searches "
    "(each page is a list of groups). Pairs the site marked as not duplicates are never in one group. "
    "Costly on a large library (every image's nearest neighbours): throttled like search by photo.",
    parameters=[DuplicatesQuerySerializer],
)
