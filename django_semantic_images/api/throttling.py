"""Throttling through DRF's throttle classes, one scope per kind of search.

Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, e.g.
``{"semantic_search": "60/min", "semantic_image_search": "10/min"}``; a scope with
no rate there is not throttled. Text search costs one BERT pass, an image upload a
decode and a CNN pass, so sites usually give uploads the lower rate. The site's own
``DEFAULT_THROTTLE_CLASSES`` (``AnonRateThrottle`` ...) apply too (``search_throttle_classes``).
"""

from __future__ import annotations

from typing import Any, cast

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle

TEXT_SCOPE = "semantic_search"
IMAGE_SCOPE = "semantic_image_search"


class SemanticSearchThrottle(ScopedRateThrottle):
    """``ScopedRateThrottle`` that reads the rates at request time and lets unrated scopes pass.

    The view names its scope with ``throttle_scope`` (``SemanticSearchViewSet`` sets it
    per action). Authenticated users are counted by id, anonymous ones by address (``get_ident``).
    """

    def get_ident(self, request: Any) -> str:
        """The caller's address: ``REMOTE_ADDR``, or with DRF's ``NUM_PROXIES`` set, the address that
        many proxies in from the end of ``X-Forwarded-For`` (DRF's reading).

        With ``NUM_PROXIES`` unset DRF counts the whole ``X-Forwarded-For`` header, which any caller
        writes: a new value on each request escaped the throttle. Here the header is read only when
        the site says how many proxies write it.
        """
        if api_settings.NUM_PROXIES is None:
            return str(request.META.get("REMOTE_ADDR") or "")
        return super().get_ident(request)

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = getattr(view, self.scope_attr, None)
        rates = api_settings.DEFAULT_THROTTLE_RATES or {}
        if not scope or not rates.get(scope):
            return True
        self.THROTTLE_RATES = {key: None if value is None else str(value) for key, value in rates.items()}
        return super().allow_request(request, view)


def search_throttle_classes() -> list[type[BaseThrottle]]:
    """The throttles of a search viewset that names no ``throttle_classes`` of its own: the site's
    ``DEFAULT_THROTTLE_CLASSES`` (read per request), then ``SemanticSearchThrottle``.

    DRF's ``ScopedRateThrottle`` among them is left out: ``SemanticSearchThrottle`` does its work
    (it would count each search twice, and fail on a scope without a rate).
    """
    defaults = cast("list[type[BaseThrottle]]", api_settings.DEFAULT_THROTTLE_CLASSES)  # imported (stubs: str)
    site = [cls for cls in defaults if not issubclass(cls, ScopedRateThrottle)]
    return [*site, SemanticSearchThrottle]
