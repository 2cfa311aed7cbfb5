"""API errors beyond DRF's own: each is a 4xx (or a 503) with a message a frontend can show."""

from __future__ import annotations

from rest_framework import status
from rest_framework.exceptions import APIException


class PayloadTooLarge(APIException):
    """The uploaded query image is over ``SEMANTIC_IMAGES["MAX_UPLOAD_BYTES"]``."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The uploaded file is too large."
    default_code = "too_large"


class SearchUnavailable(APIException):
    """The encoder cannot load (a text model or weights missing): searches by words and by photo wait
    for the site to fix it (the error is in the server's log)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Search is unavailable now (the encoder could not be loaded); try again later."
    default_code = "search_unavailable"


class NotEmbeddedYet(APIException):
    """The stored image has no vector yet (still pending, or its file failed to decode)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "This image has not been embedded yet; try again shortly."
    default_code = "not_embedded"
