"""Frontends: Wagtail's images API v2 ranked by ``?semantic=`` / ``?similar_to=``, and the
package's REST search API over Wagtail images with Wagtail's collection permissions."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageOps, features
from rest_framework.test import APIClient
from wagtail.models import Collection, CollectionViewRestriction

from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db

V2 = "/api/v2/images/"
SEARCH = "/api/wagtail/images/search/"


def similar_url(pk: object) -> str:
    return f"/api/wagtail/images/{pk}/similar/"


@pytest.fixture
def api() -> APIClient:
    cache.clear()  # throttle history
    return APIClient()


def v2(api: APIClient, **params) -> dict:
    response = api.get(V2, params)
    assert response.status_code == 200, response.content
    return response.json()


def item_ids(body: dict) -> list[int]:
    return [item["id"] for item in body["items"]]


def result_ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# -- Wagtail's images API v2 --------------------------------------------------------------


def test_v2_rankings_are_throttled_with_the_text_search_scope(api, sample_images, settings):
    """Each ranked listing runs the text model or an HNSW search: throttled as the REST API's text
    searches are; Wagtail's plain listing is not."""
    rates = {"semantic_search": "2/min", "semantic_image_search": None}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    v2(api, semantic="a cat")
    v2(api, similar_to=sample_images["chelsea"].pk)
    throttled = api.get(V2, {"semantic": "a dog"})
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert "throttled" in throttled.json()["message"]
    v2(api)


