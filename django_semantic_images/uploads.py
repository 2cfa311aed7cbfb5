"""Search-by-photo uploads refused by their declared size, before anything reads their body.

Django sets no limit on an uploaded file (``DATA_UPLOAD_MAX_MEMORY_SIZE`` counts the form's other
fields only): its multipart parser reads the whole body, spooling a large file to a temporary file,
and the first thing that reads ``request.POST`` is Django's CSRF check, before the view. A view
that takes a photo is therefore CSRF-exempt to Django's middleware and runs the same check itself
(``csrf_rejection``), once the request's ``Content-Length`` is known to be within its limit. Under
WSGI a body is never read past its ``Content-Length``, so that header bounds what is read.

Under ASGI, Django's handler receives the whole body before any middleware or view runs: such a
view is marked with its limit (``limit_uploads``), and ``asgi.UploadLimitMiddleware``, wrapped
around the ASGI application, keeps the body of a request over it from being received.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

#: Multipart framing around the file (boundaries, headers, the form's other fields): the size
#: check allows this much on top of the file's limit.
MULTIPART_OVERHEAD = 64 * 1024


#: The attribute that marks a view taking a photo upload: a callable giving its limit in bytes.
LIMIT_ATTRIBUTE = "semantic_images_upload_limit"

View = Callable[..., Any]


def limit_uploads(view: View, limit: Callable[[], int]) -> View:
    """Mark ``view`` as taking an upload of at most ``limit()`` bytes (read per request, so a
    setting changed at run time counts). Decorators that copy ``__dict__`` (``functools.wraps``)
    keep the mark."""
    setattr(view, LIMIT_ATTRIBUTE, limit)
    return view


def body_limit(view: View) -> int | None:
    """The most bytes of body a POST to a view marked by ``limit_uploads`` may declare (its file's
    limit and the form's framing); None for an unmarked view."""
    limit = getattr(view, LIMIT_ATTRIBUTE, None)
    return None if limit is None else int(limit()) + MULTIPART_OVERHEAD


def declared_size(request: HttpRequest) -> int:
    """The body's size as its ``Content-Length`` gives it (0 when absent or unreadable)."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def declared_over(request: HttpRequest, limit: int) -> int | None:
    """The declared size of a body too large for a file of ``limit`` bytes (and its framing), else None."""
    size = declared_size(request)
    return size if size > limit + MULTIPART_OVERHEAD else None


def _not_called(request: HttpRequest) -> HttpResponse:
    """The next handler and the view ``csrf_rejection``'s middleware is given: it only checks."""
    return HttpResponse()


def csrf_rejection(request: HttpRequest) -> HttpResponse | None:
    """Django's CSRF check (as ``csrf_protect``), for a view exempt from the middleware's: the
    403 response when it fails, else None. It reads the form: check the size first."""
    return CsrfViewMiddleware(_not_called).process_view(request, _not_called, (), {})


def size_checked(
    view: Callable[..., HttpResponse],
    refuse: Callable[[HttpRequest], HttpResponse | None],
    limit: Callable[[], int] | None = None,
) -> Callable[..., HttpResponse]:
    """``view`` with a POST first given to ``refuse(request)``, which answers one whose declared
    size is over its limit (``declared_over``) unread, and returns None for the others; Django's
    CSRF check runs after it (the returned view is exempt from the middleware's). ``limit``, when
    given, marks the view for ``asgi.UploadLimitMiddleware`` (``limit_uploads``)."""

    @csrf_exempt
    @wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            answer = refuse(request) or csrf_rejection(request)
            if answer is not None:
                return answer
        return view(request, *args, **kwargs)

    return checked if limit is None else limit_uploads(checked, limit)
