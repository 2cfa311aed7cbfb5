"""The search-by-photo view: an uploaded picture becomes a visual ranking of the changelist."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django import forms
from django.contrib import messages
from django.contrib.admin.views.main import PAGE_VAR, SEARCH_VAR
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect, QueryDict
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..bidi import name_in_sentence
from ..encoders.base import ENCODER_UNAVAILABLE
from ..imaging import ImageDecodeError, preview_data_url, query_image
from ..uploads import declared_over
from .ranking import PHOTO_VAR, RANKING_VARS, field_key, store_photo_query

if TYPE_CHECKING:
    from .options import SemanticSearchAdminMixin

logger = logging.getLogger(__name__)


class PhotoSearchForm(forms.Form):
    """The small form on the changelist: one picture, plus the filters to keep."""

    photo = forms.FileField(
        label=gettext_lazy("Search by photo"),
        widget=forms.ClearableFileInput(attrs={"accept": "image/*"}),
        error_messages={"required": gettext_lazy("Choose a photo to search with.")},
    )
    filters = forms.CharField(required=False, widget=forms.HiddenInput)


def kept_filters(query_string: str) -> QueryDict:
    """The changelist's filters from ``query_string``, without any previous search or page."""
    params = QueryDict(query_string.lstrip("?"), mutable=True)
    for var in (*RANKING_VARS, SEARCH_VAR, PAGE_VAR):
        params.pop(var, None)
    return params


def refuse_oversized(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponseRedirect | None:
    """The changelist with an error message naming the limit, for a POST whose ``Content-Length``
    is too large for a photo of ``search_by_photo_max_bytes``: sent before anything reads the body
    (nor its kept filters); None for any other request."""
    limit = int(model_admin.search_by_photo_max_bytes)
    declared = declared_over(request, limit)
    if declared is None:
        return None
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    message = _("Cannot search by this photo: the upload is %(size)s bytes, over the limit of %(limit)s bytes.")
    size, most = (number_format(n, force_grouping=True) for n in (declared, limit))  # 21,000 / 21 000
    messages.error(request, message % {"size": size, "limit": most})
    return HttpResponseRedirect(model_admin.changelist_url())


def search_by_photo(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponseRedirect:
    """POST a picture; redirect to the changelist ranked by likeness to it.

    Bad input (no file, not an image, too big) ends on the changelist with an error
    message and the filters the editor had; nothing is stored.
    """
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    changelist = model_admin.changelist_url()
    if request.method != "POST":
        return HttpResponseRedirect(changelist)
    form = PhotoSearchForm(request.POST, request.FILES)
    params = kept_filters(request.POST.get("filters", ""))
    back = HttpResponseRedirect(changelist + ("?" + params.urlencode() if params else ""))
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, str(error))
        return back
    upload = form.cleaned_data["photo"]
    try:
        image = query_image(upload, max_bytes=model_admin.search_by_photo_max_bytes)
    except ImageDecodeError as exc:
        text = _("Cannot search by “%(name)s”: %(reason)s")
        messages.error(request, name_in_sentence(text, {"name": upload.name}, {"reason": exc}))
        return back
    field = model_admin.get_embedding_field()
    try:
        vector = field.get_encoder().encode_visual([image])[0]
    except ENCODER_UNAVAILABLE:
        logger.exception("The search by photo of %s could not load its encoder", model_admin.model._meta.label)
        messages.error(
            request, _("Search by photo is unavailable now (the encoder could not be loaded; the server log says why).")
        )
        return back
    token = store_photo_query(
        request, vector, thumbnail=preview_data_url(image), name=upload.name, made_for=field_key(field)
    )
    params[PHOTO_VAR] = token
    return HttpResponseRedirect(changelist + "?" + params.urlencode())
