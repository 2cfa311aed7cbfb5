"""An ASGI middleware that keeps a search-by-photo upload over its limit from being received.

Django's ASGI handler receives a request's whole body (to a temporary file) before any Django
middleware or view runs, so the views' check of the ``Content-Length`` (uploads.py) came after a
body of any size had been taken in. Wrapped around the ASGI application, this middleware finds
the view a POST is for (``ROOT_URLCONF``; under ``i18n_patterns`` in its prefix's language); when
the view is marked with an upload limit (``uploads.limit_uploads``) the handler is given:

* an empty body, none of the client's read, when the ``Content-Length`` is over the limit (the
  view refuses it by that header, as under WSGI) or absent (Django then parses no form either);
* else the body up to its ``Content-Length`` and no further, as a WSGI server gives it.

Every other request passes through untouched. Install it in the site's ``asgi.py``::

    application = UploadLimitMiddleware(get_asgi_application())
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.urls import Resolver404, get_resolver
from django.utils import translation

from .uploads import body_limit

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

#: Methods whose requests carry no form to limit.
BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class UploadLimitMiddleware:
    """``app`` with the bodies of uploads to the views marked by ``uploads.limit_uploads`` bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        limit = None
        if scope["type"] == "http" and scope["method"] not in BODILESS:
            limit = view_limit(path_info(scope))
        if limit is None:
            return await self.app(scope, receive, send)
        declared = content_length(scope)
        if not declared or declared > limit:
            return await self.app(scope, BoundedBody(receive, 0), send)
        return await self.app(scope, BoundedBody(receive, declared), send)


def path_info(scope: MutableMapping[str, Any]) -> str:
    """The path Django resolves: the scope's, without the script prefix (as ``ASGIRequest``)."""
    prefix = settings.FORCE_SCRIPT_NAME or scope.get("root_path") or ""
    return str(scope["path"]).removeprefix(prefix) or "/"


def view_limit(path: str) -> int | None:
    """The body limit of the view ``path`` resolves to in ``ROOT_URLCONF`` (None: unmarked, or none).

    A path under ``i18n_patterns`` in another language resolves only with that language active
    (``/fr/...``: French), as ``LocaleMiddleware`` makes it before the view is found: such a path is
    resolved again so."""
    try:
        match = get_resolver().resolve(path)
    except Resolver404:
        language = translation.get_language_from_path(path)
        if not language:
            return None
        try:
            with translation.override(language):
                match = get_resolver().resolve(path)
        except Resolver404:
            return None
    return body_limit(match.func)


def content_length(scope: MutableMapping[str, Any]) -> int | None:
    """The request's ``Content-Length`` (None when absent or not a plain number)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BoundedBody:
    """A ``receive`` that gives the handler at most ``size`` bytes of body, then its end. The
    client's body is read no further: a later call (Django's wait for a disconnect) passes on
    what the server sends once the whole body was read, and otherwise waits until cancelled."""

    def __init__(self, receive: Receive, size: int) -> None:
        self.receive, self.left = receive, size
        self.ended = self.complete = False

    async def __call__(self) -> Message:
        if self.ended:
            if self.complete:
                return await self.receive()
            await asyncio.Event().wait()  # cancelled when the response is sent
        if self.left <= 0:
            self.ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        message = await self.receive()
        if message["type"] != "http.request":
            return message  # http.disconnect: Django stops
        body = bytes(message.get("body", b""))[: self.left]
        self.left -= len(body)
        more = bool(message.get("more_body", False))
        self.complete = not more
        if self.left <= 0 or not more:
            self.ended = True
        return {"type": "http.request", "body": body, "more_body": more and self.left > 0}
