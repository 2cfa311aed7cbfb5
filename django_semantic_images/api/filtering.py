"""When a django-filter backend can be left out of a request: none of its parameters given.

django-filter builds its ``FilterSet``, the filters' form and its fields on every request, and
validates the form, even when the query string names none of its filters (a plain
``search/?q=words``): about a millisecond of a search's time. With none of its parameters given,
a stock filterset filters nothing (each of django-filter's filters returns the queryset as it is
for an empty value), so :func:`filters_nothing` lets the view skip it. Anything a site wrote
itself (a ``FilterSet`` or backend method of its own, a form class, a filter class that is not
django-filter's, a required filter) keeps the backend running on every request.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any
from weakref import WeakKeyDictionary

FILTERSET_METHODS = ("__init__", "filter_queryset", "qs", "form", "errors", "is_valid", "get_form_class")
BACKEND_METHODS = ("filter_queryset", "get_filterset", "get_filterset_kwargs")

# Per filterset class and backend class: the filterset's parameter names when both are stock,
# else []. Weak keys: ``filterset_fields`` makes a new filterset class on every request.
_stock: WeakKeyDictionary[type, dict[type, list[str]]] = WeakKeyDictionary()


def filters_nothing(backend_class: type, filterset_class: Any, given: Container[str]) -> bool:
    """Whether ``backend_class`` (django-filter's backend) with ``filterset_class`` returns the
    queryset unfiltered for a request whose query string holds the names in ``given``."""
    if filterset_class is None:
        # django-filter's own backend without a filterset returns the queryset as it is; a
        # backend of the site's own may filter without one (a visibility rule), so it runs.
        return is_stock_backend(backend_class)
    per_backend = _stock.setdefault(filterset_class, {})
    names = per_backend.get(backend_class)
    if names is None:
        stock = is_stock(backend_class, filterset_class)
        names = per_backend[backend_class] = filterset_param_names(filterset_class) if stock else []
    return bool(names) and not any(name in given for name in names)


def is_stock(backend_class: type, filterset_class: Any) -> bool:
    """Whether the backend, the filterset, its form and each of its filters are django-filter's own
    (so that, given none of the filters' parameters, nothing is filtered and nothing is refused)."""
    from django import forms
    from django_filters.filterset import BaseFilterSet

    if not is_stock_backend(backend_class) or not issubclass(filterset_class, BaseFilterSet):
        return False
    if any(_defined_outside_django_filters(filterset_class, name) for name in FILTERSET_METHODS):
        return False
    if filterset_class._meta.form is not forms.Form:
        return False
    return all(
        not _defined_outside_django_filters(type(flt), "filter") and not flt.extra.get("required")
        for flt in filterset_class.base_filters.values()
    )


def is_stock_backend(backend_class: type) -> bool:
    """Whether ``backend_class`` is django-filter's ``DjangoFilterBackend`` with none of its
    filtering methods (``BACKEND_METHODS``) of the site's own."""
    from django_filters.rest_framework import DjangoFilterBackend

    return issubclass(backend_class, DjangoFilterBackend) and not any(
        _defined_outside_django_filters(backend_class, name) for name in BACKEND_METHODS
    )


def filterset_param_names(filterset_class: Any) -> list[str]:
    """The query parameter names of a django-filter ``FilterSet`` (range filters have two)."""
    if filterset_class is None:
        return []
    names = []
    for name, flt in filterset_class.base_filters.items():
        suffixes = getattr(filter_widget(flt), "suffixes", None)
        names += [f"{name}_{s}" if s else name for s in suffixes] if suffixes else [name]
    return names


def is_comma_separated(field: Any) -> bool:
    """Whether a filterset's form field reads its value as a comma-separated list (django-filter's
    ``BaseCSVField``: ``BaseInFilter``, ``BaseRangeFilter``)."""
    try:
        from django_filters.fields import BaseCSVField
    except ImportError:  # django-filter is the site's choice, not a dependency
        return False
    return isinstance(field, BaseCSVField)


def filter_widget(flt: Any) -> Any:
    """The widget (class) of a django-filter filter's form field."""
    return flt.extra.get("widget") or getattr(flt.field_class, "widget", None)


def _defined_outside_django_filters(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            return not klass.__module__.startswith("django_filters.")
    return False
