"""REST search API against real PostgreSQL + pgvector and the real models.

Each endpoint, the permission filter (also through /similar/), filters composing
with the ranking, paging without duplicates or gaps, throttling, and every kind
of bad input the API must answer with a 4xx and a message.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageOps
from rest_framework.test import APIClient

from django_semantic_images.pipeline import embed_instances
from photos.models import Photo
from tests.conftest import image_bytes

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
    assert set(first) == {"id", "title", "alt_text", "score", "image_url", "thumbnail_url", "created_at"}
    assert first["image_url"].startswith("http://testserver/media/photos/")
    assert first["thumbnail_url"] is None
    scores = [row["score"] for row in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert "offset=5" in body["next"]


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


def test_similar_to_a_photo_not_embedded_yet_is_a_conflict(client, make_photo, sample_paths):
    pending = make_photo(sample_paths["rocket"])
    response = client.get(similar_url(pending.pk))
    assert response.status_code == 409
    assert "no visual vector yet" in response.json()["detail"]


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
        ("q=%FF%FEcat", 400, "detail", "not valid UTF-8"),
        ("q=cat&limit=ten", 400, "limit", "whole number"),
        ("q=cat&limit=0", 400, "limit", "at least 1"),
        ("q=cat&offset=-1", 400, "offset", "at least 0"),
        ("q=cat&min_score=nan", 400, "min_score", "from -1 to 1"),
        ("q=cat&min_score=2", 400, "min_score", "from -1 to 1"),
        ("q=cat&owner=someone", 400, "owner", "whole number"),
        ("q=cat&owner=", 400, "owner", "This filter is empty"),
        ("q=cat&created_after=2026-13-45", 400, "created_after", "valid date"),
    ],
    ids=[
        "empty",
        "whitespace",
        "100KB",
        "missing",
        "unsupported",
        "non-utf8",
        "limit-word",
        "limit-zero",
        "offset-negative",
        "floor-nan",
        "floor-range",
        "filter-value",
        "filter-empty",
        "filter-date",
    ],
)
def test_bad_text_queries_get_a_400_with_a_message(client, query, status, field, message):
    response = client.get(f"{SEARCH}?{query}")
    assert response.status_code == status, response.content
    body = response.json()
    text = body[field] if isinstance(body[field], str) else " ".join(body[field])
    assert message in text


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
        ({"image": upload(jpeg()[:6000])}, 400, "image", "truncated"),
        ({"image": upload(png_claiming(60_000, 60_000), "bomb.png", "image/png")}, 400, "image", "too large"),
        ({"image": upload(png_claiming(8_000, 8_000), "bomb.png", "image/png")}, 400, "image", "over the limit"),
        ({"image": upload(b"", "empty.jpg")}, 400, "image", "empty"),
        ({}, 400, "image", "Upload the query image"),
        ({"image": "just text"}, 400, "image", "as a file"),
        ({"image": upload(jpeg()), "colour": "red"}, 400, "detail", "Unsupported parameter(s) in the form body"),
    ],
    ids=["non-image", "truncated", "bomb-header", "over-pixel-cap", "empty-file", "missing", "not-a-file", "extra"],
)
def test_bad_uploads_get_a_400_with_a_message(client, payload, status, field, message):
    response = client.post(SEARCH, payload, format="multipart")
    assert response.status_code == status, response.content
    body = response.json()
    text = body[field] if isinstance(body[field], str) else " ".join(body[field])
    assert message in text


@pytest.mark.parametrize("size", [(200, 200), (1200, 1200)], ids=["over-cap", "far-over-cap"])
def test_an_oversized_upload_is_refused_with_413(client, small_uploads, size):
    data = jpeg(size, quality=95)
    assert len(data) > 20_000
    response = client.post(SEARCH, {"image": upload(data)}, format="multipart")
    assert response.status_code == 413, response.content
    assert "limit is 20,000 bytes" in response.json()["detail"]


def test_a_json_body_is_an_unsupported_media_type(client):
    response = client.post(SEARCH, {"image": "aGVsbG8="}, format="json")
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]


@pytest.mark.parametrize("pk", ["999999", "abc", "99999999999999999999999", "-1"])
def test_an_unknown_id_is_a_404(client, sample_photos, pk):
    response = client.get(similar_url(pk))
    assert response.status_code == 404
    assert "detail" in response.json()


# -- schema and docs -----------------------------------------------------------------------------


def test_the_schema_and_the_browsable_docs_are_served(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"get", "post"} <= set(paths["/api/photos/search/"])
    assert "/api/photos/{id}/similar/" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
