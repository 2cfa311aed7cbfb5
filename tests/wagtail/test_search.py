"""The Images listing's and the image chooser's search boxes rank by meaning, within what the
editor may see."""

from __future__ import annotations

import os
import threading
import unicodedata

import pytest
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from wagtail import VERSION as WAGTAIL_VERSION
from wagtail.images import get_image_model
from wagtail.models import Collection
from wagtail.search.backends import get_search_backend

from django_semantic_images.contrib.wagtail import search as wagtail_search
from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.contrib.wagtail.search import _keys_from_index_entries, encode_words, keyword_matches
from django_semantic_images.encoders import get_encoder
from django_semantic_images.pipeline import embed_pks
from django_semantic_images.query import semantic_search, similar_to

from .conftest import OTHER
from .editors import assert_hidden_answers_like_missing, chooser_of, pets_editor_and_a_products_image

pytestmark = pytest.mark.django_db


def listing(client, **params) -> list:
    response = client.get(reverse("wagtailimages:index_results"), params)
    assert response.status_code == 200
    return list(response.context["object_list"])


def chooser(client, **params) -> list:
    response = client.get(reverse("wagtailimages_chooser:choose_results"), params)
    assert response.status_code == 200
    return list(response.context["results"])


def test_listing_ranks_the_cat_first(superuser_client, sample_images):
    found = listing(superuser_client, q="a cat")
    assert found[0] == sample_images["chelsea"]
    assert set(found) == set(sample_images.values())  # a handful of images: all are among the nearest
    assert listing(superuser_client, q="a cup of coffee")[0] == sample_images["coffee"]
    # The query helpers reach the vectors through the one-to-one relation.
    neighbours = list(similar_to(get_image_model().objects.all(), sample_images["chelsea"]))
    assert sample_images["chelsea"] not in neighbours and len(neighbours) == len(sample_images) - 1
    assert [n.distance for n in neighbours] == sorted(n.distance for n in neighbours)
    # The page itself (not only its results fragment) serves the ranked listing too.
    page = superuser_client.get(reverse("wagtailimages:index"), {"q": "a cat"})
    assert list(page.context["object_list"])[0] == sample_images["chelsea"]


