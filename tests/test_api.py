"""REST search API against real PostgreSQL + pgvector and the real models.

Each endpoint, the permission filter (also through /similar/), filters composing
with the ranking, paging without duplicates or gaps, throttling, and every kind
of bad input the API must answer with a 4xx and a message.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import unicodedata
import zlib

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django_filters import rest_framework as filters
from PIL import Image, ImageOps, features
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate

from django_semantic_images.api.serializers import NOT_BLANK
from django_semantic_images.api.viewsets import filterset_multi_valued
from django_semantic_images.encoders.base import l2_normalize
from django_semantic_images.fields import get_embedding_field
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from django_semantic_images.uploads import MULTIPART_OVERHEAD
from photos.api import PhotoSearchViewSet
from photos.models import Photo
from tests.conftest import image_bytes
from tests.multifield.models import TwoImagePhoto
from tests.sent_sql import CaptureSentQueries

pytestmark = pytest.mark.django_db

SEARCH = "/api/photos/search/"


def similar_url(pk: object) -> str:
    return f"/api/photos/{pk}/similar/"


@pytest.fixture
def client() -> APIClient:
    cache.clear()  # throttle history
    return APIClient()


def ids(response) -> list[int]:
    return [row["id"] for row in response.json()["results"]]


def upload(data: bytes, name: str = "query.jpg", content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type)


# -- the three endpoints --------------------------------------------------------------


def test_text_search_ranks_the_cat_first_with_score_and_urls(client, sample_photos):
    response = client.get(SEARCH, {"q": "a cat lying on a blanket", "limit": 5})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["limit"] == 5 and body["offset"] == 0 and body["previous"] is None
    first = body["results"][0]
    assert first["id"] == sample_photos["chelsea"].pk
    assert set(first) == {"id", "title", "alt_text", "score", "relevance", "image_url", "thumbnail_url", "created_at"}
    assert first["image_url"].startswith("http://testserver/media/photos/")
    assert first["thumbnail_url"].startswith("http://testserver/media/cache/")  # tests/test_thumbnails.py
    scores = [row["score"] for row in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert "offset=5" in body["next"]


def test_a_search_is_one_database_round_trip(client, sample_photos):
    """Once the process has the table's size, the calibration sample and the thumbnails, a text
    search is one query: the HNSW settings go with it (they were a round trip of their own, and
    outside a transaction BEGIN and COMMIT two more)."""
    assert client.get(SEARCH, {"q": "a cat"}).status_code == 200
    with CaptureSentQueries(connection) as queries:
        response = client.get(SEARCH, {"q": "a red bicycle", "limit": 5, "owner": 1})
    assert response.status_code == 200 and len(response.json()["results"]) == 0
    with CaptureSentQueries(connection) as more:
        response = client.get(SEARCH, {"q": "a red bicycle", "limit": 5})
    assert response.status_code == 200 and len(response.json()["results"]) == 5
    assert [len(queries), len(more)] == [1, 1], [q["sql"] for q in [*queries, *more]]
    assert "set_config('hnsw.ef_search'" in more[0]["sql"]


def test_search_by_photo_finds_the_original_of_a_flipped_copy(client, sample_photos, sample_paths):
    flipped = ImageOps.mirror(Image.open(sample_paths["astronaut"]).convert("RGB"))
    response = client.post(SEARCH + "?limit=3", {"image": upload(image_bytes(flipped))}, format="multipart")
    assert response.status_code == 200, response.content
    assert ids(response)[0] == sample_photos["astronaut"].pk
    assert len(ids(response)) == 3


def test_similar_returns_the_near_duplicate_first_and_not_itself(client, sample_photos, sample_paths, make_photo):
    cat = sample_photos["chelsea"]
    crop = make_photo(Image.open(sample_paths["chelsea"]).convert("RGB").crop((20, 20, 400, 280)), name="crop.jpg")
    embed_instances([crop])
    response = client.get(similar_url(cat.pk))
    assert response.status_code == 200, response.content
    assert ids(response)[0] == crop.pk
    assert cat.pk not in ids(response)


# -- who sees what ------------------------------------------------------------------------


@pytest.fixture
def private_coffee(sample_photos, sample_paths, make_photo, django_user_model):
    """An unpublished, owned near-duplicate of the published coffee photo."""
    owner = django_user_model.objects.create_user("owner", password="pw")
    copy = Image.open(sample_paths["coffee"]).convert("RGB").crop((10, 10, 390, 390))
    private = make_photo(copy, name="private-coffee.jpg", title="my coffee", published=False, owner=owner)
    embed_instances([private])
    private.refresh_from_db()
    assert private.embedding.is_embedded
    return private


def test_an_unpublished_photo_never_appears_to_others(client, sample_photos, private_coffee):
    text = client.get(SEARCH, {"q": "a cup of coffee", "limit": 100})
    assert text.status_code == 200
    assert private_coffee.pk not in ids(text)
    assert sample_photos["coffee"].pk == ids(text)[0]
    # Its published neighbour's similar list would rank it first, were it visible.
    similar = client.get(similar_url(sample_photos["coffee"].pk), {"limit": 100})
    assert similar.status_code == 200
    assert private_coffee.pk not in ids(similar)
    assert len(ids(similar)) == len(sample_photos) - 1
    # A page just big enough for the visible rows has no next page: the hidden one is not the extra row.
    exact = client.get(similar_url(sample_photos["coffee"].pk), {"limit": len(sample_photos) - 1})
    assert len(ids(exact)) == len(sample_photos) - 1 and exact.json()["next"] is None
    exact = client.get(SEARCH, {"q": "a cup of coffee", "limit": len(sample_photos)})
    assert len(ids(exact)) == len(sample_photos) and exact.json()["next"] is None
    # Searching by the private photo's own pixels does not reveal it either.
    data = Image.open(private_coffee.image.path).convert("RGB")
    by_photo = client.post(SEARCH + "?limit=100", {"image": upload(image_bytes(data))}, format="multipart")
    assert private_coffee.pk not in ids(by_photo)
    # And it cannot be used as an anchor.
    anchor = client.get(similar_url(private_coffee.pk))
    assert anchor.status_code == 404
    assert "detail" in anchor.json()


def test_the_owner_sees_their_unpublished_photo(client, sample_photos, private_coffee):
    client.force_authenticate(private_coffee.owner)
    similar = client.get(similar_url(sample_photos["coffee"].pk))
    assert ids(similar)[0] == private_coffee.pk
    assert client.get(similar_url(private_coffee.pk)).status_code == 200


def test_a_filter_composes_with_the_ranking(client, sample_photos, django_user_model):
    owner = django_user_model.objects.create_user("alice")
    mine = [sample_photos[s].pk for s in ("rocket", "coffee", "horse")]
    Photo.objects.filter(pk__in=mine).update(owner=owner)
    response = client.get(SEARCH, {"q": "a cup of coffee", "owner": owner.pk})
    assert response.status_code == 200, response.content
    assert sorted(ids(response)) == sorted(mine)
    assert ids(response)[0] == sample_photos["coffee"].pk


def test_nul_characters_in_the_words_count_as_spaces(client, sample_photos):
    response = client.get(f"{SEARCH}?q=a%00cup%00of%00coffee")
    assert response.status_code == 200, response.content
    assert ids(response)[0] == sample_photos["coffee"].pk


def test_decomposed_words_search_as_composed_ones(client, sample_photos):
    """Canonically equivalent words (NFD: "e" and a combining accent; NFC: "é") are one search: one
    query vector and cache entry, and the keyword match of stored (composed) text."""
    Photo.objects.filter(pk=sample_photos["chelsea"].pk).update(alt_text="Рыжая кошка ест йогурт")
    composed, decomposed = (unicodedata.normalize(form, "йогурт") for form in ("NFC", "NFD"))
    assert len(decomposed) == len(composed) + 1
    for words in (composed, decomposed):
        response = client.get(SEARCH, {"q": words})
        assert response.status_code == 200, response.content
        assert ids(response) == [sample_photos["chelsea"].pk] and "Cyrillic" in response.json()["note"]
    # A text stored decomposed (a title from a macOS file name) is found by either form too.
    Photo.objects.filter(pk=sample_photos["chelsea"].pk).update(alt_text="", title=decomposed)
    for words in (composed, decomposed):
        assert ids(client.get(SEARCH, {"q": words})) == [sample_photos["chelsea"].pk]
    encoder = get_embedding_field(Photo).get_encoder()
    encoder.clear_query_cache()
    accented = "crème brûlée"
    for form in ("NFD", "NFC"):
        assert client.get(SEARCH, {"q": unicodedata.normalize(form, accented)}).status_code == 200
    assert encoder.cached_text_vector(unicodedata.normalize("NFC", accented)) is not None
    assert encoder.cached_text_vector(unicodedata.normalize("NFD", accented)) is None


def test_an_unpaged_viewset_keeps_its_array_body_when_the_words_are_matched_as_keywords(
    client, settings, sample_photos
):
    """Without pagination the schema's body is the array of results; the note on unreadable words
    comes in the Search-Note header there (and in it too on a paged search)."""
    settings.ROOT_URLCONF = "tests.api_urls"
    Photo.objects.filter(pk=sample_photos["chelsea"].pk).update(alt_text="Рыжая кошка ест йогурт")
    response = client.get("/test-api/unpaged/search/", {"q": "кошка"})
    assert response.status_code == 200, response.content
    assert [row["id"] for row in response.json()] == [sample_photos["chelsea"].pk]
    assert "Cyrillic" in response.headers["Search-Note"]
    paged = client.get(SEARCH, {"q": "кошка"})
    assert paged.headers["Search-Note"] == paged.json()["note"]
    assert "Search-Note" not in client.get("/test-api/unpaged/search/", {"q": "a cup of coffee"}).headers


def test_similar_to_a_photo_not_embedded_yet_is_a_conflict(client, make_photo, sample_paths):
    pending = make_photo(sample_paths["rocket"])
    response = client.get(similar_url(pending.pk))
    assert response.status_code == 409
    detail = f"Photo {pending.pk} has not been embedded yet (status: pending); try again shortly."
    assert response.json() == {"detail": detail}


def test_similar_to_a_photo_whose_embedding_failed_names_the_failure_and_its_reason(client, make_photo):
    broken = make_photo(b"%PDF-1.4 not a picture", name="letter.jpg")
    reason = "The file is not an image in a format we can read."
    Photo.objects.filter(pk=broken.pk).update(embedding_status="failed", embedding_error=reason)
    response = client.get(similar_url(broken.pk))
    assert response.status_code == 409
    assert response.json() == {"detail": f"Photo {broken.pk} could not be embedded (status: failed): {reason}"}


@pytest.mark.parametrize("urls", ["site", "object-permission"])
def test_a_hidden_anchor_answers_exactly_like_a_missing_one(
    client, settings, sample_photos, private_coffee, django_user_model, urls
):
    """The example site hides by get_queryset(); the other wiring finds every row and hides
    by an object permission, which must not turn a hidden id into a 403."""
    settings.ROOT_URLCONF = "tests.api_urls"
    base = "/api/photos/" if urls == "site" else "/test-api/objperm/"
    missing = Photo.objects.order_by("-pk").first().pk + 1000
    visible = client.get(f"{base}{sample_photos['coffee'].pk}/similar/")
    assert visible.status_code == 200
    hidden = client.get(f"{base}{private_coffee.pk}/similar/")
    absent = client.get(f"{base}{missing}/similar/")
    malformed = client.get(f"{base}abc/similar/")
    assert hidden.status_code == absent.status_code == malformed.status_code == 404
    assert hidden.content == absent.content == malformed.content
    headers = ("Content-Type", "Allow", "Vary", "Content-Length")
    assert [hidden.get(h) for h in headers] == [absent.get(h) for h in headers] == [malformed.get(h) for h in headers]
    assert hidden["Allow"] == "GET, HEAD, OPTIONS" and hidden["Content-Type"] == "application/json"
    assert hidden.json() == {"detail": "No Photo matches the given query."}
    # Signed in as someone else: still hidden, still the same answer.
    client.force_authenticate(django_user_model.objects.create_user("someone"))
    assert client.get(f"{base}{private_coffee.pk}/similar/").content == absent.content


def test_the_api_root_lists_the_photos_and_the_list_shows_only_what_the_caller_may_see(
    client, sample_photos, private_coffee
):
    root = client.get("/api/", HTTP_ACCEPT="application/json")
    assert root.status_code == 200
    assert root.json() == {"photos": "http://testserver/api/photos/"}
    listed = client.get("/api/photos/", {"limit": 100})
    assert listed.status_code == 200, listed.content
    body = listed.json()
    assert set(body) == {"limit", "offset", "next", "previous", "results"}
    assert sorted(ids(listed)) == sorted(p.pk for p in sample_photos.values())
    assert all(row["score"] is None and row["image_url"].startswith("http://") for row in body["results"])
    client.force_authenticate(private_coffee.owner)
    assert private_coffee.pk in ids(client.get("/api/photos/", {"limit": 100}))
    # The list pages like the searches, and has no relevance floor.
    page = client.get("/api/photos/", {"limit": 2, "offset": 2}).json()
    assert len(page["results"]) == 2 and "offset=4" in page["next"] and page["previous"]
    assert client.get("/api/photos/", {"min_score": 0.5}).status_code == 400


def test_the_list_pages_rows_tied_on_the_sites_ordering_once_each(client, make_photo):
    """``Meta.ordering`` is ``-created_at``: rows of one import share it, and LIMIT/OFFSET alone
    gave each page its own order among them (a row came twice, another never)."""
    first = make_photo(b"not decoded here", name="import.jpg")
    Photo.objects.bulk_create([Photo(image=first.image.name) for _ in range(29)])
    Photo.objects.update(created_at=first.created_at)
    seen = [row["id"] for page in walk(client, "/api/photos/", {"limit": 7}) for row in page]
    assert sorted(seen) == sorted(Photo.objects.values_list("pk", flat=True))


def browsable(client: APIClient, url: str) -> str:
    response = client.get(url, HTTP_ACCEPT="text/html")
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def description(html: str) -> str:
    found = re.search(r'<div class="pull-left">(.*?)</div>', html, re.S)
    assert found, "no description on the page"
    return found.group(1)


def test_the_browsable_api_offers_an_image_upload_and_readable_descriptions(client, sample_photos):
    search = browsable(client, SEARCH + "?q=a+cat")
    form = re.search(r'<form action="/api/photos/search/[^"]*" method="POST".*?</form>', search, re.S)
    assert form, "no POST form"
    assert re.search(r'<input[^>]*name="image"[^>]*type="file"|<input[^>]*type="file"[^>]*name="image"', form.group(0))
    assert 'name="title"' not in form.group(0) and 'name="alt_text"' not in form.group(0)
    pages = [search, browsable(client, similar_url(sample_photos["coffee"].pk)), browsable(client, "/api/photos/")]
    for html in pages:
        text = description(html)
        assert "`" not in text and len(text) > 40, text
    assert "search/?q=words" in description(pages[2])
    assert "/api/photos/" in browsable(client, "/api/")


# -- paging --------------------------------------------------------------------------------


@pytest.fixture
def many_rows(index_forced):
    """The published rows among 2,000 random ones, with the planner on the HNSW indexes."""
    plan = Photo.objects.filter(published=True).semantic_search(index_forced[5])[:37].explain()
    assert "Index Scan using photos_photo_sem_" in plan, plan
    return set(Photo.objects.filter(published=True).values_list("pk", flat=True))


def walk(client: APIClient, url: str, params: dict) -> list[list[dict]]:
    pages = []
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.content
        pages.append(response.json()["results"])
        following = response.json()["next"]
        if following is None:
            return pages
        response = client.get(following)


@pytest.mark.parametrize("endpoint", ["text", "similar"])
def test_paging_through_a_filtered_index_scan_has_no_duplicates_or_gaps(client, many_rows, endpoint, settings):
    # Reaching (nearly) all 200 published rows among 2,000 takes an iterative scan beyond
    # pgvector's default bounds (hnsw.max_scan_tuples 20,000 and scan_mem_multiplier 1), which
    # cap how deep a filtered result list goes; raise them for this walk to the end.
    settings.SEMANTIC_IMAGES = {"HNSW_MAX_SCAN_TUPLES": 100_000, "HNSW_SCAN_MEM_MULTIPLIER": 16}
    anchor = min(many_rows)
    url, params = (SEARCH, {"q": "a red bicycle"}) if endpoint == "text" else (similar_url(anchor), {})
    expected = many_rows - {anchor} if endpoint == "similar" else many_rows
    pages = walk(client, url, {**params, "limit": 37})
    seen = [row["id"] for page in pages for row in page]
    assert len(seen) == len(set(seen)), "a row came twice"
    assert set(seen) <= expected, "a row outside the queryset leaked"
    # The pages are consecutive slices of the one ranking a single index scan returns: no gaps.
    published = Photo.objects.filter(published=True)
    if endpoint == "text":
        ranking = published.semantic_search("a red bicycle")
    else:
        ranking = published.similar_to(Photo.objects.get(pk=anchor))
    assert seen == list(ranking.values_list("pk", flat=True)[: len(expected)])
    # HNSW is approximate: a random graph may leave a row or two unreachable, never more.
    assert len(seen) >= 0.98 * len(expected)
    assert all(len(page) == 37 for page in pages[:-1])
    for page in pages:
        scores = [row["score"] for row in page]
        assert scores == sorted(scores, reverse=True)


def test_limit_is_capped_and_offset_bounded(client, sample_photos):
    response = client.get(SEARCH, {"q": "a dog", "limit": 100000})
    assert response.status_code == 200
    assert response.json()["limit"] == 100
    too_deep = client.get(SEARCH, {"q": "a dog", "offset": 5000})
    assert too_deep.status_code == 400
    assert "capped" in too_deep.json()["offset"][0]


def test_relevance_floor_drops_weaker_results_and_ends_paging(client, sample_photos):
    everything = client.get(SEARCH, {"q": "a cup of coffee", "limit": 100}).json()["results"]
    scores = sorted((row["score"] for row in everything), reverse=True)
    floor = (scores[2] + scores[3]) / 2
    response = client.get(SEARCH, {"q": "a cup of coffee", "limit": 2, "offset": 2, "min_score": floor})
    body = response.json()
    assert [row["score"] for row in body["results"]] == [scores[2]]
    assert body["next"] is None


# -- throttling ---------------------------------------------------------------------------


def test_searches_are_throttled_per_scope(client, sample_photos, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"semantic_search": "2/min", "semantic_image_search": None},
    }
    for _ in range(2):
        assert client.get(SEARCH, {"q": "a rocket"}).status_code == 200
    throttled = client.get(SEARCH, {"q": "a rocket"})
    assert throttled.status_code == 429
    assert "throttled" in throttled.json()["detail"]
    assert int(throttled["Retry-After"]) > 0
    assert client.get(similar_url(sample_photos["rocket"].pk)).status_code == 429


def test_the_plain_list_and_options_spend_no_search(client, sample_photos, settings):
    """The list (the site's order, no model run) and OPTIONS took the text search's scope: browsing
    the list spent a caller's searches, and once they were spent the list and OPTIONS were a 429 too."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"semantic_search": "2/min", "semantic_image_search": None},
    }
    for _ in range(3):
        assert client.get("/api/photos/").status_code == 200
        assert client.options(SEARCH).status_code == 200
    for _ in range(2):
        assert client.get(SEARCH, {"q": "a rocket"}).status_code == 200
    assert client.get(SEARCH, {"q": "a rocket"}).status_code == 429
    assert client.get("/api/photos/").status_code == 200
    assert client.options(SEARCH).status_code == 200