def test_v2_semantic_ranks_the_cat_first_with_a_score(api, sample_images):
    body = v2(api, semantic="a cat")
    assert item_ids(body)[0] == sample_images["chelsea"].pk
    assert body["meta"]["total_count"] == len(sample_images)
    scores = [item["meta"]["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
    assert set(body["items"][0]) == {"id", "meta", "title"}
    assert set(body["items"][0]["meta"]) == {"type", "detail_url", "tags", "download_url", "score"}
    assert item_ids(v2(api, semantic="a cup of coffee"))[0] == sample_images["coffee"].pk
    # The plain listing is Wagtail's: by id, no score.
    plain = v2(api)
    assert item_ids(plain) == sorted(image.pk for image in sample_images.values())
    assert all("score" not in item["meta"] for item in plain["items"])


def test_v2_keeps_wagtails_other_parameters(api, sample_images):
    ranked = item_ids(v2(api, semantic="a cat"))
    assert item_ids(v2(api, semantic="a cat", limit=2, offset=1)) == ranked[1:3]
    assert v2(api, semantic="a cat", limit=2)["meta"]["total_count"] == len(sample_images)
    body = v2(api, semantic="a cat", fields="_,id,score")
    assert item_ids(body) == ranked and set(body["items"][0]) == {"id", "meta"}
    assert set(body["items"][0]["meta"]) == {"score"}
    assert "title" not in v2(api, semantic="a cat", fields="-title")["items"][0]
    # Field filters narrow what is ranked.
    assert item_ids(v2(api, semantic="a cat", title="IMG_0001")) == [sample_images["coffee"].pk]
    sample_images["coffee"].tags.add("drink")
    sample_images["rocket"].tags.add("drink")
    assert item_ids(v2(api, semantic="a cup of coffee", tags="drink")) == [
        sample_images["coffee"].pk,
        sample_images["rocket"].pk,
    ]
    # Without a ranking, order and search are Wagtail's.
    titles = [item["title"] for item in v2(api, order="-title")["items"]]
    assert titles == sorted(titles, reverse=True)
    assert item_ids(v2(api, search="IMG_0002")) == [sample_images["rocket"].pk]


def test_v2_ranking_is_throttled_in_the_search_apis_scope(api, settings):
    """A ranked listing runs the text model as the REST API's search does; it was never throttled."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"semantic_search": "2/min"}}
    assert [api.get(V2, {"semantic": "a cat"}).status_code for _ in range(3)] == [200, 200, 429]
    assert api.get(V2, {"similar_to": "1"}).status_code == 429
    assert api.get(V2).status_code == 200  # Wagtail's plain listing is no search


def test_v2_similar_to_ranks_by_likeness_and_leaves_the_image_out(api, sample_images):
    cat = sample_images["chelsea"]
    body = v2(api, similar_to=cat.pk)
    assert cat.pk not in item_ids(body) and len(body["items"]) == len(sample_images) - 1
    scores = [item["meta"]["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert item_ids(v2(api, similar_to=cat.pk, limit=1)) == item_ids(body)[:1]


def test_v2_respects_collection_view_restrictions_and_hidden_answers_like_missing(
    api, make_image, embed, sample_paths, django_user_model
):
    root = Collection.get_first_root_node()
    private = root.add_child(name="Members only")
    CollectionViewRestriction.objects.create(collection=private, restriction_type=CollectionViewRestriction.LOGIN)
    cat = make_image(sample_paths["chelsea"], "IMG_0001", collection=private)
    others = [make_image(sample_paths[stem], f"IMG_{i}") for i, stem in enumerate(("coffee", "rocket"), start=2)]
    embed(cat, *others)
    body = v2(api, semantic="a cat")
    found = item_ids(body)
    assert cat.pk not in found and set(found) == {image.pk for image in others}
    assert body["meta"]["total_count"] == len(others)  # the hidden cat is not counted either
    hidden, missing = api.get(V2, {"similar_to": cat.pk}), api.get(V2, {"similar_to": cat.pk + 1000})
    assert hidden.status_code == missing.status_code == 400
    assert hidden.json() == missing.json() == {"message": "similar_to image doesn't exist"}
    api.force_login(django_user_model.objects.create_user("member", "m@example.com", "password"))
    assert item_ids(v2(api, semantic="a cat"))[0] == cat.pk
    assert set(item_ids(v2(api, similar_to=cat.pk))) == {image.pk for image in others}


def test_v2_ranked_total_count_is_what_paging_through_the_listing_gives(api, indexed_images):
    """The HNSW index is approximate: it reached 1,992 of 2,000 random vectors, so a count of
    every image with vectors (1,999) promised pages that came short (offset 1990: 2 items, not 9).
    A ranked listing holds the nearest ``max_ranked`` (1,000) that the index gives, and counts them."""
    images, _vectors = indexed_images("visual", [Collection.get_first_root_node()])
    params = {"similar_to": images[0].pk, "fields": "_,id"}
    total = v2(api, **params)["meta"]["total_count"]
    assert len(v2(api, **params, offset=total - 9)["items"]) == 9  # the last page is as counted
    assert total == 1000
    assert v2(api, **params, offset=1000)["items"] == []
    # An unranked listing is Wagtail's: every image counted.
    assert v2(api, fields="_,id")["meta"]["total_count"] == len(images) + 1


ONCE = "semantic must be given once; it was given 2 times"
RANKED = "{} cannot be combined with {}; results are ranked by {}"
NOT_INTEGER = "similar_to must be a positive integer"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"semantic": ""}, "semantic error: The search text is empty."),
        ({"semantic": " \u200b "}, "semantic error: The search text is empty."),
        ({"semantic": "x" * 5000}, "semantic error: The search text is longer than"),
        ({"semantic": ["a cat", "a dog"]}, ONCE),
        ({"semantic": "a cat", "order": "title"}, RANKED.format("semantic", "order", "semantic")),
        ({"semantic": "a cat", "order": "random"}, RANKED.format("semantic", "order", "semantic")),
        ({"semantic": "a cat", "search": "cat"}, RANKED.format("semantic", "search", "semantic")),
        ({"semantic": "a cat", "similar_to": "1"}, "semantic and similar_to cannot be combined; give one of them"),
        ({"similar_to": ""}, NOT_INTEGER),
        ({"similar_to": "abc"}, NOT_INTEGER),
        ({"similar_to": "0"}, NOT_INTEGER),
        ({"similar_to": "-3"}, NOT_INTEGER),
        ({"similar_to": "\u0661"}, NOT_INTEGER),  # an Arabic-Indic digit one
        ({"similar_to": "1.0"}, NOT_INTEGER),
        ({"similar_to": "99999999999999999999999"}, "similar_to image doesn't exist"),
        ({"similar_to": "1", "search": "x"}, RANKED.format("similar_to", "search", "similar_to")),
        # Wagtail's own checks still answer with their messages.
        ({"semantic": "a cat", "limit": "many"}, "limit must be a positive integer"),
        # Past PostgreSQL's bigint: Wagtail's paging passed it on to the database (a 500).
        ({"semantic": "a cat", "offset": "9" * 30}, "offset cannot be higher than 9223372036854775807"),
        ({"offset": "9223372036854775808"}, "offset cannot be higher than 9223372036854775807"),
        # More digits than Python's int() reads (4,300): they were a ValueError (a 500).
        ({"offset": "9" * 5000}, "offset cannot be higher than 9223372036854775807"),
        ({"semantic": "a cat", "limit": "9" * 5000}, "limit cannot be higher than 9223372036854775807"),
        # Other forms Wagtail's int() reads: digit groups, Arabic-Indic digits (they were a 500 too).
        ({"offset": "9_" * 20 + "9"}, "offset cannot be higher than 9223372036854775807"),
        ({"semantic": "a cat", "offset": "\u0669" * 25}, "offset cannot be higher than 9223372036854775807"),
        ({"similar_to": "9" * 5000}, "similar_to image doesn't exist"),
        ({"similar_to": "0" * 5000}, NOT_INTEGER),
        ({"semantic": "a cat", "fields": "nope"}, "unknown fields: nope"),
        # A format no renderer writes: Wagtail's 404 with an empty message.
        ({"semantic": "a cat", "format": "xml"}, "format must be one of: json, api"),
        ({"semantic": "a cat", "colour": "red"}, "query parameter is not an operation or a recognised field: colour"),
        # A NUL character, which PostgreSQL refuses in text: Wagtail's search and field filters passed it on (a 500).
        ({"search": "a\x00cat"}, "search cannot contain NUL characters"),
        ({"title": "IMG\x00"}, "title cannot contain NUL characters"),
        # Wagtail passed an unknown operator to its search backend (a ValueError, a 500) ...
        ({"search": "cat", "search_operator": "xor"}, "search_operator must be 'and' or 'or'"),
        # Wagtail's search backend nests one condition per word: thousands of words were a RecursionError (a 500).
        ({"search": "a\xa0b " * 1500}, "search: the search text is longer than"),
        # ... and ?tags= with a later field filter and ?search= got a message naming no parameter.
        ({"tags": "cat", "width": "640", "search": "cat"}, "tags cannot be combined with search"),
    ],
)
def test_v2_bad_parameters_are_400_naming_them(api, params, message):
    response = api.get(V2, params)
    assert response.status_code == 400, response.content
    assert response.json()["message"].startswith(message)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        # Wagtail's search backend raised ValueError on an unknown operator here too: a 500.
        ({"search": "IMG_0000", "search_operator": "xor"}, "search_operator must be 'and' or 'or'"),
        ({"search": "IMG\x00"}, "search cannot contain NUL characters"),
        ({"search": " ".join(["a"] * 250)}, "search: more than 64 words"),
        ({"search": "x" * 5000}, "search: the search text is longer than"),
        # Wagtail answered "cannot filter by 'name' while searching", naming no parameter.
        ({"tags": "cat", "width": "640", "search": "IMG_0000"}, "tags cannot be combined with search"),
    ],
)
def test_v2_detail_view_checks_the_filters_values_as_the_listing_does(api, sample_images, params, message):
    """The detail view runs the listing's filters (Wagtail's ``get_object``), but none of the listing's
    checks of their values: ``?search_operator=xor`` reached Wagtail's search backend, a 500."""
    response = api.get(f"{V2}{sample_images['chelsea'].pk}/", params)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["message"].startswith(message)


def test_v2_detail_view_with_search_finds_the_image_when_the_words_match_it(
    api, sample_images, make_image, sample_paths
):
    """Wagtail's search gives results that are no queryset: its detail view looked the image up in them
    with ``get()``, which they lack, so any ``?search=`` was a 404 with an empty message, even for the
    visible image the words find. The search narrows the detail view as the other filters do."""
    cat, coffee = sample_images["chelsea"], sample_images["coffee"]  # titled IMG_0000 and IMG_0001
    found = api.get(f"{V2}{cat.pk}/", {"search": "IMG_0000"})
    assert found.status_code == 200, found.content[:300]
    assert found.json()["id"] == cat.pk and found.json()["title"] == "IMG_0000"
    assert (
        api.get(f"{V2}{cat.pk}/", {"search": "IMG_0000", "search_operator": "or", "order": "title"}).status_code == 200
    )
    not_found = {"message": "No Image matches the given query."}
    # Words that find another image, or none: the image is not among the results, as a missing one.
    root = Collection.get_first_root_node()
    private = root.add_child(name="Private")
    CollectionViewRestriction.objects.create(collection=private, restriction_type=CollectionViewRestriction.LOGIN)
    hidden = make_image(sample_paths["rocket"], "IMG_0100", collection=private)
    for pk, words in (
        (cat.pk, "IMG_0001"),
        (coffee.pk, "IMG_0000"),
        (hidden.pk, "IMG_0100"),
        (hidden.pk + 1000, "x"),
        ("9" * 25, "x"),
    ):
        response = api.get(f"{V2}{pk}/", {"search": words})
        assert response.status_code == 404, (pk, words, response.content[:300])
        assert response.json() == not_found


def test_the_admin_apis_detail_view_checks_and_searches_as_the_public_one(superuser_client, sample_images):
    """The admin API's images endpoint (``/admin/api/main/images/``) has the same base
    (``CheckedImagesAPIViewSet``): its detail view too."""
    from django.urls import reverse

    cat = sample_images["chelsea"]
    url = reverse("wagtailadmin_api:images:detail", args=(cat.pk,))
    bad = superuser_client.get(url, {"search": "IMG_0000", "search_operator": "xor"})
    assert (bad.status_code, bad.json()) == (400, {"message": "search_operator must be 'and' or 'or'"})
    assert superuser_client.get(url, {"search": "IMG_0000"}).json()["id"] == cat.pk
    other = superuser_client.get(url, {"search": "IMG_0001"})
    assert (other.status_code, other.json()) == (404, {"message": "No Image matches the given query."})


@pytest.mark.parametrize("raw", ["abc", "", "1.5", "a\x00"])
def test_v2_find_with_an_id_that_is_not_a_number_is_400_naming_it(api, sample_images, raw):
    """Wagtail's ``find/?id=`` passed the id to the database lookup as it was: a ValueError, a 500."""
    response = api.get(V2 + "find/", {"id": raw})
    assert response.status_code == 400, response.content[:300]
    assert response.json() == {"message": "id must be an integer"}
    found = api.get(V2 + "find/", {"id": sample_images["chelsea"].pk})
    assert found.status_code == 302 and urlsplit(found["Location"]).path == f"{V2}{sample_images['chelsea'].pk}/"
    assert api.get(V2 + "find/", {"id": "9" * 30}).status_code == 404  # a number no image has: not found


def test_v2_find_reads_the_id_as_similar_to_does_only_in_ascii_digits(api, sample_images):
    """Wagtail's lookup reads " 5", "+5", "٥" as 5 and "0_5" as 5, "1_2" as 12: each was another
    address of an image (``find/?id=1_2`` found image 12), where ``similar_to`` and the REST API
    read ids strictly."""
    pk = sample_images["chelsea"].pk
    arabic = str(pk).translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    for written in (f" {pk}", f"+{pk}", f"0_{pk}", arabic, f"{pk}\n", f"{pk}.0"):
        response = api.get(V2 + "find/", {"id": written})
        assert response.status_code == 400, (written, response.status_code)
        assert response.json() == {"message": "id must be an integer"}
    assert api.get(V2 + "find/", {"id": "-1"}).status_code == 404  # a number, which no image has


def test_v2_search_words_up_to_the_limit_are_answered(api):
    """As many one-letter words as ``?search=`` takes: an answer, not a RecursionError; one more, a 400."""
    from django_semantic_images.contrib.wagtail.api import MAX_SEARCH_WORDS

    response = api.get(V2, {"search": " ".join(["a"] * MAX_SEARCH_WORDS)})
    assert response.status_code == 200, response.content[:300]
    response = api.get(V2, {"search": " ".join(["a"] * (MAX_SEARCH_WORDS + 1))})
    assert response.status_code == 400
    assert response.json() == {"message": f"search: more than {MAX_SEARCH_WORDS} words"}
    # Wagtail's backend also cuts at hyphens: 250 terms in one "word" were a RecursionError (a 500).
    assert api.get(V2, {"search": "-".join(["a"] * MAX_SEARCH_WORDS)}).status_code == 200
    response = api.get(V2, {"search": "-".join(["a"] * 250)})
    assert response.status_code == 400, response.content[:300]
    assert response.json() == {"message": f"search: more than {MAX_SEARCH_WORDS} words"}


def test_v2_bad_utf8_and_pending_anchor_are_400(api, make_image, sample_paths):
    response = api.generic("GET", V2 + "?semantic=%ff%fe")
    assert response.status_code == 400
    assert response.json() == {"message": "semantic is not valid UTF-8; percent-encode UTF-8 bytes"}
    response = api.generic("GET", V2 + "?semantic=cat&title=%ff")  # the parameter that is not UTF-8
    assert response.status_code == 400
    assert response.json() == {"message": "title is not valid UTF-8; percent-encode UTF-8 bytes"}
    pending = make_image(sample_paths["coffee"], "IMG_0009")  # its vectors are not made
    response = api.get(V2, {"similar_to": pending.pk})
    assert response.status_code == 400
    assert response.json() == {"message": "similar_to image has no vectors yet (status: pending); try again later"}


def test_v2_similar_to_an_image_whose_embedding_failed_names_the_reason(api, make_image):
    """Not "try again later": a failed image gets no vectors by waiting (the REST API's 409 says why too)."""
    from django_semantic_images.contrib.wagtail.models import ImageVectors
    from django_semantic_images.pipeline import embed_pks

    broken = make_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "logo")
    reason = embed_pks(ImageVectors, [broken.pk]).failed[broken.pk]
    response = api.get(V2, {"similar_to": broken.pk})
    assert response.status_code == 400
    assert response.json() == {"message": f"similar_to image could not be embedded (status: failed): {reason}"}