def test_listing_lists_keyword_matches_first_even_without_vectors(
    superuser_client, sample_images, make_image, sample_paths, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # Wagtail's search index is written on commit
        rocket_titled_cat = make_image(sample_paths["rocket"], "Cat rocket")
        broken = make_image(sample_paths["coffee"], "Cat flap manual")
    os.remove(broken.file.path)  # its file was lost before it was embedded
    report = embed_pks(ImageVectors, [rocket_titled_cat.pk, broken.pk])
    assert list(report.failed) == [broken.pk]
    found = listing(superuser_client, q="cat")
    assert set(found[:2]) == {rocket_titled_cat, broken}
    assert found[2] == sample_images["chelsea"]
    assert found[0].score is None or found[1].score is None  # the broken one has no vectors


def test_listing_keeps_collection_filter_sorting_and_pagination(superuser_client, sample_images):
    root = Collection.get_first_root_node()
    elsewhere = root.add_child(name="Elsewhere")
    get_image_model().objects.filter(pk=sample_images["chelsea"].pk).update(collection=elsewhere)
    assert sample_images["chelsea"] not in listing(superuser_client, q="a cat", collection_id=root.pk)
    assert listing(superuser_client, q="a cat", collection_id=elsewhere.pk) == [sample_images["chelsea"]]
    by_title = listing(superuser_client, q="a cat", ordering="title")
    assert [image.title for image in by_title] == sorted(image.title for image in sample_images.values())
    with override_settings(WAGTAILIMAGES_INDEX_PAGE_SIZE=4):
        first, second = listing(superuser_client, q="a cat"), listing(superuser_client, q="a cat", p=2)
    assert first[0] == sample_images["chelsea"] and len(first) == 4
    assert not set(first) & set(second) and len(first) + len(second) == len(sample_images)


def test_the_header_forms_blank_sort_field_keeps_the_ranking(superuser_client, sample_images):
    """The header's search form submits its sort field with every search (a browser sends
    ``ordering=`` from its blank "Best match" choice): only a chosen column sorts the results."""
    page = superuser_client.get(reverse("wagtailimages:index"))
    assert '<option value="" selected="selected">Best match</option>' in page.content.decode()
    assert listing(superuser_client, q="a cat", ordering="")[0] == sample_images["chelsea"]
    newest = listing(superuser_client, q="a cat", ordering="-created_at")
    assert [image.pk for image in newest] == sorted((image.pk for image in sample_images.values()), reverse=True)
    chosen = superuser_client.get(reverse("wagtailimages:index"), {"q": "a cat", "ordering": "title"})
    assert '<option value="title" selected="selected">' in chosen.content.decode()
    assert '<option value="" selected="selected">' not in chosen.content.decode()


def test_a_sort_order_wagtail_does_not_take_while_searching_keeps_the_ranking(superuser_client, sample_images):
    """Wagtail drops a usage-count order while searching (and any unknown one) for its default,
    newest first: the ranking was lost, keyword hits included. Only an order Wagtail applies is a
    chosen one; the header then shows "Best match"."""
    for ordering in ("usage_count", "-usage_count", "bogus"):
        assert listing(superuser_client, q="a cat", ordering=ordering)[0] == sample_images["chelsea"], ordering
    page = superuser_client.get(reverse("wagtailimages:index"), {"q": "a cat", "ordering": "usage_count"})
    assert '<option value="" selected="selected">Best match</option>' in page.content.decode()
    by_usage = listing(superuser_client, ordering="usage_count")  # not searching: Wagtail's order as before
    assert set(by_usage) == set(sample_images.values())


def test_chooser_ranks_the_cat_first(superuser_client, sample_images):
    assert chooser(superuser_client, q="a cat")[0] == sample_images["chelsea"]
    assert chooser(superuser_client, q="a cup of coffee")[0] == sample_images["coffee"]
    modal = superuser_client.get(reverse("wagtailimages_chooser:choose"), {"q": "a cat"})
    assert modal.status_code == 200
    assert list(modal.context["results"])[0] == sample_images["chelsea"]


def test_the_chooser_draws_an_image_whose_file_cannot_be_read_as_a_missing_one(superuser_client, sample_images):
    """A file cut short or corrupt after it was embedded: Wagtail's image tag raised from the
    chooser's thumbnail (a 500 for the modal, ranked or not); it is drawn as a missing file."""
    coffee = sample_images["coffee"]
    with open(coffee.file.path, "wb") as file:
        file.write(b"broken later")
    coffee.renditions.all().delete()
    for params in ({"q": "a cup of coffee"}, {}):
        response = superuser_client.get(reverse("wagtailimages_chooser:choose_results"), params)
        assert response.status_code == 200, params
        assert coffee in list(response.context["results"]) and "/media/not-found" in response.content.decode()
        modal = superuser_client.get(reverse("wagtailimages_chooser:choose"), params)
        assert modal.status_code == 200 and "/media/not-found" in modal.content.decode()


def test_chooser_pages_list_the_listings_ranking_without_counting_rows(
    superuser_client, sample_images, make_image, embed, sample_paths, django_capture_on_commit_callbacks
):
    """The chooser's paginator is given the ranked keys: the same images in the same order as
    the listing's queryset (keyword matches first, one without vectors among them), with their
    distance, score and keyword_match, page by page; the count needs no query."""
    with django_capture_on_commit_callbacks(execute=True):
        rocket_titled_cat = make_image(sample_paths["rocket"], "Cat rocket")
        unembedded = make_image(sample_paths["coffee"], "Cat flap manual")
    embed(rocket_titled_cat)  # the other is left pending: no vectors
    expected = listing(superuser_client, q="cat")
    assert set(expected[:2]) == {rocket_titled_cat, unembedded} and len(expected) == len(sample_images) + 2
    with override_settings(WAGTAILIMAGES_CHOOSER_PAGE_SIZE=3), CaptureQueriesContext(connection) as queries:
        pages = [chooser(superuser_client, q="cat", p=page) for page in (1, 2, 3)]
    assert [len(page) for page in pages] == [3, 3, 2]
    found = [image for page in pages for image in page]
    assert found == expected
    assert [(i.distance, i.score, i.keyword_match) for i in found] == [
        (i.distance, i.score, i.keyword_match) for i in expected
    ]
    assert found[found.index(unembedded)].score is None
    assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"]]
    # A page past the end is Wagtail's 404, as is a page that is not a number.
    for page in ("4", "x"):
        response = superuser_client.get(reverse("wagtailimages_chooser:choose_results"), {"q": "cat", "p": page})
        assert response.status_code == 404


def test_keyword_hits_are_the_images_wagtails_own_search_finds(
    sample_images, make_image, sample_paths, django_capture_on_commit_callbacks
):
    """Read from the matching index entries to the images by key (not through Wagtail's join on
    the key cast to text): the same images, newest first, within the same queryset and limit."""
    with django_capture_on_commit_callbacks(execute=True):
        make_image(sample_paths["rocket"], "Cat rocket")
        make_image(sample_paths["coffee"], "Cat flap manual")
    images = get_image_model().objects.all()
    backend = get_search_backend()
    some = images.filter(pk__in=[image.pk for image in list(sample_images.values())[:3]])
    for queryset in (images, some, images.filter(title__startswith="Cat")):
        for words in ("IMG", "img_000", "IMG_0001", "cat", "Cat fl", "cat flap manual", "no such words"):
            wagtails = [i.pk for i in backend.autocomplete(words, queryset, operator="and", order_by_relevance=False)]
            assert keyword_matches(queryset, words) == wagtails[:100], (words, queryset.query)
            assert keyword_matches(queryset, words, limit=2) == wagtails[:2]
    assert _keys_from_index_entries(backend.autocomplete("cat", images, operator="and"), images, backend) is not None


def test_search_words_are_encoded_in_a_worker_thread_unless_cached(monkeypatch):
    """The listing and the chooser encode the words in a worker thread while the request's
    thread runs Wagtail's keyword query; words already encoded come back at once."""
    encoder = get_encoder()
    encoder.clear_query_cache()
    threads = []
    encode_queries = encoder.encode_queries

    def recording(texts):
        threads.append(threading.current_thread())
        return encode_queries(texts)

    monkeypatch.setattr(encoder, "encode_queries", recording)
    vector = encode_words(get_image_model(), "a lighthouse at dusk").result(timeout=60)
    assert threads and threads[0] is not threading.current_thread()
    assert threads[0].name.startswith("semantic-images-words")
    again = encode_words(get_image_model(), "a lighthouse at dusk")
    assert again.done() and again.result() is vector and len(threads) == 1


def test_search_words_start_encoding_as_the_request_arrives(superuser_client, sample_images, monkeypatch):
    """The listing and the chooser start encoding new words before Wagtail's view queries the
    database (its collections, its filters, its keyword search), and encode them once: the search
    waits for that encoding instead of starting another."""
    encoder = get_encoder()
    encoded = []
    encode_queries = encoder.encode_queries
    monkeypatch.setattr(encoder, "encode_queries", lambda texts: encoded.append(list(texts)) or encode_queries(texts))
    # Before the view: the session, the user and the editor's profile (Wagtail's admin decorator).
    before_view = ("django_session", "auth_user", "wagtailusers_userprofile")
    words = {"wagtailimages:index_results": "a kettle on a stove", "wagtailimages_chooser:choose_results": "a tram"}
    for name, text in words.items():
        encoder.clear_query_cache()
        encoded.clear()
        queries: list[tuple[str, bool]] = []  # each query, and whether the words were encoding by then

        def record(execute, sql, params, many, context, text=text, queries=queries):
            in_flight = getattr(wagtail_search, "_in_flight", {})
            started = encoder.cached_text_vector(text) is not None or any(key[1] == text for key in in_flight)
            queries.append((sql, started))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            response = superuser_client.get(reverse(name), {"q": text})
        assert response.status_code == 200
        views_queries = [(sql, started) for sql, started in queries if not any(t in sql for t in before_view)]
        assert views_queries and all(started for _, started in views_queries), (name, views_queries[0][0])
        assert encoded == [[text]], name


def test_editors_never_see_another_collections_images(client, two_collections):
    cat, others = two_collections["cat"], two_collections["others"]
    client.force_login(two_collections["products_editor"])
    for search in (listing, chooser):
        found = search(client, q="a cat")
        assert cat not in found and set(found) == set(others), search.__name__
        assert cat not in search(client, q="IMG_0001")
    client.force_login(two_collections["pets_editor"])
    for search in (listing, chooser):
        assert search(client, q="a cat") == [cat], search.__name__


def test_ranking_through_the_join_uses_the_hnsw_index(indexed_images):
    """``ORDER BY vectors.embedding_semantic <=> q LIMIT n`` over the one-to-one join, with a
    filter on the image table (an editor's collections): an HNSW index scan feeds the join."""
    collection = Collection.get_first_root_node()
    images, semantic = indexed_images("semantic", [collection])
    ranked = semantic_search(get_image_model().objects.filter(collection=collection), semantic[7])
    assert ranked[0] == images[7]
    plan = ranked[:10].explain()
    index = ImageVectors._meta.indexes[1].name  # the semantic vectors' HNSW index
    assert f"Index Scan using {index}" in plan, plan


def test_words_in_a_script_the_text_model_cannot_read_get_wagtails_keyword_search(
    superuser_client, sample_images, make_image, sample_paths, django_capture_on_commit_callbacks
):
    """MiniLM reads Latin script only: Cyrillic words rank nothing by meaning (noise); the listing
    and the chooser answer with Wagtail's own keyword matches, and the listing says so."""
    with django_capture_on_commit_callbacks(execute=True):
        cat = make_image(sample_paths["chelsea"], "кошка ест йогурт")
    embed_pks(ImageVectors, [cat.pk])
    response = superuser_client.get(reverse("wagtailimages:index"), {"q": "кошка"})
    assert list(response.context["object_list"]) == [cat]
    assert "cannot read Cyrillic" in response.context["semantic_note"]
    assert chooser(superuser_client, q="кошка") == [cat]
    assert len(listing(superuser_client, q="a cat")) > 1  # Latin words are still ranked by meaning
    # The same word decomposed (NFD: "и" and a combining breve for "й") finds the same image.
    decomposed = unicodedata.normalize("NFD", "йогурт")
    assert len(decomposed) == 7
    assert listing(superuser_client, q=decomposed) == chooser(superuser_client, q=decomposed) == [cat]
    # Zero-width characters alone are no search: every image, as without words.
    assert set(listing(superuser_client, q="\u200b\ufeff")) == set(listing(superuser_client))


def test_a_title_stored_decomposed_is_found_by_its_words_read_composed(
    superuser_client, sample_images, make_image, sample_paths, django_capture_on_commit_callbacks
):
    """Search words are read composed (NFC); Wagtail indexes a title as it is stored, and one stored
    decomposed (NFD: from a macOS file name) holds other code points, which Wagtail's search of the
    composed words missed: the ranked search's keyword matches, and the keyword search of words the
    text model cannot read (the listing, the chooser, the images API v2). Words that decompose are
    now searched in either form."""
    nfd = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731
    with django_capture_on_commit_callbacks(execute=True):
        latte = make_image(sample_paths["rocket"], nfd("Café crème"))
        cat = make_image(sample_paths["chelsea"], nfd("кошка ест йогурт"))
    embed_pks(ImageVectors, [latte.pk, cat.pk])
    assert keyword_matches(get_image_model().objects.all(), "café") == [latte.pk]
    for words in ("café", nfd("café"), "crème café"):
        for found in (listing(superuser_client, q=words), chooser(superuser_client, q=words)):
            assert found[0] == latte and found[0].keyword_match, words
            assert not any(image.keyword_match for image in found[1:]), words
    for words in ("йогурт", nfd("йогурт"), "кошка йогурт"):
        api = superuser_client.get("/api/v2/images/", {"semantic": words}).json()["items"]
        assert [row["id"] for row in api] == [cat.pk], words
    for words in ("йогурт", nfd("йогурт"), "йогу", "кошка йогурт"):  # as typed: the last word a prefix
        assert listing(superuser_client, q=words) == chooser(superuser_client, q=words) == [cat], words
    assert listing(superuser_client, q="йогурт нет") == chooser(superuser_client, q="йогурт нет") == []
    # With filters Wagtail's search cannot apply (a tag by name, the usage count) as without.
    cat.tags.add("pets")
    assert chooser(superuser_client, tag="pets", q="йогурт") == [cat]
    assert chooser(superuser_client, tag="nothing", q="йогурт") == []
    assert listing(superuser_client, q="йогурт", usage_count_min=0) == [cat]


@pytest.mark.django_db(transaction=True, serialized_rollback=True, databases=["default", OTHER])
def test_words_the_text_model_cannot_read_are_matched_on_the_search_database(
    second_alias, superuser_client, make_image, sample_paths, settings
):
    """With ``SEARCH_DATABASE`` set, Wagtail's keyword search that answers words the text model
    cannot read (the listing, the chooser, the images API v2) read the primary."""
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": OTHER}
    cat = make_image(sample_paths["chelsea"], "кошка на диване")
    make_image(sample_paths["coffee"], "IMG_0002")
    searches = {
        "listing": lambda: [image.pk for image in listing(superuser_client, q="кошка")],
        "chooser": lambda: [image.pk for image in chooser(superuser_client, q="кошка")],
        "api": lambda: [
            row["id"] for row in superuser_client.get("/api/v2/images/", {"semantic": "кошка"}).json()["items"]
        ],
    }
    for where, search in searches.items():
        with (
            CaptureQueriesContext(connections["default"]) as primary,
            CaptureQueriesContext(connections[OTHER]) as other,
        ):
            assert search() == [cat.pk], where
        # Wagtail's search reads its index entries with the images.
        assert [q["sql"] for q in primary.captured_queries if "indexentry" in q["sql"]] == [], where
        assert any("indexentry" in q["sql"] for q in other.captured_queries), where


def test_the_listings_note_on_unreadable_words_comes_with_its_results_and_nowhere_else(superuser_client, sample_images):
    """Typing in the listing's search box fetches ``index_results`` alone: the note was a message
    that page never shows, queued in the session and shown on whatever page came next."""
    note = "The text model cannot read Cyrillic script"
    for name in ("wagtailimages:index_results", "wagtailimages:index"):
        response = superuser_client.get(reverse(name), {"q": "кошка"})
        assert response.content.decode().count(note) == 1, name
    later = superuser_client.get(reverse("wagtailimages:index"))
    assert note not in later.content.decode()
    assert note not in superuser_client.get(reverse("wagtailimages:index_results"), {"q": "a cat"}).content.decode()


def test_the_choosers_keyword_search_of_unreadable_words_comes_with_a_note(superuser_client, sample_images):
    """The chooser fell back to Wagtail's keyword search without saying so (issue #14: a note)."""
    note = "The text model cannot read Cyrillic script"
    for name in ("wagtailimages_chooser:choose", "wagtailimages_chooser:choose_results"):
        response = superuser_client.get(reverse(name), {"q": "кошка"})
        assert response.status_code == 200
        html = response.json()["html"] if name.endswith(":choose") else response.content.decode()
        assert html.count(note) == 1, name
    assert (
        note
        not in superuser_client.get(reverse("wagtailimages_chooser:choose_results"), {"q": "a cat"}).content.decode()
    )


def test_a_tag_or_usage_count_filter_with_search_words_ranks_as_without(superuser_client, sample_images):
    """The chooser filters ``?tag=`` by name and the listing can filter by usage count: filters
    Wagtail's search backend cannot apply (modelsearch's FilterFieldError, an AttributeError on the
    usage count's annotation). The keyword search runs over the same rows by key instead."""
    coffee = sample_images["coffee"]
    coffee.tags.add("drink")
    assert chooser(superuser_client, tag="drink", q="a cup of coffee") == [coffee]
    assert chooser(superuser_client, tag="drink", q="кофе") == []  # Wagtail's own search, same rows
    assert chooser(superuser_client, tag="nothing", q="a cup of coffee") == []
    found = listing(superuser_client, q="a cat", usage_count_min=0)
    assert found[0] == sample_images["chelsea"] and set(found) == set(sample_images.values())
    if WAGTAIL_VERSION >= (7, 1):  # the listing's usage count filter came with Wagtail 7.1
        assert listing(superuser_client, q="a cat", usage_count_min=1) == []
    # Words the text model cannot read go to Wagtail's own search, which failed the same way.
    assert listing(superuser_client, q="кошка", usage_count_min=0) == []


@pytest.mark.parametrize(
    "name", ["wagtailimages:index", "wagtailimages:index_results", "wagtailimages_chooser:choose_results"]
)
def test_search_words_or_a_tag_the_views_cannot_take_are_400_naming_them(superuser_client, sample_images, name):
    """Words longer than MAX_QUERY_LENGTH (as the APIs refuse them: hundreds of words exhausted
    Python's recursion limit in Wagtail's search backend, a 500), words the text model cannot read
    in more terms than Wagtail's search takes (a 500 too), and a tag with a NUL character
    (the chooser's filter sent it to PostgreSQL, a 500)."""
    cases = {
        "many words": ({"q": "cat " * 800}, "q: the search text is longer than 500 characters."),
        "one long word": ({"q": "x" * 10_000}, "q: the search text is longer than 500 characters."),
        # Words the text model cannot read go to Wagtail's own search: 250 terms were a RecursionError.
        "many unreadable words": ({"q": "ж " * 249 + "ж"}, "q: more than 64 words to match as keywords."),
        "many unreadable terms": ({"q": "ж-" * 249 + "ж"}, "q: more than 64 words to match as keywords."),
        "NUL in a tag": ({"tag": "a\x00b"}, "tag: a tag cannot contain NUL characters."),
        "NUL in a tag, with words": ({"tag": "a\x00b", "q": "a cat"}, "tag: a tag cannot contain NUL characters."),
    }
    for case, (params, message) in cases.items():
        response = superuser_client.get(reverse(name), params)
        assert (response.status_code, response.content.decode()) == (400, message), case
    at_the_limit = superuser_client.get(reverse(name), {"q": ("a cat " * 100)[:500]})
    assert at_the_limit.status_code == 200
    assert superuser_client.get(reverse(name), {"q": " ".join(["ж"] * 64)}).status_code == 200


def test_chooser_thumbnails_come_from_the_prefetched_renditions_without_a_cache_write(superuser_client, sample_images):
    """The chooser's ranked page shows Wagtail's own thumbnails (the same ``<img>`` as its
    ``{% image image max-165x165 %}``), taken from the renditions its query read, without writing
    each one into Wagtail's renditions cache again (as Wagtail's ``get_renditions`` does)."""
    Rendition = get_image_model().get_rendition_model()
    thumbnails = {image: image.get_rendition("max-165x165") for image in sample_images.values()}
    Rendition.cache_backend.clear()
    response = superuser_client.get(reverse("wagtailimages_chooser:choose_results"), {"q": "a cat"})
    assert response.status_code == 200
    page = response.content.decode()
    for image, thumbnail in thumbnails.items():
        assert thumbnail.img_tag({"class": "show-transparency"}) in page, image
        key = Rendition.construct_cache_key(image, thumbnail.focal_point_key, "max-165x165")
        assert Rendition.cache_backend.get(key) is None, image


def test_an_encoder_that_cannot_load_leaves_the_keyword_search_with_a_note(
    superuser_client, make_image, sample_paths, settings, caplog
):
    """A text model that is not there made the listing, the chooser and both APIs a 500; the listing
    and chooser list Wagtail's keyword matches with a note, the APIs answer a 503 saying why, each logged."""
    settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "TEXT_MODEL": {"MODEL": "/nonexistent/text-model"}}
    image = make_image(sample_paths["coffee"], "Morning coffee")
    for url in ("wagtailimages:index_results", "wagtailimages_chooser:choose_results"):
        response = superuser_client.get(reverse(url), {"q": "coffee"})
        assert response.status_code == 200
        assert image in list(response.context["object_list" if "index" in url else "results"])
        assert "Search by meaning is unavailable now" in response.context["semantic_note"]
    for url, params, key in (
        ("/api/v2/images/", {"semantic": "coffee"}, "message"),
        ("/api/wagtail/images/search/", {"q": "coffee"}, "detail"),
    ):
        response = superuser_client.get(url, params)
        assert response.status_code == 503 and "unavailable" in response.json()[key]
    assert caplog.text.count("/nonexistent/text-model") >= 4