def test_a_forged_forwarded_for_header_does_not_escape_the_throttle(client, settings):
    """DRF counts an anonymous caller by the whole X-Forwarded-For header unless NUM_PROXIES is set:
    a new value on each request was never throttled."""
    rates = {"semantic_search": "2/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    forged = [client.get(SEARCH, {"q": "a rocket"}, HTTP_X_FORWARDED_FOR=f"203.0.113.{i}") for i in range(3)]
    assert [response.status_code for response in forged] == [200, 200, 429]
    # Behind the proxies a site declares, the client address they write is counted.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates, "NUM_PROXIES": 1}
    cache.clear()
    proxied = [client.get(SEARCH, {"q": "a rocket"}, HTTP_X_FORWARDED_FOR=f"203.0.113.{i % 2}") for i in range(5)]
    assert [response.status_code for response in proxied] == [200, 200, 200, 200, 429]


def test_the_sites_default_throttles_cover_the_searches(client, settings, monkeypatch):
    """The viewset set its own throttle_classes, which dropped the site's DEFAULT_THROTTLE_CLASSES: a
    site-wide rate for anonymous callers left its costliest endpoints unthrottled."""
    from rest_framework.throttling import AnonRateThrottle

    throttles = ["rest_framework.throttling.AnonRateThrottle", "rest_framework.throttling.ScopedRateThrottle"]
    for rates in ({"anon": "2/min"}, {"anon": "9/min", "semantic_search": "2/min"}):  # a scope counts once
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_CLASSES": throttles,
            "DEFAULT_THROTTLE_RATES": rates,
        }
        monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", rates)  # DRF reads them at import
        cache.clear()
        answers = [client.get(SEARCH, {"q": "a rocket"}).status_code for _ in range(3)]
        assert answers == [200, 200, 429], rates