# -- the package's REST search API over Wagtail images ---------------------------------------


def test_rest_search_over_wagtail_images_never_shows_another_groups_collection(api, two_collections):
    cat, others = two_collections["cat"], two_collections["others"]
    api.force_login(two_collections["products_editor"])
    found = result_ids(api.get(SEARCH, {"q": "a cat"}))
    assert cat.pk not in found and set(found) == {image.pk for image in others}
    assert cat.pk not in result_ids(api.get("/api/wagtail/images/"))
    assert cat.pk not in result_ids(api.get(similar_url(others[0].pk)))
    # Similar to the hidden cat answers exactly like an image that does not exist.
    hidden, missing = api.get(similar_url(cat.pk)), api.get(similar_url(cat.pk + 1000))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    api.force_login(two_collections["pets_editor"])
    assert result_ids(api.get(SEARCH, {"q": "a cat"})) == [cat.pk]
    assert result_ids(api.get(similar_url(cat.pk))) == []  # nothing else in Pets
    assert api.get(similar_url(others[0].pk)).json() == missing.json()


def test_rest_search_over_wagtail_images_shows_anonymous_callers_nothing(api, two_collections):
    assert result_ids(api.get(SEARCH, {"q": "a cat"})) == []
    missing = api.get(similar_url(10**6))
    hidden = api.get(similar_url(two_collections["cat"].pk))
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()


