"""``GET /api/photos/duplicates/``: groups of near-identical images through the REST API, within
the caller's queryset, paged, with a 400 naming a bad ``threshold`` (real PostgreSQL, real models)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db.models import Count
from django_filters import rest_framework as filters
from rest_framework.test import APIClient, APIRequestFactory

from django_semantic_images.api.throttling import IMAGE_SCOPE
from django_semantic_images.duplicates import mark_not_duplicates
from photos.api import PhotoSearchViewSet
from photos.models import Photo

pytestmark = pytest.mark.django_db

URL = "/api/photos/duplicates/"
SEARCH = "/api/photos/search/"
CAT = ("chelsea", "chelsea-jpeg", "chelsea-flip")
COFFEE = ("coffee", "coffee-crop")


@pytest.fixture
def client() -> APIClient:
    cache.clear()  # throttle history
    return APIClient()


def groups_of(response) -> list[list[int]]:
    assert response.status_code == 200, response.content
    return [[image["id"] for image in group["images"]] for group in response.json()["results"]]


def pks(photos, *names: str) -> list[int]:
    return sorted(photos[name].pk for name in names)


def test_an_anonymous_caller_gets_the_groups_of_published_photos_only(client, duplicate_photos):
    response = client.get(URL)
    assert groups_of(response) == [pks(duplicate_photos, *CAT)]  # the cropped coffee is unpublished
    group = response.json()["results"][0]
    assert set(group) == {"distance", "images"} and 0 < group["distance"] <= 0.2
    image = group["images"][0]
    assert set(image) == {"id", "title", "alt_text", "score", "relevance", "image_url", "thumbnail_url", "created_at"}
    assert image["score"] is None and image["image_url"].startswith("http://testserver/media/photos/")


def test_a_signed_in_owner_also_gets_groups_with_their_unpublished_photos(client, duplicate_photos):
    owner = User.objects.create_user("owner", password="pw")
    Photo.objects.filter(pk=duplicate_photos["coffee-crop"].pk).update(owner=owner)
    client.force_authenticate(owner)
    assert groups_of(client.get(URL)) == [pks(duplicate_photos, *CAT), pks(duplicate_photos, *COFFEE)]


def test_the_groups_are_paged_and_filters_apply(client, duplicate_photos):
    Photo.objects.update(published=True)
    first = client.get(URL, {"limit": 1})
    assert groups_of(first) == [pks(duplicate_photos, *CAT)]
    assert "offset=1" in first.json()["next"]
    assert groups_of(client.get(URL, {"limit": 1, "offset": 1})) == [pks(duplicate_photos, *COFFEE)]
    assert groups_of(client.get(URL, {"created_after": "2999-01-01"})) == []


def test_the_pages_of_groups_go_on_past_the_searches_offset_cap(client, duplicate_photos, monkeypatch):
    """Every group is found before a page is cut, so a deep page costs nothing more: the groups
    past ``max_offset`` (1,000; here 0) were cut off silently, ``next`` null before the last."""
    from django_semantic_images.api.pagination import RankedPagination

    monkeypatch.setattr(RankedPagination, "max_offset", 0)
    Photo.objects.update(published=True)
    first = client.get(URL, {"limit": 1})
    assert groups_of(first) == [pks(duplicate_photos, *CAT)]
    assert "offset=1" in first.json()["next"]
    second = client.get(first.json()["next"])
    assert groups_of(second) == [pks(duplicate_photos, *COFFEE)] and second.json()["next"] is None
    assert groups_of(client.get(URL, {"offset": 5})) == []
    assert client.get(SEARCH, {"q": "a cat", "offset": 1}).status_code == 400  # the searches keep it


def test_pairs_marked_not_duplicates_are_not_grouped(client, duplicate_photos):
    mark_not_duplicates(Photo, pks(duplicate_photos, *CAT))
    assert groups_of(client.get(URL)) == []


def test_a_higher_threshold_may_find_more_and_a_tiny_one_finds_less(client, duplicate_photos):
    assert groups_of(client.get(URL, {"threshold": "1e-6"})) == []
    assert groups_of(client.get(URL, {"threshold": "0.25"})) == [pks(duplicate_photos, *CAT)]


@pytest.mark.parametrize("value", ["abc", "0", "-0.1", "1.5", "nan", "1e999", "", " 0.1", "0,2"])
def test_a_bad_threshold_is_a_400_naming_it(client, duplicate_photos, value):
    response = client.get(URL, {"threshold": value})
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["threshold"]


@pytest.mark.parametrize("query", [{"limit": "0"}, {"offset": "-1"}])
def test_bad_paging_is_a_400_before_the_library_is_probed(client, duplicate_photos, query, django_assert_num_queries):
    """The paging was read only once every group was found: a whole-library probe (minutes on a
    large one) for a request that then failed."""
    with django_assert_num_queries(0):
        response = client.get(URL, query)
    assert response.status_code == 400 and list(response.json()) == list(query)


def test_a_repeated_threshold_or_an_unknown_parameter_is_a_400(client):
    assert list(client.get(URL + "?threshold=0.1&threshold=0.2").json()) == ["threshold"]
    response = client.get(URL, {"min_score": "0.5"})
    assert response.status_code == 400 and "min_score" in response.json()["detail"]


def test_duplicates_are_throttled_like_a_search_by_photo():
    view = PhotoSearchViewSet()
    view.action, view.request = "duplicates", None
    assert view.throttle_scope == IMAGE_SCOPE


def test_the_schema_describes_the_endpoint(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/photos/duplicates/"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) >= {"threshold", "limit", "offset"} and "min_score" not in params
    assert "maximum" not in params["offset"]["schema"]  # no cap on a list made in full
    assert params["threshold"]["schema"]["exclusiveMinimum"] is True and params["threshold"]["schema"]["maximum"] == 1
    page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    results = schema["components"]["schemas"][page]["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[1]
    group = schema["components"]["schemas"][results]
    assert set(group["properties"]) == {"distance", "images"}
    assert group["properties"]["images"]["items"]["$ref"].endswith("/PhotoResult")
    assert set(operation["responses"]) >= {"200", "400", "429"}


class TakenFilter(filters.FilterSet):
    taken_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Photo
        fields = ["taken_after"]


@pytest.mark.parametrize("action", ["duplicates", "list"])
def test_a_filter_value_postgresql_cannot_hold_is_a_400_here_as_in_a_search(action):
    """The form takes a time zone offset of +18:38, PostgreSQL does not (a DataError): the
    caller's input, so a 400 naming it, on the duplicates as on every other action."""
    cache.clear()  # throttle history
    view = PhotoSearchViewSet.as_view({"get": action}, filterset_class=TakenFilter)
    response = view(APIRequestFactory().get(URL, {"taken_after": "2026-01-01T00:00:00+18:38"}))
    assert response.status_code == 400, response.data
    assert response.data["detail"].startswith("A filter value is out of range: ")


class WithOwnersPhotoCount(PhotoSearchViewSet):
    """A site whose get_queryset() annotates an aggregate (each photo with its owner's photo count)."""

    def get_queryset(self):
        return super().get_queryset().annotate(owners_photos=Count("owner__photo"))


def test_a_queryset_with_an_aggregate_annotation_is_grouped_too(duplicate_photos):
    """The neighbour subquery took the site's GROUP BY along: a 500 (a reference to the outer
    query in the subquery's GROUP BY), on the admin's page too when its get_queryset() counts."""
    cache.clear()  # throttle history
    response = WithOwnersPhotoCount.as_view({"get": "duplicates"})(APIRequestFactory().get(URL))
    assert response.status_code == 200, response.data
    assert [[image["id"] for image in group["images"]] for group in response.data["results"]] == [
        pks(duplicate_photos, *CAT)
    ]