# -- bad input: a 4xx with a message, never a 500 -------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb."""
    raw = image_bytes(Image.new("RGB", (8, 8)), "PNG")
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def jpeg(size: tuple[int, int] = (320, 240), quality: int = 90) -> bytes:
    rng = np.random.default_rng(0)
    return image_bytes(Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)), quality=quality)


@pytest.mark.parametrize(
    ("query", "status", "field", "message"),
    [
        ("q=", 400, "q", "empty"),
        ("q=%20%20%09%0A", 400, "q", "empty"),
        ("q=" + "a" * 100_000, 400, "q", "longer than 500"),
        ("", 400, "q", "Give the words"),
        ("q=cat&colour=red", 400, "detail", "Unsupported parameter(s) in the query string: colour"),
        ("q=%FF%FEcat", 400, "q", "q is not valid UTF-8"),
        ("q=cat&owner=%FF", 400, "owner", "owner is not valid UTF-8"),
        ("q=cat&limit=ten", 400, "limit", "whole number"),
        ("q=cat&limit=0", 400, "limit", "at least 1"),
        ("q=cat&offset=-1", 400, "offset", "at least 0"),
        ("q=cat&min_score=nan", 400, "min_score", "from -1 to 1"),
        ("q=cat&min_score=2", 400, "min_score", "from -1 to 1"),
        ("q=cat&owner=someone", 400, "owner", "whole number"),
        ("q=cat&owner=", 400, "owner", "This filter is empty"),
        ("q=cat&created_after=2026-13-45", 400, "created_after", "valid date"),
        ("q=cat&format=xml", 400, "format", "format must be one of: json, api."),
    ],
    ids=[
        "empty",
        "whitespace",
        "100KB",
        "missing",
        "unsupported",
        "non-utf8",
        "non-utf8-filter",
        "limit-word",
        "limit-zero",
        "offset-negative",
        "floor-nan",
        "floor-range",
        "filter-value",
        "filter-empty",
        "filter-date",
        "format",
    ],
)
def test_bad_text_queries_get_a_400_with_a_message(client, query, status, field, message):
    response = client.get(f"{SEARCH}?{query}")
    assert response.status_code == status, response.content
    body = response.json()
    text = body[field] if isinstance(body[field], str) else " ".join(body[field])
    assert message in text