def test_an_image_with_a_zero_vector_is_never_ranked_first_and_breaks_no_page(superuser_client, sample_images):
    """A vector of all zeros (written by SQL: the pipeline refuses one) scores NaN: Python's sort of the
    listing's and chooser's ranking put it anywhere, and the v2 API's score could not be written as
    JSON. It now comes after every scored image everywhere, without a score, as in the DRF API."""
    import numpy as np
    from rest_framework.test import APIClient

    coffee, cat = sample_images["coffee"], sample_images["chelsea"]
    ImageVectors.objects.filter(image=coffee).update(embedding_semantic=np.zeros(384, np.float32))
    ImageVectors.objects.filter(image=cat).update(embedding_visual=np.zeros(1280, np.float32))
    from django_semantic_images.contrib.wagtail.search import _by_distance

    nan = float("nan")  # the ranking's own sort (keyword matches are read beside the index's nearest)
    assert _by_distance([1, 2, 3, 4, 5], {1: 0.5, 2: nan, 3: 0.2, 4: 0.1, 5: None}) == [4, 3, 1, 2, 5]
    for found in (listing(superuser_client, q="a cup of coffee"), chooser(superuser_client, q="a cup of coffee")):
        assert found[0] != coffee and (coffee not in found or found[-1] == coffee)
    with connection.cursor() as cursor:  # an exact scan: pgvector leaves a zero vector out of a cosine HNSW index
        cursor.execute("SET enable_indexscan = off")  # undone with the test's transaction
    v2 = APIClient().get("/api/v2/images/", {"semantic": "a cup of coffee"})
    assert v2.status_code == 200, v2.content[:300]
    items = v2.json()["items"]
    assert items[0]["id"] != coffee.pk and all(item["meta"].get("score") is not None for item in items[:-1])
    assert items[-1]["id"] == coffee.pk and items[-1]["meta"]["score"] is None  # listed, its score null (not left out)
    similar = APIClient().get("/api/v2/images/", {"similar_to": cat.pk})  # was a ValueError: a 500
    assert similar.status_code == 400 and "all zeros" in similar.json()["message"]
    # The edit page's similar panel: of the zero image, nothing; of another, the zero image is not first.
    for image in (cat, sample_images["coffee"]):
        response = superuser_client.get(reverse("wagtailimages:edit", args=(image.pk,)))
        assert response.status_code == 200
        similar = response.context["similar_images"] or []
        assert not similar or similar[0] != cat


