"""``SemanticSearchAdminMixin`` and the ready ``SemanticImageAdmin``.

The search box ranks rows by meaning; ``?similar_to=<pk>`` and ``?photo=<token>``
rank them by likeness to a picture. Ranking happens in ``get_search_results``,
after the list filters and on ``get_queryset(request)``, so permissions, filters,
pagination and actions work as in any changelist.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.views.main import ORDER_VAR, SEARCH_VAR
from django.core import checks
from django.core.exceptions import BadRequest, PermissionDenied
from django.db.models import BooleanField, Case, F, FloatField, Q, QuerySet, Value, When
from django.db.models.expressions import ExpressionWrapper
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, QueryDict
from django.urls import URLPattern, path, reverse
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import thumbnails, uploads
from ..bidi import name_in_sentence
from ..checks import photo_search_session_check
from ..encoders.base import ENCODER_UNAVAILABLE
from ..expressions import SemanticDistance, VisualDistance
from ..fields import EmbeddingStatus, ImageEmbeddingField, embedding_fields, get_embedding_field
from ..hnsw import hnsw_settings
from ..keys import well_formed_keys
from ..query import keyword_matches, read_as_search, search_words, too_long, unreadable_note
from . import display, duplicates, saving
from .actions import reembed_selected
from .changelist import COLUMN_SORT_ATTR, SEARCH_HELP, SemanticChangeList
from .filters import EmbeddingStatusFilter
from .ranking import PHOTO_VAR, SIMILAR_VAR, VisualRanking, field_key, load_photo_query
from .views import PhotoSearchForm, kept_filters, refuse_oversized, search_by_photo

logger = logging.getLogger(__name__)

#: Names of the read-only change-form entries the mixin adds.
DETAILS = "embedding_details"
SUGGESTIONS = "embedding_suggestions"
#: The request attribute that carries the visual ranking from changelist_view to get_search_results.
RANKING_ATTR = "_semantic_visual_ranking"
#: Where ``render_change_form`` leaves, on the row, the id of the input the label buttons fill.
SUGGESTIONS_TARGET_ATTR = "_semantic_suggestions_target"
#: The parameter of Django's autocomplete view (``autocomplete_fields``) that carries the search words.
AUTOCOMPLETE_VAR = "term"


def top_pks(queryset: QuerySet, distance: Any, column: str, limit: int, field: ImageEmbeddingField) -> list[Any]:
    """Primary keys of the ``limit`` nearest rows, through the HNSW index (``ORDER BY distance LIMIT n``)."""
    ranked = (
        queryset.filter(**{f"{column}__isnull": False})
        .annotate(_distance=distance)
        .order_by("_distance", "pk")  # ties by key: the same rows at the limit every time
        .values_list("pk", flat=True)[:limit]
    )
    # Inside the request's transaction (ATOMIC_REQUESTS), the settings get their values back after.
    with hnsw_settings(queryset.db, field=field):
        return list(ranked)


if TYPE_CHECKING:  # the mixin is only ever combined with a ModelAdmin
    _AdminBase = admin.ModelAdmin
else:
    _AdminBase = object


class SemanticSearchAdminMixin(_AdminBase):
    """Add to a ``ModelAdmin`` of a model with an ``ImageEmbeddingField``.

    The changelist's search box ranks by meaning; rows that the ordinary
    ``search_fields`` match (Django's usual search: every word found in some field)
    are listed first, then the nearest rows by meaning. Clicking a column header
    sorts the same rows by that column instead.
    """

    #: Which ``ImageEmbeddingField`` to use when the model has several.
    embedding_field: str | None = None
    #: How many rows a search by words lists (besides the ordinary search matches).
    semantic_search_results: int = 100
    #: How many rows "similar images" and search by photo list.
    similar_images_results: int = 50
    #: Largest photo the search-by-photo form accepts, in bytes.
    search_by_photo_max_bytes: int = 20 * 1024 * 1024
    #: The form field that label suggestions fill in (None: show labels without buttons).
    suggestions_field: str | None = "alt_text"
    #: Labels below this probability are not suggested.
    suggestion_min_probability: float = 0.1
    change_list_template = "admin/semantic_images/change_list.html"
    #: The "Duplicates" page (docs/duplicates.md): groups per page, the date column (None: the
    #: model's first date or date-time field) and the templates.
    duplicate_groups_per_page: int = 20
    duplicate_date_field: str | None = None
    duplicates_template = "admin/semantic_images/duplicates.html"
    duplicates_confirm_template = "admin/semantic_images/duplicates_confirm.html"
    search_help_text = SEARCH_HELP  # without search_fields, no ordinary matches: "Ranks images by meaning."

    # -- helpers -------------------------------------------------------------
    def get_embedding_field(self) -> ImageEmbeddingField:
        return get_embedding_field(self.model, self.embedding_field)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        try:
            self.get_embedding_field()
        except LookupError as exc:
            errors.append(
                checks.Error(
                    f"{type(self).__name__} searches by meaning, but {exc}",
                    hint="Declare an ImageEmbeddingField on the model, or name it with `embedding_field`.",
                    obj=type(self),
                    id="semantic_images.E101",
                )
            )
        return errors + photo_search_session_check(f"{type(self).__name__}'s search by photo", obj=type(self))

    def changelist_url(self) -> str:
        opts = self.model._meta
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist", current_app=self.admin_site.name)

    @property
    def media(self) -> forms.Media:
        return super().media + forms.Media(
            css={"all": ["semantic_images/admin/semantic_admin.css"]},
            js=["semantic_images/admin/suggestions.js"],
        )

    # -- urls and views ------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        return [
            path(
                "search-by-photo/",
                # An upload over the limit is refused before Django's CSRF check reads it (uploads.py).
                self.admin_site.admin_view(
                    uploads.size_checked(
                        self.search_by_photo_view,
                        self.refuse_oversized_photo,
                        lambda: int(self.search_by_photo_max_bytes),
                    )
                ),
                name=f"{opts.app_label}_{opts.model_name}_search_by_photo",
            ),
            path(
                "duplicates/",
                self.admin_site.admin_view(self.duplicates_view),
                name=f"{opts.app_label}_{opts.model_name}_duplicates",
            ),
            *super().get_urls(),
        ]

    def search_by_photo_view(self, request: HttpRequest) -> HttpResponse:
        return search_by_photo(self, request)

    def refuse_oversized_photo(self, request: HttpRequest) -> HttpResponse | None:
        """A search by photo whose body is too large for ``search_by_photo_max_bytes``, unread."""
        return refuse_oversized(self, request)

    def duplicates_view(self, request: HttpRequest) -> HttpResponse:
        return duplicates.duplicates_view(self, request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[SemanticChangeList]:
        return SemanticChangeList

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # Before the ranking's source row is looked up: its messages would name the row (or tell a
        # hidden one from a missing one) to a user who may not see the changelist at all.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        refused = too_long(SEARCH_VAR, request.GET.getlist(SEARCH_VAR))
        if refused:
            # As the APIs: Django's search of the search fields costs a condition per word and field.
            return HttpResponseBadRequest(refused)
        ranking = self.get_visual_ranking(request)
        setattr(request, RANKING_ATTR, ranking)
        opts = self.model._meta
        context = {
            "semantic_ranking": ranking,
            "photo_search_form": PhotoSearchForm(),
            "photo_search_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_search_by_photo", current_app=self.admin_site.name
            ),
            "ranking_clear_url": "?" + kept_filters(request.GET.urlencode()).urlencode(),
            "duplicates_url": duplicates.duplicates_url(self),
            **(extra_context or {}),
        }
        response = super().changelist_view(request, context)
        context_data = getattr(response, "context_data", None)
        cl = (context_data or {}).get("cl")
        if context_data is not None and cl is not None:  # a TemplateResponse, not yet rendered
            context_data["photo_search_filters"] = kept_filters(cl.get_query_string()).urlencode()
        return response

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """The admin's rows, each knowing whether it holds vectors (without loading them)."""
        field = self.get_embedding_field()
        return (
            super().get_queryset(request).annotate(**{display.vectors_annotation(field): display.vectors_stored(field)})
        )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Save; when the save asks for embedding, say after the commit what became of it."""
        field = self.get_embedding_field()
        updated_before = getattr(obj, field.column("updated_at"))
        super().save_model(request, obj, form, change)
        if saving.embedding_requested(obj, field, updated_before):
            saving.report_after_commit(self, request, obj, field)

    # -- ranking -------------------------------------------------------------
    def get_visual_ranking(self, request: HttpRequest) -> VisualRanking | None:
        """The picture the changelist is ranked by, from ``?photo=`` or ``?similar_to=``."""
        field = self.get_embedding_field()
        token = request.GET.get(PHOTO_VAR)
        if token:
            ranking = load_photo_query(request, token, made_for=field_key(field))
            if ranking is None:
                messages.warning(
                    request, _("That photo search has expired or was made for other images; upload the photo again.")
                )
                return VisualRanking(vector=None, kind="photo")
            return ranking
        pk = request.GET.get(SIMILAR_VAR)
        if not pk:
            return None
        # get_object() goes through get_queryset(request): a row the editor cannot see is not found.
        source = self.get_object(request, pk)
        if source is None:
            messages.warning(
                request, name_in_sentence(_("There is no image with ID “%(pk)s” that you can see."), {"pk": pk})
            )
            return VisualRanking(vector=None, kind="similar")
        vector = getattr(source, field.visual_field)
        status = getattr(source, field.column("status"))
        if vector is None and status == EmbeddingStatus.FAILED:  # waiting will not help: say why
            reason = getattr(source, field.column("error")) or _("no reason was recorded")
            messages.warning(
                request,
                name_in_sentence(_("“%(obj)s” could not be embedded: %(reason)s"), {"obj": source}, {"reason": reason}),
            )
            return VisualRanking(vector=None, kind="similar", source=source)
        if vector is None:
            messages.warning(
                request,
                name_in_sentence(
                    _("“%(obj)s” has no visual vector yet (status: %(status)s)."), {"obj": source}, {"status": status}
                ),
            )
            return VisualRanking(vector=None, kind="similar", source=source)
        # pgvector's Vector and HalfVector (what some pgvector-python versions read a vector or a
        # halfvec column as) are no sequences for numpy: their own to_numpy() gives the numbers.
        values = vector.to_numpy() if callable(getattr(vector, "to_numpy", None)) else vector
        return VisualRanking(vector=np.asarray(values, dtype=np.float32).tolist(), kind="similar", source=source)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # Reached past changelist_view's check: Django's autocomplete (``?term=``) or a site's view.
        var = AUTOCOMPLETE_VAR if request.GET.get(AUTOCOMPLETE_VAR) == search_term else SEARCH_VAR
        refused = too_long(var, [search_term])
        if refused:
            raise BadRequest(refused)
        # As the APIs read words: NUL and zero-width characters count as spaces (Django's search of
        # the search fields sent a NUL to PostgreSQL, which refuses it: the autocomplete's 500).
        search_term = search_words(search_term)
        field = self.get_embedding_field()
        # The rows listed need no vector values: parsing them costs ~0.8 ms a row (docs/admin.md).
        queryset = queryset.defer(field.visual_field, field.semantic_field)
        ranking: VisualRanking | None = getattr(request, RANKING_ATTR, None)
        if ranking is not None:
            if ranking.vector is None:
                return queryset.none(), False
            queryset = read_as_search(queryset)  # ranked and listed where the API's searches read
            candidates = queryset if ranking.source is None else queryset.exclude(pk=ranking.source.pk)
            self._note_waiting(request, queryset, field.visual_field)
            visual = VisualDistance(field.name, ranking.vector)
            pks = top_pks(candidates, visual, field.visual_field, self.similar_images_results, field)
            qs = self._annotate(queryset.filter(pk__in=pks), visual)
            return self._rank(request, qs, [F("distance").asc()]), False
        if not search_term:
            return super().get_search_results(request, queryset, search_term)
        queryset = read_as_search(queryset)  # a keyword fallback too: it is the search box's search
        try:
            readable = field.get_encoder().reads(search_term)
            vector = field.get_encoder().encode_text(search_term).tolist() if readable else None
        except ENCODER_UNAVAILABLE:
            logger.exception("The search by meaning of %s could not load its encoder", self.model._meta.label)
            text = _(
                "Search by meaning is unavailable now (the encoder could not be loaded; the server log "
                "says why), so only rows whose text matches every word are listed."
            )
            if var == SEARCH_VAR:  # the autocomplete's JSON shows no message: none waits for a later page
                messages.error(request, text)
            return self._keyword_results(request, queryset, search_term)
        if vector is None:
            # A script the text model cannot read: the search fields' matches (else the text
            # fields'), unranked, and a message that says so.
            names = [name.lstrip("^=@") for name in self.get_search_fields(request)] or list(field.text_fields)
            if var == SEARCH_VAR:
                messages.info(request, unreadable_note(search_term, names))
            return self._keyword_results(request, queryset, search_term)
        if var == SEARCH_VAR:
            self._note_waiting(request, queryset, field.semantic_field)
        distance = SemanticDistance(field.name, vector)
        pks = top_pks(queryset, distance, field.semantic_field, self.semantic_search_results, field)
        wanted = Q(pk__in=pks)
        exact = None
        if self.get_search_fields(request):
            matched, _duplicates = super().get_search_results(request, queryset, search_term)
            exact = Q(pk__in=matched.order_by().values("pk"))
            wanted |= exact
        qs = self._annotate(queryset.filter(wanted), distance)
        ordering = [F("distance").asc(nulls_last=True)]
        if exact is not None:
            qs = qs.annotate(
                search_match=Case(When(exact, then=Value(True)), default=Value(False), output_field=BooleanField())
            )
            ordering.insert(0, F("search_match").desc())
        return self._rank(request, qs, ordering), False

    def _note_waiting(self, request: HttpRequest, queryset: QuerySet, column: str) -> None:
        """Say how many of the listed rows (filters and ``get_queryset`` applied) no ranking can find
        yet: pending, without the vector ranked by (the status is indexed)."""
        status = self.get_embedding_field().column("status")
        waiting = queryset.filter(**{f"{column}__isnull": True, status: EmbeddingStatus.PENDING}).count()
        if waiting:
            text = ngettext(
                "%(count)d image is not embedded yet: searches by meaning and by likeness find it once it is.",
                "%(count)d images are not embedded yet: searches by meaning and by likeness find them once they are.",
                waiting,
            )
            messages.info(request, text % {"count": waiting})

    def _keyword_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """The search fields' matches (else the embedding field's text fields'), unranked."""
        if self.get_search_fields(request):
            return super().get_search_results(request, queryset, search_term)
        return keyword_matches(queryset, search_term, self.get_embedding_field().text_fields), False

    @staticmethod
    def _annotate(qs: QuerySet, distance: Any) -> QuerySet:
        return qs.annotate(distance=distance).annotate(
            score=ExpressionWrapper(Value(1.0) - F("distance"), output_field=FloatField())
        )

    @staticmethod
    def _rank(request: HttpRequest, qs: QuerySet, ordering: list[Any]) -> QuerySet:
        """Nearest first, unless the editor sorted by a column (an ``?o=`` naming none is ignored)."""
        sorted_by_column = getattr(request, COLUMN_SORT_ATTR, None)
        if sorted_by_column is None:  # not through SemanticChangeList (e.g. a site's own ChangeList)
            sorted_by_column = bool(request.GET.get(ORDER_VAR))
        if sorted_by_column:
            return qs
        return qs.order_by(*ordering, "-pk")

    # -- changelist columns --------------------------------------------------
    def get_list_display(self, request: HttpRequest) -> list[Any]:
        hidden = self._vector_columns()
        names = [name for name in super().get_list_display(request) if name not in hidden]
        if "similar_images" in names and type(self).similar_images is SemanticSearchAdminMixin.similar_images:
            return [self._similar_images_column(request) if name == "similar_images" else name for name in names]
        return names

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """Adds "re-embed" to the change list's actions. Django 6.1 also asks for the change form's
        actions (``action_location``); earlier versions never pass it."""
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg]  # Django 6.1
        on_change_list = getattr(action_location, "name", "CHANGE_LIST") == "CHANGE_LIST"
        if self.actions is None or IS_POPUP_VAR in request.GET or "reembed_selected" in actions or not on_change_list:
            return actions
        if self.has_change_permission(request):
            # A (func, name, description) tuple before Django 6.1, an Action object since (whose
            # indexing is deprecated): stored under its name, never unpacked.
            action = self.get_action(reembed_selected)
            if action is not None:
                actions[reembed_selected.__name__] = action
        return actions

    def response_action(
        self, request: HttpRequest, queryset: QuerySet, *args: Any, **kwargs: Any
    ) -> HttpResponse | None:
        """Django's, with the selected ids that no row can have left out (a forged ``abc`` on an
        integer key): Django filters by them as posted, a ``ValueError`` (a 500). Django 6.1 also
        passes ``action_location``."""
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        kept = well_formed_keys(self.model, selected)
        if len(kept) != len(selected):
            post = request.POST.copy()
            post.setlist(ACTION_CHECKBOX_NAME, [str(pk) for pk in kept])
            request.POST = post  # type: ignore[assignment]
        return super().response_action(request, queryset, *args, **kwargs)

    @admin.display(description=gettext_lazy("Image"))
    def thumbnail(self, obj: Any) -> str:
        return display.thumbnail_html(self.thumbnail_url(obj), str(obj))

    def thumbnail_url(self, obj: Any) -> str:
        """The URL shown as a thumbnail: the API's cached thumbnail (sorl-thumbnail, the
        ``thumbnails`` extra), else the image itself; override to point at your renditions."""
        file = self.get_embedding_field().file(obj)
        return thumbnails.thumbnail_url(file) or display.file_url(file)

    @admin.display(description=gettext_lazy("Score"))
    def search_score(self, obj: Any) -> str:
        score = getattr(obj, "score", None)
        if score is None:
            return display.EMPTY
        # "0,873" in French, as Django's admin writes numbers (number_format cuts, so round first).
        shown = number_format(round(score, 3), 3)
        return format_html('<span class="si-score" title="{}">{}</span>', _("cosine similarity"), shown)

    @admin.display(description=gettext_lazy("Embedding"))
    def embedding_state(self, obj: Any) -> str:
        return display.status_html(obj, self.get_embedding_field())

    @admin.display(description=gettext_lazy("Similar"))
    def similar_images(self, obj: Any) -> str:
        return self.similar_images_link(obj, QueryDict())

    def similar_images_link(self, obj: Any, filters: QueryDict) -> str:
        """The "Similar images" link of a row with vectors: the changelist with ``filters`` (the
        listing's, in the changelist's column) and ``?similar_to=<pk>``."""
        if not display.has_vectors(obj, self.get_embedding_field()):
            return display.EMPTY
        params = filters.copy()
        params[SIMILAR_VAR] = str(obj.pk)
        return format_html(
            '<a class="si-similar" href="{}?{}">{}</a>', self.changelist_url(), params.urlencode(), _("Similar images")
        )

    def _similar_images_column(self, request: HttpRequest) -> Callable[[Any], str]:
        """The ``similar_images`` column for this request: its links keep the listing's filters
        (not its search, ranking or page), as search by photo does."""
        filters = kept_filters(request.GET.urlencode())

        @admin.display(description=gettext_lazy("Similar"))
        def similar_images(obj: Any) -> str:
            return self.similar_images_link(obj, filters)

        return similar_images

    # -- change form ---------------------------------------------------------
    def _vector_columns(self) -> set[str]:
        """The vector columns of every embedding field of the model, not only the one ranked by."""
        return {column for f in embedding_fields(self.model) for column in (f.visual_field, f.semantic_field)}

    def _own_entries(self, obj: Any) -> list[str]:
        return [DETAILS, SUGGESTIONS] if obj is not None else []

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        hidden = self._vector_columns()
        fields = [f for f in super().get_readonly_fields(request, obj) if f not in hidden]
        return [*fields, *(f for f in self._own_entries(obj) if f not in fields)]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        hidden = self._vector_columns()
        return [f for f in super().get_fields(request, obj) if f not in hidden]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        own = self._own_entries(obj)
        hidden = self._vector_columns() | set(own)
        fieldsets: list[Any] = []
        for name, options in super().get_fieldsets(request, obj):
            fields = [f for f in options.get("fields", ()) if isinstance(f, (list, tuple)) or f not in hidden]
            fieldsets.append((name, {**options, "fields": fields}))
        if own:
            fieldsets.append((_("Search index"), {"fields": own}))
        return fieldsets

    @admin.display(description=gettext_lazy("Embedding"))
    def embedding_details(self, obj: Any) -> str:
        details = display.details_html(obj, self.get_embedding_field())
        similar = self.similar_images(obj)
        return format_html("{}<p>{}</p>", details, similar) if similar != display.EMPTY else details

    @admin.display(description=gettext_lazy("Suggested labels"))
    def embedding_suggestions(self, obj: Any) -> str:
        field = self.get_embedding_field()
        labels = display.confident_labels(getattr(obj, field.column("labels")), self.suggestion_min_probability)
        target: str | None
        if hasattr(obj, SUGGESTIONS_TARGET_ATTR):  # set by render_change_form
            target = getattr(obj, SUGGESTIONS_TARGET_ATTR)
        else:  # not on the change form (a site's own use): by the model's fields
            names = {f.name for f in self.model._meta.get_fields()}
            target = f"id_{self.suggestions_field}" if self.suggestions_field in names else None
        return display.suggestions_html(labels, target)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        """Django's; the label buttons target the form's own input of ``suggestions_field``, and
        there are none (the labels as text) when the form has no such input (read-only, excluded)."""
        form = getattr(context.get("adminform"), "form", None)
        if obj is not None and form is not None:
            name = self.suggestions_field
            target = form[name].auto_id if name is not None and name in form.fields else None
            setattr(obj, SUGGESTIONS_TARGET_ATTR, target or None)
        return super().render_change_form(request, context, add, change, form_url, obj)


class SemanticImageAdmin(SemanticSearchAdminMixin, admin.ModelAdmin):
    """A ready admin: thumbnail, title, score, status and "similar images" columns,
    the status filter and the re-embed action."""

    list_display = ["thumbnail", "__str__", "search_score", "embedding_state", "similar_images"]
    list_display_links = ["thumbnail", "__str__"]
    list_filter = [EmbeddingStatusFilter]