@pytest.mark.parametrize("name", ["limit", "offset", "owner"])
@pytest.mark.parametrize("raw", [" 5", "5 ", "5_0", "+5", "\u0665", "1.0", "0x5", "5e0"], ids=ascii)
def test_an_integer_parameter_takes_only_ascii_digits(client, name, raw):
    response = client.get(SEARCH, {"q": "cat", name: raw})
    assert response.status_code == 400, response.content
    assert list(response.json()) == [name]
    assert "whole number" in response.json()[name][0]


@pytest.mark.parametrize("name", ["limit", "offset", "owner"])
def test_an_integer_of_thousands_of_digits_is_a_400_naming_it(client, name):
    """Python's int() refuses more than 4,300 digits (a ValueError, not a number): still a 400."""
    response = client.get(SEARCH, {"q": "cat", name: "9" * 5_000})
    assert response.status_code == 400, response.content
    assert response.json() == {name: [f"{name} has too many digits to be read as a whole number."]}


@pytest.mark.parametrize(
    "raw", ["nan", "inf", "-Infinity", " 0.5", "0.5 ", "+0.5", "0_0", "0x1", "\u0660.5", "1e999"], ids=ascii
)
def test_min_score_takes_only_a_plain_decimal(client, raw):
    response = client.get(SEARCH, {"q": "cat", "min_score": raw})
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["min_score"]


@pytest.mark.parametrize(
    "query", ["limit=5&offset=0&min_score=-1", "limit=100&offset=1000&min_score=0.25", "owner=-3&min_score=1e-05"]
)
def test_numbers_written_as_the_schema_says_are_accepted(client, sample_photos, query):
    response = client.get(f"{SEARCH}?q=cat&{query}")
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("q=cat&owner=3&owner=", "owner"),
        ("q=cat&created_after=2999-01-01&created_after=", "created_after"),
        ("q=cat&owner=abc&owner=3", "owner"),
        ("q=coffee&q=cat", "q"),
        ("q=cat&limit=5&limit=50", "limit"),
        ("q=cat&min_score=0.9&min_score=-1", "min_score"),
        ("q=cat&format=json&format=json", "format"),
    ],
    ids=["filter-then-empty", "date-then-empty", "bad-then-good", "q-twice", "limit-twice", "floor-twice", "format"],
)
def test_a_single_valued_parameter_given_twice_is_a_400_naming_it(client, sample_photos, query, name):
    response = client.get(f"{SEARCH}?{query}")
    assert response.status_code == 400, response.content
    assert response.json() == {name: [f"Give {name} once; it was given 2 times."]}
    anchor = sample_photos["coffee"].pk
    for url in (similar_url(anchor), "/api/photos/"):
        twice = client.get(f"{url}?offset=1&offset=2")
        assert twice.status_code == 400 and list(twice.json()) == ["offset"], twice.content
    image = upload(jpeg())
    second = upload(jpeg(), "second.jpg")
    response = client.post(SEARCH, {"image": [image, second]}, format="multipart")
    assert response.status_code == 400
    assert response.json() == {"image": ["Give image once; it was given 2 times."]}


def test_only_multiple_choice_filters_may_be_repeated():
    class TagFilter(filters.FilterSet):
        tag = filters.MultipleChoiceFilter(choices=[("a", "a"), ("b", "b")], field_name="title")
        title = filters.CharFilter()

        class Meta:
            model = Photo
            fields = ["tag", "title"]

    assert filterset_multi_valued(TagFilter) == {"tag"}