@pytest.mark.parametrize(
    "name", ["wagtailimages:index", "wagtailimages:index_results", "wagtailimages_chooser:choose_results"]
)
def test_many_words_while_the_encoder_cannot_load_are_a_400_not_a_500(superuser_client, settings, name):
    """Without the text model the search boxes match words as keywords (Wagtail's own search), so
    more terms than it takes are the 400 of words it cannot read; checking them loaded the encoder
    (an OSError, a 500). Fewer terms still list the keyword matches."""
    settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "TEXT_MODEL": {"MODEL": "/nonexistent/text-model"}}
    response = superuser_client.get(reverse(name), {"q": " ".join(["a"] * 250)})
    assert (response.status_code, response.content.decode()) == (400, "q: more than 64 words to match as keywords.")
    assert superuser_client.get(reverse(name), {"q": " ".join(["cat"] * 64)}).status_code == 200


@pytest.mark.django_db
def test_choosing_an_image_of_a_hidden_collection_answers_like_a_missing_one(
    client, django_user_model, make_image, sample_paths
):
    """The chooser's "chosen" and "select format" steps (a page's image block, rich text) answered an
    image of a collection the editor may not see with Wagtail's permission-denied redirect (302), and a
    missing one with a 404: which ids exist in hidden collections could be read off. Hidden now
    answers exactly as missing."""
    pets, products, mug = pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths)
    assert_hidden_answers_like_missing(
        client, ("wagtailimages_chooser:chosen", "wagtailimages_chooser:select_format"), mug
    )
    # Choosing the format (rich text) answered with the image's HTML; Wagtail 7.0 checked no permission at all.
    data = {"image-chooser-insertion-format": "fullwidth", "image-chooser-insertion-alt_text": "a mug"}
    select_format = "wagtailimages_chooser:select_format"
    hidden = client.post(reverse(select_format, args=(mug.pk,)), data)
    missing = client.post(reverse(select_format, args=(mug.pk + 1000,)), data)
    assert (hidden.status_code, hidden.content) == (missing.status_code, missing.content) and hidden.status_code == 404
    shown = make_image(sample_paths["chelsea"], "cat", collection=pets)
    assert client.get(reverse("wagtailimages_chooser:chosen", args=(shown.pk,))).status_code == 200
    chosen = client.post(reverse(select_format, args=(shown.pk,)), data)
    assert chosen.json()["result"]["alt"] == "a mug"


