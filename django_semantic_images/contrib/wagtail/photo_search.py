"""Search Wagtail's Images listing by photo: an editor uploads (or drops) a picture and the
listing shows the images that look most like it.

Nothing is saved: the upload is read with the project's limits (``query_image``), encoded, and
only its visual vector (float16) and a small thumbnail are kept in the editor's own session,
under a token. The listing then carries ``?photo=<token>`` like any other filter, so the
collection filter, the sort order, the layout switch and pagination keep the ranking, and
everything starts from the queryset Wagtail's ``IndexView`` built for that editor (collection
permissions hold). A token the session does not hold (expired, or someone else's) ranks nothing.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from django import forms
from django.contrib.sessions.backends.base import SessionBase
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.utils.datastructures import MultiValueDict
from django.utils.functional import cached_property
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.csrf import csrf_exempt

from ...bidi import name_in_sentence
from ...conf import semantic_settings
from ...encoders.base import ENCODER_UNAVAILABLE
from ...expressions import Score, VisualDistance
from ...fields import embedding_path
from ...imaging import ImageDecodeError, preview_data_url, query_image
from ...query import similar_to
from ...uploads import csrf_rejection, declared_over, limit_uploads
from .search import DEFAULT_LIMIT

logger = logging.getLogger(__name__)

#: The query-string parameter that names a stored photo query.
PHOTO_VAR = "photo"
#: The upload's form field.
PHOTO_FIELD = "photo"
SESSION_KEY = "semantic_images_wagtail:photo_queries"
#: How many uploaded query photos a session remembers.
MAX_STORED_PHOTOS = 5
#: Parameters a new photo search drops from the listing's query string.
RESET_VARS = (PHOTO_VAR, "q", "p")


class PhotoSearchForm(forms.Form):
    """The listing's upload: one picture."""

    photo = forms.FileField(
        label=gettext_lazy("Find images like a photo"),
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
        error_messages={
            "required": gettext_lazy("Choose a photo to search with."),
            "empty": gettext_lazy("The photo is an empty file."),
        },
    )


@dataclass
class PhotoQuery:
    """A stored photo search."""

    token: str
    vector: list[float]
    name: str
    thumbnail: str


def store_photo_query(session: SessionBase, vector: Any, *, name: str, thumbnail: str) -> str:
    """Keep a photo's visual vector (float16) in ``session``; returns its token."""
    token = secrets.token_urlsafe(8)
    stored: dict[str, Any] = dict(session.get(SESSION_KEY, {}))
    packed = base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")
    stored[token] = {"vector": packed, "name": name, "thumbnail": thumbnail}
    for old in list(stored)[:-MAX_STORED_PHOTOS]:
        del stored[old]
    session[SESSION_KEY] = stored
    return token


def load_photo_query(session: SessionBase, token: str, dimensions: int | None = None) -> PhotoQuery | None:
    """The photo search stored under ``token`` in ``session``, or None (also when its vector has
    not ``dimensions`` values: made before the images' encoder changed, it cannot be compared)."""
    entry = session.get(SESSION_KEY, {}).get(token)
    if not entry:
        return None
    vector = np.frombuffer(base64.b64decode(entry["vector"]), dtype=np.float16).astype(np.float32)
    if dimensions is not None and len(vector) != dimensions:
        return None
    return PhotoQuery(token=token, vector=vector.tolist(), name=entry["name"], thumbnail=entry["thumbnail"])


def rank_by_likeness(queryset: QuerySet, vector: list[float], *, limit: int, keep_order: bool = False) -> QuerySet:
    """``queryset``'s ``limit`` images that look most like ``vector`` (a visual vector), nearest
    first, annotated with ``distance`` and ``score``; with ``keep_order`` in ``queryset``'s order."""
    path = embedding_path(queryset.model)
    plain = queryset.order_by().select_related(None).prefetch_related(None)
    nearest = list(similar_to(plain, vector, field=path.name).values_list("pk", flat=True)[:limit])
    ranked = queryset.filter(pk__in=nearest).annotate(distance=VisualDistance(path.name, vector))
    ranked = ranked.annotate(score=Score("distance"))
    return ranked if keep_order else ranked.order_by(F("distance").asc(nulls_last=True), "-pk")


