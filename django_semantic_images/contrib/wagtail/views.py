"""Wagtail's Images listing and image chooser, with their search boxes ranking by meaning.

The views are Wagtail's own, with one method each overridden: the listing's
``search_queryset`` and the chooser's search filter. They serve Wagtail's URLs
(``wagtail_hooks`` puts them ahead of Wagtail's patterns), so every link and
template stays as it is.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.template import TemplateDoesNotExist
from django.template.loader import get_template
from django.utils.functional import cached_property
from django.utils.translation import gettext as _
from wagtail.admin.forms.choosers import SearchFilterMixin
from wagtail.images import get_image_model
from wagtail.images.views.chooser import (
    ImageChooseResultsView,
    ImageChooserViewSet,
    ImageChooseView,
    ImageChosenView,
    ImageSelectFormatView,
)
from wagtail.images.views.images import IndexView
from wagtail.search.backends.base import FilterFieldError

from ...encoders.base import ENCODER_UNAVAILABLE
from ...fields import embedding_path
from ...query import read_as_search
from ...words import search_words, spellings, too_long, unreadable_note
from .permissions import image_permission_policy
from .photo_search import PhotoSearchMixin
from .renditions import guard_renditions
from .search import (
    DEFAULT_LIMIT,
    KEYWORD_FIELDS,
    MAX_SEARCH_WORDS,
    RankedResults,
    by_key,
    encode_words,
    keyword_matches,
    keyword_search,
    rank_by_meaning,
    ranked_results,
    search_terms,
    start_encoding,
)

#: Wagtail's grid/list switch of the Images listing (not in Wagtail 7.0).
logger = logging.getLogger(__name__)


def encoder_failed(where: str) -> str:
    """Log why ``where``'s search by meaning could not load its encoder (a text model or weights
    missing: it was a 500); the note shown above the keyword matches listed instead."""
    logger.exception("The search by meaning of %s could not load its encoder", where)
    return _(
        "Search by meaning is unavailable now (the encoder could not be loaded; the server log says why), "
        "so only images whose title or tags match every word are listed."
    )


LAYOUT_TOGGLE_TEMPLATE = "wagtailimages/images/layout_toggle_button.html"


def bad_search(request: HttpRequest) -> HttpResponse | None:
    """A 400 naming the parameter for search words longer than ``MAX_QUERY_LENGTH`` (as the APIs
    refuse them; Wagtail's search backend nests one condition per word, and a few hundred words
    exhaust Python's recursion limit), for words in more than ``MAX_SEARCH_WORDS`` terms that go
    to Wagtail's own search, which ranks by relevance (250 terms were a RecursionError): words the
    text model cannot read, or any while the encoder cannot load (``matched_as_keywords``), or for
    a ``?tag=`` holding a NUL character (the chooser filters by it as given; PostgreSQL refuses
    it). None when the request is fine."""
    refused = too_long("q", request.GET.getlist("q"))
    if refused:
        return HttpResponseBadRequest(refused)
    words = request.GET.get("q", "")
    if search_terms(words) > MAX_SEARCH_WORDS and matched_as_keywords(get_image_model(), words):
        message = _("%(name)s: more than %(limit)d words to match as keywords.")
        return HttpResponseBadRequest(message % {"name": "q", "limit": MAX_SEARCH_WORDS})
    if any("\x00" in tag for tag in request.GET.getlist("tag")):
        return HttpResponseBadRequest("tag: a tag cannot contain NUL characters.")
    return None


def begin_search(request: HttpRequest) -> HttpResponse | None:
    """``bad_search``'s 400, or None after starting to encode the request's search words
    (``start_encoding``: they are encoded while Wagtail's view reads its collections and forms)."""
    refused = bad_search(request)
    if refused is None:
        start_encoding(get_image_model(), request.GET.get("q", ""))
    return refused


def matched_as_keywords(model: type, words: str) -> bool:
    """Whether the search boxes give ``words`` to Wagtail's own keyword search: the text model
    cannot read them, or the encoder cannot load (it is loaded and the words encoded here, into
    the encoder's cache, which the search then takes them from)."""
    words = search_words(words)  # as the search boxes read them (the encoder's cache key)
    try:
        return not reads(model, words) or encode_words(model, words).result() is None
    except ENCODER_UNAVAILABLE:
        return True


def reads(model: type, words: str) -> bool:
    """Whether the images' text model can read ``words`` (``Encoder.reads``); if not, the search
    boxes fall back to Wagtail's keyword search."""
    return embedding_path(model).field.get_encoder().reads(words)


class SemanticImageIndexView(PhotoSearchMixin, IndexView):
    """The Images listing: the search box lists the images whose title, description or tags hold
    every word first, then the nearest by meaning; collection and tag filters, sorting and
    pagination work as before. A photo posted to it ranks it by likeness (``PhotoSearchMixin``)."""

    #: How many images a search lists besides the keyword matches.
    semantic_search_results = DEFAULT_LIMIT
    #: Why the search words were matched as keywords (a script the text model cannot read).
    semantic_note: str | None = None

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return begin_search(request) or super().get(request, *args, **kwargs)

    def decorate_paginated_queryset(self, object_list: Any) -> Any:
        """Wagtail's, with each image whose file cannot be read drawn as a missing one (a 500 before)."""
        object_list = super().decorate_paginated_queryset(object_list)
        guard_renditions(object_list)
        return object_list

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["semantic_note"] = self.semantic_note
        context["layout_toggle_template"] = layout_toggle_template()
        return context

    @cached_property
    def search_query(self) -> str:
        """Wagtail's search words, read as the APIs read them (``search_words``: composed
        Unicode, NUL and zero-width characters as spaces; blank words are no search)."""
        return search_words(super().search_query)

    @cached_property
    def is_explicitly_ordered(self) -> bool:
        """Whether the editor chose a sort order. The header's search form submits its sort field
        with every search, so only a non-blank choice counts (Wagtail counts any ``ordering``);
        the field's blank "Best match" choice, the default, keeps the ranking. So does an order
        Wagtail does not apply (by usage count while searching, an unknown one): it would sort
        by its default instead."""
        return self.request.GET.get("ordering", "") in self.get_valid_orderings()

    def search_queryset(self, queryset: QuerySet) -> QuerySet:
        if not self.is_searching:
            return queryset
        try:
            readable = reads(queryset.model, self.search_query)
        except ENCODER_UNAVAILABLE:
            self.semantic_note = encoder_failed("Wagtail's image listing")
            return self.keyword_queryset(queryset)
        if not readable:
            # A script the text model cannot read: Wagtail's own keyword search, and a note shown
            # above the results (not a message: typing in the search box fetches the results
            # alone, which show no messages; the message waited for the next page).
            self.semantic_note = unreadable_note(self.search_query, KEYWORD_FIELDS)
            return self.keyword_queryset(queryset)
        limit = self.semantic_search_results
        vector = encode_words(queryset.model, self.search_query)  # encoded while the keyword query runs
        keyword = keyword_matches(queryset, self.search_query, backend=self.search_backend_name, limit=limit)
        try:
            found = vector.result()
        except ENCODER_UNAVAILABLE:
            self.semantic_note = encoder_failed("Wagtail's image listing")
            return self.keyword_queryset(queryset)
        return rank_by_meaning(
            queryset,
            self.search_query,
            keyword=keyword,
            limit=limit,
            keep_order=self.is_explicitly_ordered,
            vector=found,
        )

    def keyword_queryset(self, queryset: QuerySet) -> QuerySet:
        """Wagtail's own keyword search, on SEARCH_DATABASE where it applies (as the ranked search).
        Words that decompose are searched in either form (``spellings``), by key, in the listing's
        order: Wagtail's search of the words read composed missed a title stored decomposed."""
        if len(spellings(self.search_query)) > 1:
            return keyword_search(
                queryset, self.search_query, backend=self.search_backend_name, autocomplete=True, operator=None
            )
        try:
            return super().search_queryset(read_as_search(queryset))
        except (FilterFieldError, AttributeError):
            # A filter Wagtail's search cannot apply (the usage count's annotation): its search
            # over all the images, kept to these rows, in the listing's order.
            return keyword_search(queryset, self.search_query, backend=self.search_backend_name)


class SemanticSearchFilterMixin(SearchFilterMixin):
    """The chooser's search field, ranking by meaning (it takes the place of Wagtail's).

    A search gives the paginator the ranked keys (``RankedResults``): it knows their count
    without a query, and reads the page by key."""

    semantic_search_results = DEFAULT_LIMIT
    #: Why the search words were matched as keywords (a script the text model cannot read).
    semantic_note: str | None = None

    def filter(self, objects: QuerySet) -> QuerySet | RankedResults:
        # Read as the APIs read words (``search_words``), Wagtail's own search included.
        words = self.cleaned_data["q"] = search_words(self.cleaned_data.get("q") or "")
        if not words:
            return super().filter(objects)
        # The filters after Wagtail's search field (the base form's), without its search.
        try:
            readable = reads(objects.model, words)
        except ENCODER_UNAVAILABLE:
            self.semantic_note = encoder_failed("Wagtail's image chooser")
            return self.keyword_filter(objects)
        if not readable:  # a script the text model cannot read: Wagtail's search
            self.semantic_note = unreadable_note(words, KEYWORD_FIELDS)  # shown with the results
            return self.keyword_filter(objects)
        unsearched = objects
        objects = super(SearchFilterMixin, self).filter(objects)
        self.is_searching = True
        self.search_query = words
        limit = self.semantic_search_results
        vector = encode_words(objects.model, words)  # encoded while the keyword query runs
        keyword = keyword_matches(objects, words, limit=limit)
        try:
            found = vector.result()
        except ENCODER_UNAVAILABLE:
            self.semantic_note = encoder_failed("Wagtail's image chooser")
            return self.keyword_filter(unsearched)
        return ranked_results(objects, found, keyword=keyword, limit=limit)

    def keyword_filter(self, objects: QuerySet) -> QuerySet:
        """Wagtail's own search, on SEARCH_DATABASE where it applies (as the ranked search). Words
        that decompose are searched in either form (``spellings``), by key, in the chooser's order."""
        words = self.cleaned_data["q"]
        if len(spellings(words)) > 1:
            objects = super(SearchFilterMixin, self).filter(objects)  # the other filters, without its search
            self.is_searching = True
            self.search_query = words
            return keyword_search(objects, words, autocomplete=True, operator=None)
        try:
            return super().filter(read_as_search(objects))
        except FilterFieldError:  # the chooser's ?tag= (tags by name), which Wagtail's search cannot filter by
            return super().filter(read_as_search(by_key(objects)))


_form_classes: dict[tuple[str, tuple[type, ...]], type] = {}


class SemanticChooserMixin:
    """Wagtail's chooser view with ``SemanticSearchFilterMixin`` in its filter form."""

    results_template_name = "semantic_images_wagtail/chooser/results.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return begin_search(request) or super().get(request, *args, **kwargs)  # type: ignore[misc]

    def get_results_page(self, request: HttpRequest) -> Any:
        """Wagtail's page of results, each image whose file cannot be read drawn as a missing one
        (a 500 for the modal before)."""
        page = super().get_results_page(request)  # type: ignore[misc]
        guard_renditions(page)
        return page

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)  # type: ignore[misc]
        context["semantic_note"] = getattr(getattr(self, "filter_form", None), "semantic_note", None)
        return context

    def get_filter_form_class(self) -> type:
        form_class = super().get_filter_form_class()  # type: ignore[misc]
        bases = tuple(SemanticSearchFilterMixin if base is SearchFilterMixin else base for base in form_class.__bases__)
        key = (form_class.__name__, bases)
        if key not in _form_classes:  # Wagtail makes the class per request from its bases: one each here
            _form_classes[key] = type(form_class.__name__, bases, {})
        return _form_classes[key]


@functools.cache
def layout_toggle_template() -> str:
    """Wagtail's grid/list switch of the Images listing (Wagtail 7.1 and later), or "" (7.0 has none)."""
    try:
        get_template(LAYOUT_TOGGLE_TEMPLATE)
    except TemplateDoesNotExist:
        return ""
    return LAYOUT_TOGGLE_TEMPLATE


class SemanticImageChooseView(SemanticChooserMixin, ImageChooseView):
    pass


class SemanticImageChooseResultsView(SemanticChooserMixin, ImageChooseResultsView):
    pass


class HiddenAsMissingMixin:
    """An image the editor may not choose (a hidden collection's) answers as a missing one: Wagtail's
    permission-denied redirect told which ids exist in collections the editor cannot see."""

    def get_object(self, pk: Any) -> Any:
        try:
            image = super().get_object(pk)  # type: ignore[misc]
        except PermissionDenied:
            raise Http404 from None
        guard_renditions([image])  # a file cut short or corrupt: its preview drawn as not found, not a 500
        return image


class SemanticImageChosenView(HiddenAsMissingMixin, ImageChosenView):
    pass


#: Whether Wagtail's "select format" step checks that the editor may choose the image (its
#: ``get_object``, Wagtail 7.1+); Wagtail 7.0's checks nothing.
WAGTAIL_CHECKS_SELECT_FORMAT = hasattr(ImageSelectFormatView, "get_object")


class SemanticImageSelectFormatView(HiddenAsMissingMixin, ImageSelectFormatView):
    """On Wagtail 7.0, whose view checked no permission (any editor read any image's title, preview
    and HTML by its id), an image the editor may not choose answers as a missing one here too."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not WAGTAIL_CHECKS_SELECT_FORMAT:
            image = get_object_or_404(get_image_model(), id=kwargs.get("image_id"))
            if not image_permission_policy().user_has_permission_for_instance(request.user, "choose", image):
                raise Http404
        return super().dispatch(request, *args, **kwargs)


class SemanticImageChooserViewSet(ImageChooserViewSet):
    choose_view_class = SemanticImageChooseView
    choose_results_view_class = SemanticImageChooseResultsView
    chosen_view_class = SemanticImageChosenView
    select_format_view_class = SemanticImageSelectFormatView


def chooser_viewset() -> SemanticImageChooserViewSet:
    """A viewset whose views are configured like Wagtail's image chooser (same URL names)."""
    return SemanticImageChooserViewSet("wagtailimages_chooser", model=get_image_model(), url_prefix="images/chooser")