def test_rest_search_result_fields_and_search_by_photo(api, two_collections, sample_paths, django_user_model):
    api.force_login(django_user_model.objects.create_superuser("admin", "admin@example.com", "password"))
    response = api.get(SEARCH, {"q": "a cat", "limit": 2})
    first = response.json()["results"][0]
    assert first["id"] == two_collections["cat"].pk
    assert set(first) == {"id", "title", "description", "score", "relevance", "image_url", "thumbnail_url"}
    assert first["image_url"].startswith("http://testserver/media/original_images/")
    assert first["thumbnail_url"].startswith("http://testserver/media/images/")
    flipped = ImageOps.mirror(Image.open(sample_paths["astronaut"]).convert("RGB"))
    upload = SimpleUploadedFile("query.jpg", image_bytes(flipped), "image/jpeg")
    found = result_ids(api.post(SEARCH + "?limit=2", {"image": upload}, format="multipart"))
    assert found[0] == two_collections["others"][2].pk
    # The package's strict parameters hold here too.
    response = api.get(SEARCH, {"q": "a cat", "limit": "2.0"})
    assert response.status_code == 400 and "limit" in response.json()


def test_rest_similar_to_a_pending_wagtail_image_is_409(api, make_image, sample_paths, django_user_model):
    api.force_login(django_user_model.objects.create_superuser("admin", "admin@example.com", "password"))
    pending = make_image(sample_paths["coffee"], "IMG_0009")
    response = api.get(similar_url(pending.pk))
    assert response.status_code == 409
    assert "has not been embedded yet (status: pending)" in response.json()["detail"]


