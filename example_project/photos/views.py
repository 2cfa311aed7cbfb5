"""The example site's public search page: a plain template whose script calls the REST API
(``photos/api.py``), as any frontend would, so it finds exactly what an anonymous caller may see."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.generic import TemplateView

from django_semantic_images.conf import semantic_settings

#: Results per page of the public grid (the API's ``limit``).
PAGE_SIZE = 12


@method_decorator(ensure_csrf_cookie, name="dispatch")  # a signed-in visitor's photo search sends the token
class SearchPageView(TemplateView):
    """``/``: a search box, search by photo and a grid of results; no login."""

    template_name = "photos/search.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context.update(
            list_url=reverse("photo-search-list"),
            search_url=reverse("photo-search-search"),
            # The script puts the photo's id in place of the 0.
            similar_url=reverse("photo-search-similar", args=[0]),
            page_size=PAGE_SIZE,
            max_upload_bytes=int(semantic_settings.MAX_UPLOAD_BYTES),
            # The script reads the token from this cookie when it sends a photo (the page's copy goes
            # stale when the visitor signs in or out in another tab); none where scripts cannot read it.
            csrf_cookie_name=""
            if settings.CSRF_COOKIE_HTTPONLY or settings.CSRF_USE_SESSIONS
            else settings.CSRF_COOKIE_NAME,
        )
        return context