@pytest.mark.django_db
def test_deleting_or_the_usage_of_an_image_of_a_hidden_collection_answers_like_a_missing_one(
    client, django_user_model, make_image, sample_paths
):
    """Wagtail's delete page and usage page of an image the editor may not see redirected with
    "permission denied" where a missing id is a 404: which ids exist in hidden collections could be
    read off, as from the edit page (which answers 404). They answer as a missing image now, and
    nothing is deleted."""
    pets, products, mug = pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths)
    assert_hidden_answers_like_missing(client, ("wagtailimages:delete", "wagtailimages:image_usage"), mug)
    assert client.post(reverse("wagtailimages:delete", args=(mug.pk,))).status_code == 404
    assert get_image_model().objects.filter(pk=mug.pk).exists()
    cat = make_image(sample_paths["chelsea"], "cat", collection=pets)  # the editor's own: Wagtail's pages
    assert client.get(reverse("wagtailimages:image_usage", args=(cat.pk,))).status_code == 200
    assert client.get(reverse("wagtailimages:delete", args=(cat.pk,))).status_code == 200
    # One who may only choose the products' images sees them: Wagtail's own "permission denied".
    client.force_login(chooser_of(products, django_user_model, "chooser"))
    assert client.get(reverse("wagtailimages:delete", args=(mug.pk,))).status_code == 302