def test_a_public_rule_as_docs_wagtail_md_shows_it(make_image, embed, sample_paths):
    """docs/wagtail.md: override ``get_queryset()`` to search what Wagtail's public API shows."""
    from rest_framework.test import APIRequestFactory
    from wagtail.api.v2.utils import get_restricted_collection_ids
    from wagtail.images import get_image_model

    from django_semantic_images.contrib.wagtail.search_api import WagtailImageSearchViewSet

    class PublicImageSearchViewSet(WagtailImageSearchViewSet):
        def get_queryset(self):
            return get_image_model().objects.exclude(collection__in=get_restricted_collection_ids(self.request))

    private = Collection.get_first_root_node().add_child(name="Members only")
    CollectionViewRestriction.objects.create(collection=private, restriction_type=CollectionViewRestriction.LOGIN)
    cat = make_image(sample_paths["chelsea"], "IMG_0001", collection=private)
    public = [make_image(sample_paths[stem], f"IMG_{i}") for i, stem in enumerate(("coffee", "horse"), start=2)]
    embed(cat, *public)
    view = PublicImageSearchViewSet.as_view({"get": "search"})
    response = view(APIRequestFactory().get(SEARCH, {"q": "a cat"}))
    assert response.status_code == 200
    assert {row["id"] for row in response.data["results"]} == {image.pk for image in public}  # not the cat


