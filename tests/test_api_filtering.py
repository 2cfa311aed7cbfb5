"""The search API leaves out a django-filter backend given none of its parameters, and only a
stock one: a filterset with anything of the site's own still runs on every request."""

from __future__ import annotations

import pytest
from django import forms
from django.core.cache import cache
from django_filters import rest_framework as filters
from rest_framework.test import APIRequestFactory

from django_semantic_images.api.filtering import filters_nothing, is_stock
from photos.api import PhotoFilter, PhotoSearchViewSet
from photos.models import Photo

SEARCH = "/api/photos/search/"
BACKEND = filters.DjangoFilterBackend


def test_a_stock_filterset_filters_nothing_only_when_none_of_its_parameters_is_given():
    assert filters_nothing(BACKEND, PhotoFilter, {"q": "a cat", "limit": "10"})
    assert not filters_nothing(BACKEND, PhotoFilter, {"q": "a cat", "owner": "3"})
    assert not filters_nothing(BACKEND, PhotoFilter, {"q": "a cat", "created_before": ""})

    class Ranged(filters.FilterSet):
        ids = filters.RangeFilter(field_name="id")

        class Meta:
            model = Photo
            fields = ["ids"]

    assert filters_nothing(BACKEND, Ranged, {"ids": "3"})  # a range filter reads ids_min / ids_max
    assert not filters_nothing(BACKEND, Ranged, {"ids_max": "3"})


class NoCats(PhotoFilter):
    """A filterset of the site's own: it filters with no parameter given."""

    def filter_queryset(self, queryset):
        return super().filter_queryset(queryset).exclude(title__icontains="cat")


class OwnFilter(filters.CharFilter):
    def filter(self, qs, value):
        return qs.exclude(title__icontains="cat")


class WithOwnFilter(filters.FilterSet):
    title = OwnFilter()

    class Meta:
        model = Photo
        fields = ["title"]


class WithRequiredFilter(filters.FilterSet):
    title = filters.CharFilter(required=True)

    class Meta:
        model = Photo
        fields = ["title"]


class OwnForm(forms.Form):
    pass


class WithOwnForm(PhotoFilter):
    class Meta(PhotoFilter.Meta):
        form = OwnForm


class OwnBackend(filters.DjangoFilterBackend):
    def get_filterset_kwargs(self, request, queryset, view):
        return {**super().get_filterset_kwargs(request, queryset, view), "data": {"title": "cat"}}


@pytest.mark.parametrize(
    ("backend", "filterset"),
    [(BACKEND, NoCats), (BACKEND, WithOwnFilter), (BACKEND, WithRequiredFilter), (BACKEND, WithOwnForm)]
    + [(OwnBackend, PhotoFilter)],
)
def test_anything_of_the_sites_own_keeps_the_filterset_running(backend, filterset):
    assert not is_stock(backend, filterset)
    assert not filters_nothing(backend, filterset, {"q": "a cat"})


@pytest.mark.django_db
@pytest.mark.parametrize(("backend", "filterset"), [(BACKEND, NoCats), (BACKEND, WithOwnFilter)])
def test_a_filterset_that_filters_without_parameters_still_filters_the_search(sample_photos, backend, filterset):
    cache.clear()  # throttle history
    view = PhotoSearchViewSet.as_view({"get": "search"}, filter_backends=[backend], filterset_class=filterset)
    sample_photos["chelsea"].title = "a tabby cat"
    sample_photos["chelsea"].save(update_fields=["title"])
    plain = PhotoSearchViewSet.as_view({"get": "search"})
    request = {"q": "a cat lying on a sofa", "limit": 100}

    every = [row["id"] for row in plain(APIRequestFactory().get(SEARCH, request)).data["results"]]
    filtered = [row["id"] for row in view(APIRequestFactory().get(SEARCH, request)).data["results"]]
    assert sample_photos["chelsea"].pk in every
    assert sample_photos["chelsea"].pk not in filtered
    assert filtered == [pk for pk in every if pk != sample_photos["chelsea"].pk]


class PublishedOnly(filters.DjangoFilterBackend):
    """A backend of the site's own that hides rows with no filterset and no parameter."""

    def filter_queryset(self, request, queryset, view):
        return super().filter_queryset(request, queryset, view).filter(published=True)


class EveryPhoto(PhotoSearchViewSet):
    """Every photo in the queryset: ``PublishedOnly`` alone decides who sees what."""

    filter_backends = [PublishedOnly]
    filterset_class = None

    def get_queryset(self):
        return Photo.objects.all()


def test_only_django_filters_own_backend_without_a_filterset_filters_nothing():
    assert filters_nothing(BACKEND, None, {"q": "a cat"})
    assert not filters_nothing(PublishedOnly, None, {"q": "a cat"})


@pytest.mark.django_db
def test_a_backend_of_the_sites_own_hides_rows_without_a_filterset(make_photo, sample_paths):
    cache.clear()  # throttle history
    shown = make_photo(sample_paths["coffee"])
    make_photo(sample_paths["rocket"], published=False)
    view = EveryPhoto.as_view({"get": "list"})
    response = view(APIRequestFactory().get("/api/photos/", {"limit": 100}))
    assert response.status_code == 200, response.data
    assert [row["id"] for row in response.data["results"]] == [shown.pk]