class PhotoSearchMixin:
    """For a subclass of Wagtail's images ``IndexView``: POST a photo to the listing's URL (with
    the listing's query string) to rank the listing by likeness to it.

    A valid photo redirects (303) to the listing with ``?photo=<token>``; a bad one (no file,
    not an image, corrupt, over ``MAX_UPLOAD_BYTES`` / ``MAX_IMAGE_PIXELS``) renders the listing
    again with the form's error, status 400. Nothing is stored but the session's entry. A request
    whose ``Content-Length`` is already too large for ``MAX_UPLOAD_BYTES`` gets the listing with
    the error, status 413, before anything reads its body: the view is exempt from Django's CSRF
    middleware, whose check reads the whole form, and runs that check itself after the size's
    (``uploads.csrf_rejection``).
    """

    request: HttpRequest
    template_name = "semantic_images_wagtail/images/index.html"
    results_template_name = "semantic_images_wagtail/images/index_results.html"
    #: How many images a photo search lists.
    photo_search_results = DEFAULT_LIMIT
    photo_form: PhotoSearchForm | None = None

    #: The declared size of a POST too large for ``MAX_UPLOAD_BYTES`` (None: within it).
    oversized: int | None = None

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        """The view, exempt from Django's CSRF middleware: ``dispatch`` runs the same check, after
        the upload's size; marked with ``MAX_UPLOAD_BYTES`` for ``asgi.UploadLimitMiddleware``."""
        view = csrf_exempt(super().as_view(**initkwargs))  # type: ignore[misc]
        return limit_uploads(view, lambda: int(semantic_settings.MAX_UPLOAD_BYTES))

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            self.oversized = declared_over(request, int(semantic_settings.MAX_UPLOAD_BYTES))
            rejected = None if self.oversized is not None else csrf_rejection(request)
            if rejected is not None:
                return rejected
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if self.oversized is not None:  # its body is not read (nor CSRF-checked, which reads it)
            return self.refuse_oversized(request, *args, **kwargs)
        form = PhotoSearchForm(request.POST, request.FILES)
        if form.is_valid():
            upload = form.cleaned_data[PHOTO_FIELD]
            try:
                image = query_image(upload)
            except ImageDecodeError as exc:
                text = _("Cannot search by “%(name)s”: %(reason)s")
                message = name_in_sentence(text, {"name": upload.name}, {"reason": exc})
                form.add_error(PHOTO_FIELD, message)
            else:
                encoder = embedding_path(self.model).field.get_encoder()  # type: ignore[attr-defined]
                try:
                    vector = encoder.encode_visual([image])[0]
                except ENCODER_UNAVAILABLE:
                    return self.refuse_unavailable(request, *args, **kwargs)
                token = store_photo_query(request.session, vector, name=upload.name, thumbnail=preview_data_url(image))
                params = self.kept_params()
                params[PHOTO_VAR] = token
                return HttpResponseRedirect(f"{self.index_url}?{params.urlencode()}", status=303)  # type: ignore[attr-defined]
        self.photo_form = form
        response = self.get(request, *args, **kwargs)  # type: ignore[attr-defined]
        response.status_code = 400
        return response

    def refuse_oversized(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The listing with the form's error naming the limit, status 413. The request's form is
        set empty first, so that nothing rendering the listing reads the body (Wagtail 7.0's bulk
        actions bar looks for ``next`` in ``request.POST``: the whole upload was parsed)."""
        request._post, request._files = QueryDict(), MultiValueDict()  # type: ignore[attr-defined]
        limit = int(semantic_settings.MAX_UPLOAD_BYTES)
        message = _("Cannot search by this photo: the upload is %(size)s bytes, over the limit of %(limit)s bytes.")
        text = message % {"size": f"{self.oversized:,}", "limit": f"{limit:,}"}
        return self.refuse(413, text, request, *args, **kwargs)

    def refuse_unavailable(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The listing with the form's error saying the search by photo is unavailable, status
        503, the reason logged: the encoder could not load (the CNN's weights or the text model
        missing; it was a 500). Searches by words go on where the text model loads."""
        logger.exception("The search by photo of Wagtail's image listing could not load its encoder")
        message = _("Search by photo is unavailable now (the encoder could not be loaded; the server log says why).")
        return self.refuse(503, message, request, *args, **kwargs)

    def refuse(self, status: int, message: str, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The listing, unranked, with ``message`` as the photo form's error, status ``status``."""
        form = PhotoSearchForm(data={})
        form.errors[PHOTO_FIELD] = form.error_class([message])
        self.photo_form = form
        response = self.get(request, *args, **kwargs)  # type: ignore[attr-defined]
        response.status_code = status
        return response

    def kept_params(self) -> QueryDict:
        """The listing's query string without a search, a page or a photo."""
        params = self.request.GET.copy()
        for var in RESET_VARS:
            params.pop(var, None)
        return params

    @cached_property
    def photo_token(self) -> str:
        return self.request.GET.get(PHOTO_VAR, "")

    @cached_property
    def stored_photo(self) -> PhotoQuery | None:
        """The photo the session holds under the listing's token, also while a word search is on
        (the header's form carries it on, for when the words are cleared); None without one."""
        if not self.photo_token:
            return None
        field = embedding_path(self.model).field  # type: ignore[attr-defined]
        dimensions = field.model._meta.get_field(field.visual_field).dimensions  # type: ignore[union-attr]
        return load_photo_query(self.request.session, self.photo_token, dimensions)

    @cached_property
    def photo_query(self) -> PhotoQuery | None:
        """The photo the listing is ranked by (None without one, or when a word search is on)."""
        return None if self.is_searching else self.stored_photo  # type: ignore[attr-defined]

    def get_queryset(self) -> QuerySet:
        """The listing's queryset (permissions, filters, order), ranked by the photo if any."""
        queryset = super().get_queryset()  # type: ignore[misc]
        if self.photo_query is None:
            return queryset
        return rank_by_likeness(
            queryset,
            self.photo_query.vector,
            limit=self.photo_search_results,
            keep_order=self.is_explicitly_ordered,  # type: ignore[attr-defined]
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)  # type: ignore[misc]
        kept = self.kept_params()
        listing_url = f"{self.index_url}?{kept.urlencode()}" if kept else self.index_url  # type: ignore[attr-defined]
        context.update(
            photo_form=self.photo_form or PhotoSearchForm(),
            photo_query=self.photo_query,
            kept_photo=self.stored_photo,
            photo_expired=bool(self.photo_token) and self.photo_query is None and not self.is_searching,  # type: ignore[attr-defined]
            # The form posts to the listing as it is; "clear" goes back to it without the photo.
            photo_search_url=listing_url,
        )
        return context