def test_the_base_result_serializer_follows_a_wagtail_image_to_its_file(make_image, embed, sample_paths):
    """docs/api.md: a model with its vectors beside it needs nothing set, its serializer overriding
    ``get_image_url``; the base's ``thumbnail_url`` (and ``image_url``) still looked for an
    ImageEmbeddingField on the image model itself: every page was a 500 (LookupError)."""
    from rest_framework.test import APIRequestFactory, force_authenticate
    from wagtail.images import get_image_model

    from django_semantic_images.api import SemanticResultSerializer
    from django_semantic_images.contrib.wagtail.search_api import WagtailImageSearchViewSet

    class PlainResultSerializer(SemanticResultSerializer):
        class Meta:
            model = get_image_model()
            fields = ["id", "image_url", "thumbnail_url"]

    class PlainViewSet(WagtailImageSearchViewSet):
        serializer_class = PlainResultSerializer

    image = make_image(sample_paths["coffee"], "IMG_0001")
    embed(image)
    request = APIRequestFactory().get(SEARCH, {"q": "a cup of coffee"})
    force_authenticate(request, get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    response = PlainViewSet.as_view({"get": "search"})(request)
    assert response.status_code == 200, response.data
    (row,) = response.data["results"]
    assert row["image_url"] == f"http://testserver{image.file.url}"
    assert row["thumbnail_url"].startswith("http://testserver/media/cache/")


def test_rest_thumbnail_is_a_rendition_made_once_that_fits_thumbnail_size(api, make_image, sample_paths, settings):
    """``thumbnail_url`` is a Wagtail rendition (``max-400x400`` by default, from ``THUMBNAIL_SIZE``),
    made once; a lost file gives null, not an error."""
    api.force_login(get_user_model().objects.create_superuser("admin", "admin@example.com", "password"))
    big = make_image(sample_paths["hubble_deep_field"], "IMG_0001")  # 1000 x 872
    lost = make_image(sample_paths["coffee"], "IMG_0002")
    lost.file.storage.delete(lost.file.name)

    def thumbnails() -> dict[int, str | None]:
        response = api.get("/api/wagtail/images/")
        assert response.status_code == 200, response.content
        return {row["id"]: row["thumbnail_url"] for row in response.json()["results"]}

    def stored(url: str) -> Path:
        return Path(settings.MEDIA_ROOT) / urlsplit(url).path.removeprefix(settings.MEDIA_URL)

    first = thumbnails()
    assert first[lost.pk] is None
    with Image.open(stored(first[big.pk])) as image:
        assert image.width == 400 and abs(image.height - 872 * 0.4) < 1
    made = stored(first[big.pk]).stat().st_mtime_ns
    assert thumbnails()[big.pk] == first[big.pk] and stored(first[big.pk]).stat().st_mtime_ns == made
    assert [rendition.filter_spec for rendition in big.renditions.all()] == ["max-400x400"]
    settings.SEMANTIC_IMAGES = {"THUMBNAIL_SIZE": 120}
    with Image.open(stored(thumbnails()[big.pk])) as image:
        assert image.width == 120 and abs(image.height - 872 * 0.12) < 1


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_rest_thumbnail_of_a_file_broken_in_storage_is_null_not_an_error(api, make_image, sample_paths):
    """A stored file that no longer decodes (an AVIF's picture zeroed: Pillow's RuntimeError, not
    OSError) made every page listing it a 500."""
    from tests.test_imaging import corrupt_avif

    api.force_login(get_user_model().objects.create_superuser("admin", "admin@example.com", "password"))
    good = make_image(sample_paths["coffee"], "IMG_0001")
    broken = make_image(sample_paths["rocket"], "IMG_0002")
    with broken.file.storage.open(broken.file.name, "wb") as stored:
        stored.write(corrupt_avif())
    response = api.get("/api/wagtail/images/")
    assert response.status_code == 200, response.content
    thumbnails = {row["id"]: row["thumbnail_url"] for row in response.json()["results"]}
    assert thumbnails[broken.pk] is None and thumbnails[good.pk]


def test_rest_search_over_wagtail_images_is_calibrated_on_the_joined_vectors(
    api, sample_images, django_user_model, monkeypatch
):
    """The reference sample comes from the table of vectors beside Wagtail's images; each
    result carries its relevance and ``min_relevance`` cuts by it."""
    from django_semantic_images import calibration

    monkeypatch.setattr(calibration, "MIN_REFERENCE", 2)  # six images: calibrate them anyway
    api.force_login(django_user_model.objects.create_superuser("admin", "admin@example.com", "password"))
    everything = api.get(SEARCH, {"q": "a cat"}).json()["results"]
    relevances = [row["relevance"] for row in everything]
    assert len(everything) == len(sample_images) and relevances == sorted(relevances, reverse=True)
    assert relevances[0] == (len(sample_images) - 1) / (len(sample_images) + 1) > relevances[-1]  # not itself
    kept = api.get(SEARCH, {"q": "a cat", "min_relevance": relevances[1]}).json()
    assert [row["id"] for row in kept["results"]] == [row["id"] for row in everything[:2]]


def test_v2_semantic_words_the_text_model_cannot_read_are_matched_as_keywords_with_a_note(
    api, sample_images, make_image, embed, sample_paths
):
    """MiniLM reads Latin script only: Cyrillic words would rank every image by noise. The
    endpoint answers with Wagtail's keyword matches instead, unranked, and says so in ``meta``."""
    cat = make_image(sample_paths["chelsea"], "кошка на диване")
    embed(cat)
    body = v2(api, semantic="кошка")
    assert item_ids(body) == [cat.pk] and body["meta"]["total_count"] == 1
    assert "cannot read Cyrillic" in body["meta"]["note"]
    assert "score" not in body["items"][0]["meta"]
    assert item_ids(v2(api, semantic="кошка", title="IMG_0000")) == []  # field filters still apply
    assert "note" not in v2(api, semantic="a cat")["meta"]


def test_rest_search_words_the_text_model_cannot_read_are_matched_as_keywords_with_a_note(api, two_collections):
    """The default keyword fields are the vectors' texts, properties of their row (``title_words``,
    ``tag_names``): ``icontains`` on them was a FieldError, a 500. The image's title, description
    and tag names instead, each image once, within the caller's collections."""
    cat = two_collections["cat"]
    cat.tags.add("кошка", "рыжая кошка", "собака")  # two matching tags: still one row
    api.force_login(two_collections["pets_editor"])
    response = api.get(SEARCH, {"q": "Кошка"})
    assert result_ids(response) == [cat.pk]
    # Each word in a tag of its own (one join for every word wanted a tag holding both: no rows).
    assert result_ids(api.get(SEARCH, {"q": "собака рыжая"})) == [cat.pk]
    assert "cannot read Cyrillic" in response.json()["note"]
    assert response.json()["results"][0]["score"] is None
    api.force_login(two_collections["products_editor"])
    assert result_ids(api.get(SEARCH, {"q": "кошка"})) == []


def test_rest_duplicates_group_only_the_images_of_the_callers_collections(api, two_collections, make_image, embed):
    """``images/duplicates/`` (inherited from ``SemanticSearchViewSet``, the vectors across the
    one-to-one): copies of the cat in Products are grouped for that collection's editor without
    the original in Pets, never for the Pets editor (a hidden copy neither shows up nor joins),
    and all three for a superuser."""
    cat = two_collections["cat"]
    source = Image.open(cat.file.path).convert("RGB")
    mirrored = make_image(image_bytes(ImageOps.mirror(source)), "IMG_0101", collection=two_collections["products"])
    rough = make_image(image_bytes(source, quality=40), "IMG_0102", collection=two_collections["products"])
    embed(mirrored, rough)
    url = "/api/wagtail/images/duplicates/"

    def groups() -> list[list[int]]:
        response = api.get(url)
        assert response.status_code == 200, response.content
        return [[image["id"] for image in group["images"]] for group in response.json()["results"]]

    assert groups() == []  # anonymous: no collection
    api.force_login(two_collections["pets_editor"])
    assert groups() == []
    api.force_login(two_collections["products_editor"])
    assert groups() == [sorted([mirrored.pk, rough.pk])]
    api.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "password"))
    assert groups() == [sorted([cat.pk, mirrored.pk, rough.pk])]