def test_every_numeric_filter_is_checked_strictly(django_user_model):
    class NumericFilter(filters.FilterSet):
        owner = filters.ModelChoiceFilter(queryset=django_user_model.objects.all())
        size = filters.NumberFilter(field_name="id")
        ids = filters.RangeFilter(field_name="id")
        title = filters.CharFilter()

        class Meta:
            model = Photo
            fields = ["owner", "size", "ids", "title"]

    view = PhotoSearchViewSet(filterset_class=NumericFilter, action="search", format_kwarg=None)
    view.request = Request(APIRequestFactory().get(SEARCH))
    assert view.numeric_filter_params() == (["owner"], ["size", "ids_min", "ids_max"], [])


class NumberInFilter(filters.BaseInFilter, filters.NumberFilter):
    """django-filter's documented filter of a comma-separated list of numbers."""


class NumberRangeFilter(filters.BaseRangeFilter, filters.NumberFilter):
    pass


class IdListFilter(filters.FilterSet):
    ids = NumberInFilter(field_name="id")
    between = NumberRangeFilter(field_name="id")

    class Meta:
        model = Photo
        fields = ["ids", "between"]


def test_a_comma_separated_numeric_filter_takes_a_list_and_checks_each_number(make_photo):
    """The strict number check read ``?ids=3,5`` as one number: every list was a 400."""
    cache.clear()  # throttle history
    first, second, third = (make_photo(b"not decoded here", name=f"{n}.jpg").pk for n in range(3))
    view = PhotoSearchViewSet.as_view({"get": "list"}, filterset_class=IdListFilter)

    def get(**query):
        return view(APIRequestFactory().get("/api/photos/", query))

    for query, expected in (
        ({"ids": f"{first},{third}"}, {first, third}),
        ({"between": f"{first},{third}"}, {first, second, third}),
    ):
        response = get(**query)
        assert response.status_code == 200, response.data
        assert {row["id"] for row in response.data["results"]} == expected
    for raw in (f"{first},+3", f"{first},", "nan,1"):
        response = get(ids=raw)
        assert response.status_code == 400, raw
        assert response.data == {"ids": ["ids must be plain decimal numbers separated by commas, such as 0.25,-1."]}


class PublishedFilter(filters.FilterSet):
    published = filters.BooleanFilter()

    class Meta:
        model = Photo
        fields = ["published"]


def test_a_true_false_filter_takes_true_or_false_only(make_photo, django_user_model):
    """django-filter leaves a BooleanFilter out for a value it does not read: ``?published=yes``
    listed every row, a silently wider result."""
    cache.clear()  # throttle history
    owner = django_user_model.objects.create_user("owner")
    shown, draft = make_photo(b"x", name="shown.jpg"), make_photo(b"x", name="draft.jpg", published=False, owner=owner)
    view = PhotoSearchViewSet.as_view({"get": "list"}, filterset_class=PublishedFilter)

    def get(value: str):
        request = APIRequestFactory().get("/api/photos/", {"published": value})
        force_authenticate(request, owner)
        return view(request)

    assert [row["id"] for row in get("false").data["results"]] == [draft.pk]
    assert [row["id"] for row in get("true").data["results"]] == [shown.pk]
    for value in ("yes", "unknown", "\x00"):
        response = get(value)
        assert response.status_code == 400, value
        assert response.data == {"published": ["published must be true or false."]}


@pytest.mark.parametrize(
    ("text", "max_length"),
    [
        ("chat 猫 кошка γάτα on a blanket", None),
        ("🐈🐈‍⬛😺", None),
        ("cat " * 2_500, 10_000),
        ("à" * 10_000, 10_000),
    ],
    ids=["mixed-script", "emoji-only", "10000-words", "10000-characters"],
)
def test_odd_search_texts_get_a_ranked_list(client, settings, sample_photos, text, max_length):
    """Scripts the text model barely knows, emoji alone and, where the site allows them, texts
    far over the model's input length are searched (truncated to its tokens), never a 500."""
    if max_length is not None:
        settings.SEMANTIC_IMAGES = {"MAX_QUERY_LENGTH": max_length}
    response = client.get(SEARCH, {"q": text, "limit": 50})
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert {row["id"] for row in results} == {p.pk for p in sample_photos.values()}
    scores = [row["score"] for row in results]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


def test_a_10000_character_search_over_the_limit_is_a_400_naming_q(client):
    response = client.get(SEARCH, {"q": "x" * 10_000})
    assert response.status_code == 400, response.content
    assert response.json() == {"q": ["The search text is longer than 500 characters."]}


BLANK_SAMPLES = ["\x1e", "\x1c\x1d", "\x85", "\ufeff", "\u200b", "\u3000", "\x00", " \t\n"]
TEXT_SAMPLES = ["cat", " cat ", "\x00cat", "\ufeffcat\u3000", "\u00e9t\u00e9"]


@pytest.mark.parametrize("text", BLANK_SAMPLES + TEXT_SAMPLES, ids=ascii)
def test_the_schema_and_the_server_agree_on_what_a_blank_search_is(client, text):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    (q,) = [p for p in schema["paths"]["/api/photos/search/"]["get"]["parameters"] if p["name"] == "q"]
    pattern = q["schema"]["pattern"]
    # Only \uXXXX escapes and ranges: Python's re and ECMAScript read it alike (no \s).
    assert re.fullmatch(r"\[\^(\\u[0-9a-f]{4}(-\\u[0-9a-f]{4})?)+\]", pattern), pattern
    matches = re.search(pattern, text) is not None
    assert matches == (text in TEXT_SAMPLES)
    response = client.get(SEARCH, {"q": text})
    assert response.status_code == (200 if matches else 400), response.content
    if not matches:
        assert response.json() == {"q": ["The search text is empty."]}


def test_blank_is_whitespace_nul_and_the_zero_width_characters():
    blank = {chr(i) for i in range(0x110000) if not NOT_BLANK.search(chr(i))}
    assert blank == {chr(i) for i in range(0x110000) if chr(i).isspace()} | {"\x00", "\u200b", "\u2060", "\ufeff"}


@pytest.mark.parametrize(
    ("side", "limit"),
    [(10_000, None), (20_000, None), (60_000, None), (2_000, 1_000_000)],
    ids=["over-pillow-warning", "over-pillow-error", "far-over", "site-limit"],
)
def test_a_decompression_bomb_is_refused_naming_the_configured_limit(client, settings, side, limit):
    if limit is not None:
        settings.SEMANTIC_IMAGES = {"MAX_IMAGE_PIXELS": limit}
    data = png_claiming(side, side)
    response = client.post(SEARCH, {"image": upload(data, "bomb.png", "image/png")}, format="multipart")
    assert response.status_code == 400, response.content
    (message,) = response.json()["image"]
    assert message.endswith(f"pixels, over the limit of {limit or 50_000_000:,} pixels."), message
    assert f"{side * side:,} pixels" in message or f"{side}x{side} pixels" in message
    assert not {"89478485", "178956970"} & set(re.findall(r"\d+", message.replace(",", ""))), message


