"""A ChangeList that knows the ranking parameters and orders by distance while ranking."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.main import ORDER_VAR, ChangeList
from django.http import HttpRequest
from django.utils.translation import gettext_lazy

from .ranking import RANKING_VARS

#: The search box's help: the admin's default, and what it becomes without ``search_fields`` (no
#: ordinary matches are listed first then).
SEARCH_HELP = gettext_lazy("Ranks images by meaning. Rows whose text fields contain every word are listed first.")
SEARCH_HELP_MEANING_ONLY = gettext_lazy("Ranks images by meaning.")

#: The request attribute that tells ``get_search_results`` whether the editor sorted by a column.
COLUMN_SORT_ATTR = "_semantic_sorted_by_column"
#: The request attribute set while Django lists the rows again for a list filter's facet counts
#: ("Show counts": without that filter), when no message about the listing is added.
FACETS_ATTR = "_semantic_counting_facets"


def counting_facets(request: HttpRequest) -> bool:
    """Is Django listing the rows for a list filter's facet counts, not for the page?"""
    return bool(getattr(request, FACETS_ATTR, False))


def sorted_by_column(request: HttpRequest) -> bool:
    """Did the editor sort the listed rows by a column (instead of nearest first)? As
    ``SemanticChangeList`` found (an ``?o=`` naming no sortable column is ignored), else, through a
    site's own ChangeList, whether there is an ``?o=``."""
    found = getattr(request, COLUMN_SORT_ATTR, None)
    return bool(request.GET.get(ORDER_VAR)) if found is None else bool(found)


class SemanticChangeListMixin(ChangeList):
    """What the ranking needs of a ChangeList: ``similar_to`` / ``photo`` in the query string.

    The search box is shown even when the admin has no ``search_fields``. The ranking
    parameters are not lookups: they are kept out of the list filters but stay
    in every link the changelist builds (pages, filters, column sorting). They are
    left out of the search form's hidden fields, so typing new words starts a new
    search by meaning.
    """

    def __init__(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        for var in RANKING_VARS:
            self.params.pop(var, None)
        if not self.search_fields:
            # The admin template shows the search box only when there are search fields;
            # searching by meaning needs none (the queries never read this attribute).
            self.search_fields = ("embedding",)
            if self.search_help_text is SEARCH_HELP:
                self.search_help_text = SEARCH_HELP_MEANING_ONLY  # type: ignore[assignment]  # lazy, as Django allows

    def sorted_by_column(self) -> bool:
        """Does ``?o=`` name a sortable column? Django skips the parts that do not (not a number,
        no such column, a column without ordering), and then so does the ranking."""
        for part in str(self.params.get(ORDER_VAR) or "").split("."):
            _none, _prefix, index = part.rpartition("-")
            try:
                name = self.list_display[int(index)]
            except (IndexError, ValueError):
                continue
            if self.get_ordering_field(name):
                return True
        return False

    def get_queryset(self, request: Any, exclude_parameters: Any = None) -> Any:
        setattr(request, COLUMN_SORT_ATTR, self.sorted_by_column())
        if exclude_parameters is None:  # the page's rows (Django 4.2 has no facets, nor the argument)
            return super().get_queryset(request)
        setattr(request, FACETS_ATTR, True)  # a facet's count (Django 5.0+)
        try:
            return super().get_queryset(request, exclude_parameters)
        finally:
            setattr(request, FACETS_ATTR, False)

    def get_ordering(self, request: Any, queryset: Any) -> list[Any]:
        """Keep the ranking's order when the search ranked the rows (and the editor chose no column).

        Django 5.0 and later order the rows before the search, so the ranking's ``order_by`` comes
        last and wins; Django 4.2 orders them after it, putting the model's default ordering first.
        """
        ranked = "distance" in queryset.query.annotations and queryset.query.order_by
        if ranked and not self.sorted_by_column():
            return list(queryset.query.order_by)
        return super().get_ordering(request, queryset)

    def get_filters_params(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        lookup_params = super().get_filters_params(params)
        for var in RANKING_VARS:
            lookup_params.pop(var, None)
        return lookup_params


class SemanticChangeList(SemanticChangeListMixin):
    """The admin's ChangeList with the ranking's parameters (``SemanticChangeListMixin``)."""


#: The ranking's ChangeList made for each ChangeList of a site's own (one class each, made once).
_COMBINED: dict[type[ChangeList], type[SemanticChangeListMixin]] = {}


def semantic_changelist(base: type[ChangeList]) -> type[SemanticChangeListMixin]:
    """``base`` (the ChangeList the admin's other bases give) with the ranking's parameters: itself
    when it has them, else a subclass of it with ``SemanticChangeListMixin`` first."""
    if issubclass(base, SemanticChangeListMixin):
        return base
    if base is ChangeList:
        return SemanticChangeList
    if base not in _COMBINED:
        _COMBINED[base] = type(f"Semantic{base.__name__}", (SemanticChangeListMixin, base), {})
    return _COMBINED[base]