def test_wrong_basic_credentials_are_a_401_with_a_challenge(client, django_user_model):
    django_user_model.objects.create_user("alice", password="right")
    wrong = "Basic " + base64.b64encode(b"alice:wrong").decode()
    response = client.get(SEARCH, {"q": "a cat"}, HTTP_AUTHORIZATION=wrong)
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == 'Basic realm="api"'
    assert "Invalid username/password" in response.json()["detail"]
    right = "Basic " + base64.b64encode(b"alice:right").decode()
    assert client.get(SEARCH, {"q": "a cat"}, HTTP_AUTHORIZATION=right).status_code == 200


@pytest.fixture
def small_uploads(settings):
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": 20_000}


@pytest.mark.parametrize(
    ("payload", "status", "field", "message"),
    [
        (
            {"image": upload(b"%PDF-1.4 not an image at all" * 10, "doc.pdf", "application/pdf")},
            400,
            "image",
            "not an image",
        ),
        (
            {"image": upload(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n", "a.eps", "image/eps")},
            400,
            "image",
            "The file is not an image in a format we can read.",
        ),
        ({"image": upload(jpeg()[:6000])}, 400, "image", "truncated"),
        ({"image": upload(png_claiming(60_000, 60_000), "bomb.png", "image/png")}, 400, "image", "over the limit"),
        ({"image": upload(png_claiming(8_000, 8_000), "bomb.png", "image/png")}, 400, "image", "over the limit"),
        ({"image": upload(b"", "empty.jpg")}, 400, "image", "empty"),
        ({}, 400, "image", "Upload the query image"),
        ({"image": "just text"}, 400, "image", "as a file"),
        ({"image": upload(jpeg()), "colour": "red"}, 400, "detail", "Unsupported parameter(s) in the form body"),
    ],
    ids=[
        "non-image",
        "postscript",
        "truncated",
        "bomb-header",
        "over-pixel-cap",
        "empty-file",
        "missing",
        "not-a-file",
        "extra",
    ],
)
def test_bad_uploads_get_a_400_with_a_message(client, payload, status, field, message):
    response = client.post(SEARCH, payload, format="multipart")
    assert response.status_code == status, response.content
    body = response.json()
    text = body[field] if isinstance(body[field], str) else " ".join(body[field])
    assert message in text


def test_a_request_over_djangos_own_limits_gets_the_apis_json_error(client, settings):
    """Django raises these as a SuspiciousOperation, which DRF left to Django: a bare HTML 400
    page with no message, where the schema promises a JSON error."""
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS, settings.DATA_UPLOAD_MAX_NUMBER_FILES = 5, 1
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    many = client.get(SEARCH + "?q=cat" + "&limit=1" * 5)
    files = client.post(SEARCH, {"image": [upload(jpeg()), upload(jpeg())]}, format="multipart")
    big = client.post(SEARCH, {"image": "a" * 2_000}, format="multipart")
    assert [many.status_code, files.status_code, big.status_code] == [400, 400, 413]
    assert many.json() == {"detail": "The request has more than 5 parameters (DATA_UPLOAD_MAX_NUMBER_FIELDS)."}
    assert "more than 1 files (DATA_UPLOAD_MAX_NUMBER_FILES)" in files.json()["detail"]
    assert "over 1,000 bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)" in big.json()["detail"]


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_a_corrupt_avif_upload_is_a_400_naming_image(client):
    from tests.test_imaging import corrupt_avif

    response = client.post(SEARCH, {"image": upload(corrupt_avif(), "broken.avif", "image/avif")}, format="multipart")
    assert response.status_code == 400, response.content
    (message,) = response.json()["image"]
    assert message.startswith("The image data is truncated or corrupt: "), message


@pytest.mark.parametrize("size", [(200, 200), (1200, 1200)], ids=["over-cap", "far-over-cap"])
def test_an_oversized_upload_is_refused_with_413(client, small_uploads, size):
    data = jpeg(size, quality=95)
    assert len(data) > 20_000
    response = client.post(SEARCH, {"image": upload(data)}, format="multipart")
    assert response.status_code == 413, response.content
    assert "limit is 20,000 bytes" in response.json()["detail"]


def test_a_signed_in_callers_oversized_upload_is_refused_before_its_body_is_read(
    small_uploads, counted_uploads, django_user_model
):
    """A session's POST is CSRF-checked, and Django's check reads the form (the whole upload, to a
    temporary file): the declared Content-Length must be refused before, as for anonymous callers."""
    cache.clear()
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_user("uploader", "uploader@example.com", "password"))
    client.get("/")  # the search page sets the CSRF cookie, whose token the page's script sends
    data = jpeg((1200, 1200), quality=95)
    assert len(data) > 20_000 + MULTIPART_OVERHEAD
    response = client.post(
        SEARCH, {"image": upload(data)}, format="multipart", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value
    )
    assert response.status_code == 413, response.content
    assert counted_uploads == []
    small = client.post(  # a photo within the limit is read, and searched
        SEARCH,
        {"image": upload(jpeg((64, 64)))},
        format="multipart",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )
    assert small.status_code == 200, small.content
    assert sum(counted_uploads) == len(jpeg((64, 64)))


def test_head_answers_a_search_like_get(client):
    """DRF answers HEAD with the GET action: the same status, so ``q`` is no unknown parameter."""
    for query in ("q=a+cat&limit=3", "q=", "q=cat&colour=red"):
        get, head = client.get(f"{SEARCH}?{query}"), client.head(f"{SEARCH}?{query}")
        assert head.status_code == get.status_code, (query, head.content, get.content)
    assert client.head(f"{SEARCH}?q=a+cat").status_code == 200


def test_options_describes_the_upload_of_a_search_by_photo(client):
    """OPTIONS described the body of ``POST search/`` with the result's fields (id, title, score ...)."""
    post = client.options(SEARCH).json()["actions"]["POST"]
    assert set(post) == {"image"} and post["image"]["type"] == "file upload" and post["image"]["required"]


def test_a_json_body_is_an_unsupported_media_type(client):
    response = client.post(SEARCH, {"image": "aGVsbG8="}, format="json")
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


def test_the_routers_format_suffixes_answer_like_format(client, sample_photos):
    """DefaultRouter's ``.json`` URLs (the API root at ``/api/.json`` links to ``photos.json``) pass
    ``format`` to the action, which took no such argument: every one was a 500."""
    root = client.get("/api/.json")
    assert root.status_code == 200 and root.json()["photos"].endswith("/api/photos.json")
    pk = sample_photos["chelsea"].pk
    for url in (
        "/api/photos.json",
        "/api/photos/search.json?q=a+cat",
        f"/api/photos/{pk}/similar.json",
        "/api/photos/duplicates.json",
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.content)
        assert response["Content-Type"] == "application/json" and "results" in response.json()
    flipped = image_bytes(Image.open(sample_photos["chelsea"].image.path).convert("RGB"))
    response = client.post("/api/photos/search.json", {"image": upload(flipped)}, format="multipart")
    assert response.status_code == 200 and response.json()["results"][0]["id"] == pk
    response = client.get("/api/photos.xml")
    assert response.status_code == 400 and "format" in response.json()


@pytest.mark.parametrize("query", ["format=xml", "format=api", "format=json", "format="])
def test_a_format_suffix_and_a_format_parameter_together_are_a_400_naming_format(client, sample_photos, query):
    """The suffix won and the parameter was silently left out: ``photos.json?format=xml`` answered 200,
    where ``?format=xml`` alone is a 400. Two formats are a single-valued parameter given twice."""
    pk = sample_photos["chelsea"].pk
    for url in ("/api/photos.json", "/api/photos/search.json?q=a+cat", f"/api/photos/{pk}/similar.json"):
        response = client.get(f"{url}{'&' if '?' in url else '?'}{query}")
        assert response.status_code == 400, (url, query, response.content[:300])
        assert response.json() == {"format": ["Give format once; it was given 2 times."]}
    assert client.get("/api/photos.json?limit=2").status_code == 200


def test_similar_takes_a_viewsets_own_lookup_url_kwarg(client, settings, sample_photos, private_coffee):
    """The router names the id's URL argument after ``lookup_url_kwarg`` (or ``lookup_field``), which
    ``similar(request, pk=None)`` did not take: every {id}/similar/ of such a viewset was a 500."""
    settings.ROOT_URLCONF = "tests.api_urls"
    pk = sample_photos["chelsea"].pk
    response = client.get(f"/test-api/photo-id/{pk}/similar/")
    assert response.status_code == 200, response.content
    assert pk not in ids(response) and len(ids(response)) > 0
    hidden, missing = (client.get(f"/test-api/photo-id/{p}/similar/") for p in (private_coffee.pk, 999999))
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()


def test_a_post_without_a_body_is_a_400_naming_image(client):
    """``curl -X POST search/``: no body and no Content-Type, which DRF parses to a plain dict (no
    ``getlist``): the check for a repeated ``image`` was a 500."""
    response = client.generic("POST", SEARCH, b"", content_type="")
    assert response.status_code == 400, response.content
    assert response.json() == {"image": ["Upload the query image in the image field."]}


@pytest.mark.parametrize(
    "pk", ["999999", "abc", "99999999999999999999999", "-1", "0", "550e8400-e29b-41d4-a716-446655440000", "1.5", "%00"]
)
def test_an_unknown_id_is_a_404(client, sample_photos, pk):
    response = client.get(similar_url(pk))
    assert response.status_code == 404
    assert response.json() == {"detail": "No Photo matches the given query."}


def test_an_id_written_otherwise_than_in_digits_is_a_404(client, sample_photos):
    """Django's lookup reads " 5", "+5", "0_5" and "٥" as 5: each was a second address of image 5's
    similar images, where the API reads every other number strictly."""
    pk = sample_photos["chelsea"].pk
    assert client.get(similar_url(pk)).status_code == 200
    arabic = str(pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for written in (f"%20{pk}", f"%2B{pk}", f"0_{pk}", arabic, f"{pk}%0A"):
        response = client.get(similar_url(written))
        assert response.status_code == 404, written
        assert response.json() == {"detail": "No Photo matches the given query."}


# -- schema and docs -----------------------------------------------------------------------------


def test_the_schema_and_the_browsable_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"get", "post"} <= set(paths["/api/photos/search/"])
    assert "/api/photos/{id}/similar/" in paths
    assert "get" in paths["/api/photos/"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


# -- image_url: the image the embedding field names ------------------------------------------------------


@pytest.mark.parametrize(("prefix", "shown"), [("two-picture", "picture"), ("two-thumbnail", "thumbnail")])
def test_image_url_is_the_image_of_the_embedding_field_searched(client, settings, prefix, shown):
    """``TwoImagePhoto``: the default embedding uses the second image field ``picture``;
    the ``two-thumbnail`` viewset searches ``thumbnail_embedding`` (on ``thumbnail``)."""
    settings.ROOT_URLCONF = "tests.api_urls"
    rng = np.random.default_rng(1)
    rows = []
    with embedding_deferred():
        for i in range(3):
            row = TwoImagePhoto()
            row.thumbnail.save(f"thumb-{i}.jpg", ContentFile(jpeg((32, 32))), save=False)
            row.picture.save(f"picture-{i}.jpg", ContentFile(jpeg((64, 64))), save=False)
            for field in ("embedding", "thumbnail_embedding"):
                setattr(row, f"{field}_status", "embedded")
                setattr(row, f"{field}_visual", l2_normalize(rng.normal(size=(1, 1280)).astype(np.float32))[0])
                setattr(row, f"{field}_semantic", l2_normalize(rng.normal(size=(1, 384)).astype(np.float32))[0])
            row.save()
            rows.append(row)
    response = client.get(f"/test-api/{prefix}/{rows[0].pk}/similar/")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert len(results) == 2
    by_id = {row.pk: row for row in rows}
    for result in results:
        assert result["image_url"] == "http://testserver" + getattr(by_id[result["id"]], shown).url


def test_search_sorts_its_best_matches_by_a_column(client, sample_photos, monkeypatch):
    """``ordering`` sorts the ``ordering_within`` best matches by a column, keeping their scores;
    without it the results stay best first."""
    from photos.api import PhotoSearchViewSet

    for stem, photo in sample_photos.items():
        Photo.objects.filter(pk=photo.pk).update(title=stem)
    monkeypatch.setattr(PhotoSearchViewSet, "ordering_within", 4)
    best = ids(client.get(SEARCH, {"q": "a cup of coffee", "limit": 4}))
    by_title = client.get(SEARCH, {"q": "a cup of coffee", "ordering": "title"}).json()["results"]
    assert {row["id"] for row in by_title} == set(best)  # the 4 best, not every photo
    assert [row["title"] for row in by_title] == sorted(row["title"] for row in by_title)
    assert all(row["score"] is not None for row in by_title)
    newest = ids(client.get(similar_url(sample_photos["chelsea"].pk), {"ordering": "-created_at"}))
    assert newest == sorted(newest, key=lambda pk: Photo.objects.get(pk=pk).created_at, reverse=True)
    floor = min(row["score"] for row in by_title) + 1e-6
    floored = client.get(SEARCH, {"q": "a cup of coffee", "ordering": "title", "min_score": floor}).json()
    assert len(floored["results"]) == 3 and floored["next"] is None


def test_words_matched_as_keywords_take_an_ordering_by_score(client, sample_photos, monkeypatch):
    """A viewset whose ``ordering_fields`` take ``score`` (docs/api.md): words the text model cannot
    read are matched unranked, and ``ordering=-score`` there was a 500 (ordered by ``score`` before
    the null score was annotated: a FieldError)."""
    from photos.api import PhotoSearchViewSet

    monkeypatch.setattr(PhotoSearchViewSet, "ordering_fields", ("score", "created_at"))
    cat, coffee = sample_photos["chelsea"], sample_photos["coffee"]
    Photo.objects.filter(pk__in=[cat.pk, coffee.pk]).update(alt_text="Рыжая кошка")
    for ordering in ("-score", "score"):
        response = client.get(SEARCH, {"q": "кошка", "ordering": ordering})
        assert response.status_code == 200, response.content
        assert ids(response) == sorted([cat.pk, coffee.pk]) and "note" in response.json()
    floored = client.get(SEARCH, {"q": "кошка", "min_relevance": 0.99, "min_score": 0.9})  # docs/api.md: checked,
    assert ids(floored) == sorted([cat.pk, coffee.pk])  # but they cut no keyword match
    assert client.get(SEARCH, {"q": "кошка", "min_relevance": 2}).status_code == 400
    ranked = client.get(SEARCH, {"q": "a cat", "ordering": "-score"}).json()["results"]
    assert [row["score"] for row in ranked] == sorted((row["score"] for row in ranked), reverse=True)


@pytest.mark.parametrize(
    ("path", "query", "status"),
    [
        (SEARCH, "q=cat&ordering=owner", 400),
        (SEARCH, "q=cat&ordering=", 400),
        (SEARCH, "q=cat&ordering=title&ordering=-title", 400),
        ("/api/photos/", "ordering=title", 400),  # the plain list keeps the site's order
    ],
)
def test_a_bad_ordering_is_a_400_naming_it(client, sample_photos, path, query, status):
    response = client.get(f"{path}?{query}")
    assert response.status_code == status, response.content
    assert "ordering" in json.dumps(response.json()), response.json()  # the body names it


def test_the_schema_offers_ordering_on_the_ranked_actions_only(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    def ordering(path: str) -> list:
        return [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "ordering"]

    (param,) = ordering("/api/photos/search/")
    assert sorted(param["schema"]["enum"]) == ["-created_at", "-title", "created_at", "title"]
    assert len(ordering("/api/photos/{id}/similar/")) == 1
    assert ordering("/api/photos/") == []


def test_a_storage_fault_keeps_the_servers_path_out_of_the_row_and_its_details_out_of_the_api(
    client, make_photo, sample_paths, settings
):
    """A file the storage cannot read (here a folder in its place: EISDIR) fails the row with the
    file's name and the reason, not the server's absolute path; the public 409 says a temporary
    error, not the storage's own words."""
    from pathlib import Path

    from django_semantic_images.pipeline import embed_pks
    from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX

    photo, neighbour = make_photo(sample_paths["rocket"]), make_photo(sample_paths["coffee"])
    path = Path(photo.image.path)
    data = path.read_bytes()
    path.unlink()
    path.mkdir()
    try:
        embed_pks(Photo, [photo.pk, neighbour.pk])  # one good file: the storage is not gone
    finally:
        path.rmdir()
        path.write_bytes(data)
    error = Photo.objects.get(pk=photo.pk).embedding_error
    assert error.startswith(TRANSIENT_PREFIX) and repr(photo.image.name) in error and "Is a directory" in error
    assert str(settings.MEDIA_ROOT) not in error, error
    response = client.get(similar_url(photo.pk))
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Photo {photo.pk} could not be embedded (status: failed): a temporary error; it will be tried again."
    }


def test_a_fault_that_kept_coming_back_keeps_its_details_out_of_the_api(client, make_photo, sample_paths):
    """After the last try (``Gave up after 5 attempts: ...``) the fault's own words, which may name
    the database's host, still stay with the staff."""
    from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX, transient_error

    photo = make_photo(sample_paths["rocket"])
    reason = 'OperationalError: connection to server at "db-primary.internal" (10.0.0.5), port 5432 failed'
    error = transient_error(f"{TRANSIENT_PREFIX}(attempt 4 of 5) {reason}", reason)
    assert error.startswith("Gave up after 5 attempts: ")
    Photo.objects.filter(pk=photo.pk).update(embedding_status="failed", embedding_error=error)
    response = client.get(similar_url(photo.pk))
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith(f"Photo {photo.pk} could not be embedded (status: failed): temporary errors")
    assert "db-primary" not in detail and "10.0.0.5" not in detail, detail


def test_the_plain_list_pages_past_the_searches_offset_cap(client, make_photo, monkeypatch):
    """The cap on ``offset`` is for ranked pages (an index walk of offset + limit rows); the plain
    list ended silently at it (``next`` null after 1,020 rows), with rows never listed."""
    from django_semantic_images.api.pagination import RankedPagination

    monkeypatch.setattr(RankedPagination, "max_offset", 2)
    first = make_photo(b"not decoded here", name="import.jpg")
    Photo.objects.bulk_create([Photo(image=first.image.name) for _ in range(6)])
    seen = [row["id"] for page in walk(client, "/api/photos/", {"limit": 2}) for row in page]
    assert sorted(seen) == sorted(Photo.objects.values_list("pk", flat=True))
    assert client.get("/api/photos/", {"offset": 6}).status_code == 200
    assert client.get("/api/photos/", {"offset": 2**63 - 1}).json()["results"] == []  # PostgreSQL's last OFFSET
    too_far = client.get("/api/photos/", {"offset": 2**63})
    assert too_far.status_code == 400 and too_far.json() == {"offset": [f"offset must be at most {2**63 - 1}."]}
    response = client.get(SEARCH, {"q": "a photo", "offset": 4})  # a search keeps its cap
    assert response.status_code == 400 and "offset" in response.json()


def test_an_encoder_that_cannot_load_is_a_503_with_a_message(client, settings, caplog):
    """A text model that is not there (weights missing, a hub unreachable) made every search by words
    and by photo a 500 with no message; it is a 503 saying the search is unavailable, logged."""
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": "/nonexistent/text-model"}}
    by_words = client.get(SEARCH, {"q": "coffee"})
    by_photo = client.post(SEARCH, {"image": upload(jpeg())}, format="multipart")
    for response in (by_words, by_photo):
        assert response.status_code == 503, response.content
        assert "unavailable" in response.json()["detail"]
    assert "/nonexistent/text-model" in caplog.text
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert all("503" in schema["paths"][SEARCH][method]["responses"] for method in ("get", "post"))
