"""The editors' admin with Django's test client: ranking, similar images, search by photo,
filters, the re-embed action, the change form and permissions (real PostgreSQL, real models)."""

from __future__ import annotations

import base64
import json
import re
import unicodedata
import warnings

import django
import numpy as np
import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import date_format
from django.utils.html import escape
from PIL import Image, ImageOps

from django_semantic_images import EmbeddingStatus
from django_semantic_images.encoders import get_encoder
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import Committed, PendingRows, embedding_deferred
from django_semantic_images.uploads import MULTIPART_OVERHEAD
from photos.models import Photo
from tests.conftest import image_bytes, status_of, upload

from .celery_worker import BROKER_OPTIONS, KEY_PREFIX, REDIS_URL, configured_app, redis_client

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:photos_photo_changelist"
BY_PHOTO = "admin:photos_photo_search_by_photo"


@pytest.fixture(scope="module")
def photos(django_db_setup, django_db_blocker, sample_paths):
    """The sample photos, a cropped copy of the cat and one broken upload, embedded once per module.

    Each test runs in a transaction that is rolled back, so these rows stay as they are.
    """
    with django_db_blocker.unblock():
        rows: dict[str, Photo] = {}
        sources = {stem: (path.read_bytes(), path.name) for stem, path in sample_paths.items()}
        cat = Image.open(sample_paths["chelsea"]).convert("RGB")
        sources["cat-crop"] = (image_bytes(cat.crop((30, 10, 420, 290)), quality=80), "cat-crop.jpg")
        sources["broken"] = (sample_paths["rocket"].read_bytes()[:1500], "broken.jpg")
        with embedding_deferred():
            for stem, (data, name) in sources.items():
                photo = Photo(title="")
                photo.image.save(name, ContentFile(data), save=False)
                photo.save()
                rows[stem] = photo
        report = embed_instances(list(rows.values()))
        assert list(report.failed) == [rows["broken"].pk]
        for photo in rows.values():
            photo.refresh_from_db()
        yield rows
        Photo.objects.all().delete()


def ranked_pks(response) -> list[int]:
    assert response.status_code == 200, response.content[:500]
    return [row.pk for row in response.context["cl"].result_list]


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def flipped_upload(path, name: str = "query.jpg") -> SimpleUploadedFile:
    image = ImageOps.mirror(Image.open(path).convert("RGB"))
    image = image.resize((image.width * 2 // 3, image.height * 2 // 3))
    return SimpleUploadedFile(name, image_bytes(image, quality=70), content_type="image/jpeg")


# -- search box ---------------------------------------------------------------


def test_the_search_box_ranks_by_meaning(admin_client, photos):
    response = admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee"})
    results = response.context["cl"].result_list
    assert results[0].pk == photos["coffee"].pk
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert photos["broken"].pk not in [r.pk for r in results]  # no vector, no text match
    html = response.content.decode()
    assert f'<span class="si-score" title="cosine similarity">{results[0].score:.3f}</span>' in html
    assert "Rows whose text fields contain every word are listed first." in html  # it has search_fields


def test_the_score_is_written_in_the_editors_language(admin_client, photos):
    """As Django's admin writes numbers: in French "0,873", not "0.873"."""
    with translation.override("fr"):
        response = admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee"})
    best = response.context["cl"].result_list[0]
    scores = re.findall(r'<span class="si-score"[^>]*>([^<]*)</span>', response.content.decode())
    assert scores[0] == f"{best.score:.3f}".replace(".", ",")


def test_an_ordinary_search_match_is_listed_first(admin_client, photos):
    """Rows whose search_fields contain every word come first; the others follow by meaning."""
    Photo.objects.filter(pk=photos["rocket"].pk).update(alt_text="A cup of coffee on the launch pad")
    Photo.objects.filter(pk=photos["broken"].pk).update(title="coffee cup, a broken upload of it")
    pks = ranked_pks(admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee"}))
    # Both text matches first (the one with a vector before the one without), then the coffee.
    assert pks[:3] == [photos["rocket"].pk, photos["broken"].pk, photos["coffee"].pk]


def test_list_filters_and_search_compose(admin_client, photos):
    Photo.objects.filter(pk=photos["coffee"].pk).update(published=False)
    pks = ranked_pks(admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee", "published__exact": "1"}))
    assert pks and photos["coffee"].pk not in pks
    assert set(Photo.objects.filter(pk__in=pks).values_list("published", flat=True)) == {True}
    if django.VERSION >= (5, 0):  # facet counts ("Show counts") came with Django 5.0; they work with the ranking
        faceted = admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee", "_facets": "True"})
        assert ranked_pks(faceted)[0] == photos["coffee"].pk
        assert f"No ({Photo.objects.filter(published=False).count()})" in faceted.content.decode()


def test_sorting_by_a_column_keeps_the_same_results(admin_client, photos):
    url = reverse(CHANGELIST)
    ranked = ranked_pks(admin_client.get(url, {"q": "a cat"}))
    # list_display: thumbnail, __str__, published, ... ; "o=3" sorts by "published".
    Photo.objects.filter(pk=ranked[-1]).update(published=False)
    by_published = ranked_pks(admin_client.get(url, {"q": "a cat", "o": "3"}))
    assert sorted(by_published) == sorted(ranked)
    assert by_published[0] == ranked[-1]


def test_an_ordering_that_sorts_by_no_column_keeps_the_ranking(admin_client, photos):
    """Django ignores an ``o`` that names no sortable column (not a number, past the last column,
    the thumbnail's); the rows stay nearest first instead of falling back to the newest first."""
    url = reverse(CHANGELIST)
    ranked = ranked_pks(admin_client.get(url, {"q": "a cup of coffee"}))
    for o in ("abc", "99", "0", "-", "0.abc"):
        assert ranked_pks(admin_client.get(url, {"q": "a cup of coffee", "o": o})) == ranked, o
    similar = ranked_pks(admin_client.get(url, {"similar_to": photos["chelsea"].pk}))
    assert ranked_pks(admin_client.get(url, {"similar_to": photos["chelsea"].pk, "o": "abc"})) == similar
    # A sortable column named among them still sorts by it ("published": all True, then newest first).
    assert ranked_pks(admin_client.get(url, {"q": "a cup of coffee", "o": "abc.3"})) == sorted(ranked, reverse=True)


def test_the_ranking_sentence_does_not_say_nearest_first_when_a_column_sorts_the_rows(
    admin_client, photos, sample_paths
):
    """Sorted by a column header, the ranked rows are no longer nearest first; the sentence above
    the table still said "Images most like “…”, nearest first."."""
    url, cat = reverse(CHANGELIST), photos["chelsea"]
    html = admin_client.get(url, {"similar_to": cat.pk, "o": "3"}).content.decode()
    assert "nearest first" not in html
    assert f"Images most like “<bdi>{cat}</bdi>”, sorted by the column you chose." in html
    html = admin_client.get(url, {"similar_to": cat.pk, "o": "abc"}).content.decode()  # no column: still ranked
    assert f"Images most like “<bdi>{cat}</bdi>”, nearest first." in html
    redirect = admin_client.post(reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["rocket"], "r.jpg")})
    html = admin_client.get(redirect["Location"] + "&o=-3").content.decode()
    assert "Images most like your photo “<bdi>r.jpg</bdi>”, sorted by the column you chose." in html


@pytest.mark.parametrize("blank", ["   ", "\u200b\ufeff"], ids=["spaces", "zero-width"])
def test_a_blank_search_lists_every_row_unranked(admin_client, photos, blank):
    """Blank as the APIs define it: zero-width characters alone were ranked by the vector of nothing."""
    response = admin_client.get(reverse(CHANGELIST), {"q": blank})
    assert sorted(ranked_pks(response)) == sorted(p.pk for p in photos.values())
    assert not hasattr(response.context["cl"].result_list[0], "score")


def test_search_words_longer_than_max_query_length_are_a_400_naming_q(admin_client, photos, settings):
    """As the APIs and Wagtail's search boxes: 80 KB of "a b a b ..." kept a worker 28 s (Django's
    search over the search fields, one condition per word and field)."""
    settings.SEMANTIC_IMAGES = {"MAX_QUERY_LENGTH": 20}
    assert ranked_pks(admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee " + " " * 4}))
    response = admin_client.get(reverse(CHANGELIST), {"q": "a b " * 6})
    assert response.status_code == 400
    assert response.content.decode() == "q: the search text is longer than 20 characters."


def test_the_notes_of_a_refused_or_unreadable_search_are_translated(admin_client, photos, settings, french):
    """Shown on the changelist (a message, a 400), so in the editor's language as the rest."""
    settings.SEMANTIC_IMAGES = {"MAX_QUERY_LENGTH": 20}
    french(
        {
            "%(name)s: the search text is longer than %(limit)d characters.": (
                "%(name)s : le texte cherché dépasse %(limit)d caractères."
            ),
            "The text model cannot read %(scripts)s script, so these words were matched as keywords "
            "in %(fields)s (results not ranked by meaning).": (
                "Écriture %(scripts)s illisible ; mots cherchés dans %(fields)s."
            ),
        }
    )
    with translation.override("fr"):
        response = admin_client.get(reverse(CHANGELIST), {"q": "a b " * 6})
        assert response.content.decode() == "q : le texte cherché dépasse 20 caractères."
        response = admin_client.get(reverse(CHANGELIST), {"q": "кошка"})
        assert "Écriture Cyrillic illisible ; mots cherchés dans title, alt_text." in messages_of(response)


def test_autocomplete_terms_longer_than_max_query_length_are_a_400_naming_term(admin_client, photos, settings):
    """Django's autocomplete (an album's ``autocomplete_fields`` picking its cover photo) searched
    by meaning, and over the search fields, a term of any length."""
    settings.SEMANTIC_IMAGES = {"MAX_QUERY_LENGTH": 20}
    url = reverse("admin:autocomplete")
    params = {"app_label": "multifield", "model_name": "photoalbum", "field_name": "cover"}
    found = admin_client.get(url, {**params, "term": "a cup of coffee"})
    assert found.status_code == 200
    assert found.json()["results"][0]["id"] == str(photos["coffee"].pk)
    settings.DEBUG = True  # the 400's message, as the technical page shows it
    response = admin_client.get(url, {**params, "term": "a b " * 6})
    assert response.status_code == 400
    assert "term: the search text is longer than 20 characters." in response.content.decode()


def test_autocomplete_terms_with_nul_characters_read_them_as_spaces(admin_client, photos):
    """Django's autocomplete took the term as sent: a NUL went to PostgreSQL with the search
    fields' match (a 500); it counts as a space, as in the APIs' words."""
    url = reverse("admin:autocomplete")
    params = {"app_label": "multifield", "model_name": "photoalbum", "field_name": "cover"}
    found = admin_client.get(url, {**params, "term": "a cup of\x00coffee"})
    assert found.status_code == 200, found.content[:300]
    assert found.json()["results"][0]["id"] == str(photos["coffee"].pk)
    blank = admin_client.get(url, {**params, "term": "\x00"})
    assert blank.status_code == 200, blank.content[:300]
    assert {row["id"] for row in blank.json()["results"]} == {str(p.pk) for p in photos.values()}


# -- similar images and search by photo ----------------------------------------


def test_similar_images_of_the_cat_list_its_cropped_copy_first(admin_client, photos):
    changelist = admin_client.get(reverse(CHANGELIST))
    cat = photos["chelsea"]
    assert f'href="{reverse(CHANGELIST)}?similar_to={cat.pk}"' in changelist.content.decode()
    response = admin_client.get(reverse(CHANGELIST), {"similar_to": cat.pk})
    pks = ranked_pks(response)
    assert pks[0] == photos["cat-crop"].pk
    assert cat.pk not in pks
    assert "Images most like" in response.content.decode()
    # The search box starts a new search: the ranking parameter is not among its hidden fields.
    assert 'type="hidden" name="similar_to"' not in response.content.decode()


@pytest.mark.parametrize("kind", ["Vector", "HalfVector"])
def test_similar_images_of_a_row_read_as_a_pgvector_object(admin_client, photos, monkeypatch, kind):
    """pgvector-python before 0.5 reads a ``halfvec`` column as a ``HalfVector`` (some versions a
    ``vector`` one as a ``Vector``): the view's ``np.asarray()`` on it raised a TypeError, a 500."""
    import pgvector

    column = Photo._meta.get_field("embedding_visual")
    read = column.from_db_value
    wrap = getattr(pgvector, kind)

    def from_db_value(value, expression, connection):  # as that version reads the column
        numbers = read(value, expression, connection)
        return None if numbers is None else wrap(np.asarray(numbers, dtype=np.float32))

    monkeypatch.setattr(column, "from_db_value", from_db_value)
    response = admin_client.get(reverse(CHANGELIST), {"similar_to": photos["chelsea"].pk})
    assert ranked_pks(response)[0] == photos["cat-crop"].pk


def test_the_similar_images_link_keeps_the_changelists_filters(admin_client, photos):
    """As search by photo does: "similar images" of a row in the published rows lists published rows."""
    cat = photos["chelsea"]
    html = admin_client.get(reverse(CHANGELIST), {"published__exact": "1", "q": "a cat", "p": "1"}).content.decode()
    link = re.search(rf'<a class="si-similar" href="([^"]*similar_to={cat.pk})"', html).group(1)
    assert link == f"{reverse(CHANGELIST)}?published__exact=1&amp;similar_to={cat.pk}"  # not the words or page


def test_the_ranking_sentence_isolates_a_right_to_left_title_or_file_name(admin_client, photos, sample_paths):
    """An Arabic title or a Hebrew file name inside "Images most like “…”" is wrapped in <bdi>, so
    its direction does not reorder the sentence's quotes and punctuation."""
    cat = photos["chelsea"]
    Photo.objects.filter(pk=cat.pk).update(title="قطة")
    html = admin_client.get(reverse(CHANGELIST), {"similar_to": cat.pk}).content.decode()
    assert "Images most like “<bdi>قطة</bdi>”, nearest first." in html
    redirect = admin_client.post(reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["rocket"], "טיל.jpg")})
    html = admin_client.get(redirect["Location"]).content.decode()
    assert "Images most like your photo “<bdi>טיל.jpg</bdi>”, nearest first." in html


def test_messages_isolate_a_right_to_left_title_or_file_name_and_escape_it(admin_client, photos):
    """The messages built in Python put a title, a file name or an id in a <bdi> too (they had it as
    plain text: an Arabic title took the quotes around it into its own direction), escaped."""
    broken = photos["broken"]
    Photo.objects.filter(pk=broken.pk).update(title="قطة <b>")
    html = admin_client.get(reverse(CHANGELIST), {"similar_to": broken.pk}).content.decode()
    assert f"“<bdi>قطة &lt;b&gt;</bdi>” could not be embedded: {escape(broken.embedding_error)}" in html
    html = admin_client.get(reverse(CHANGELIST), {"similar_to": "٤٢"}).content.decode()
    assert "There is no image with ID “<bdi>٤٢</bdi>” that you can see." in html
    notes = SimpleUploadedFile("ملاحظات<i>.jpg", b"not a picture at all", content_type="image/jpeg")
    html = admin_client.post(reverse(BY_PHOTO), {"photo": notes}, follow=True).content.decode()
    assert "Cannot search by “<bdi>ملاحظات&lt;i&gt;.jpg</bdi>”: The file is not an image" in html


#: Ids no row can have: past a bigint, negative, a UUID on an integer key, text, a NUL.
NONSENSE_IDS = ("99999999999999999999999", "-1", "550e8400-e29b-41d4-a716-446655440000", "not-a-number", "1.5", "\x00")


def test_the_link_out_of_a_ranking_is_not_named_like_djangos_show_all(admin_client, photos, monkeypatch):
    """On a ranking of several pages two links read "Show all": Django's (every ranked row on one
    page) and the toolbar's (leave the ranking), to different places."""
    from photos.admin import PhotoAdmin

    monkeypatch.setattr(PhotoAdmin, "list_per_page", 3)
    response = admin_client.get(reverse(CHANGELIST), {"similar_to": photos["chelsea"].pk, "published__exact": "1"})
    # (href, name) pairs: another link may have the same href (Django 4.2's filter for "Yes").
    links = re.findall(r'<a href="([^"]*)"[^>]*>\s*([^<]*?)\s*</a>', response.content.decode())
    names = [name for url, name in links]
    assert names.count("Show all") == 1 and "Back to the list" in names
    assert "all=" in [url for url, name in links if name == "Show all"][0]
    assert [url for url, name in links if name == "Back to the list"] == ["?published__exact=1"]


def test_similar_images_of_an_unknown_or_broken_row_list_nothing(admin_client, photos):
    for pk in ("999999", *NONSENSE_IDS, str(photos["broken"].pk)):
        response = admin_client.get(reverse(CHANGELIST), {"similar_to": pk})
        assert ranked_pks(response) == []
        assert messages_of(response), pk


def test_similar_images_of_a_row_whose_embedding_failed_say_why(admin_client, photos):
    """Not "no visual vector yet": waiting will not give it one; the message names the reason."""
    broken = photos["broken"]
    response = admin_client.get(reverse(CHANGELIST), {"similar_to": broken.pk})
    assert messages_of(response) == [f"“<bdi>{broken}</bdi>” could not be embedded: {escape(broken.embedding_error)}"]


def test_search_by_photo_finds_the_near_duplicate_first(admin_client, photos, sample_paths):
    response = admin_client.post(
        reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["rocket"]), "filters": "?published__exact=1&q=x"}
    )
    assert response.status_code == 302
    location = response["Location"]
    assert "published__exact=1" in location and "q=x" not in location
    token = re.search(r"photo=([\w-]+)", location).group(1)
    results = admin_client.get(reverse(CHANGELIST), {"photo": token, "published__exact": "1"})
    assert ranked_pks(results)[0] == photos["rocket"].pk
    assert "data:image/jpeg;base64," in results.content.decode()


@pytest.mark.parametrize(
    ("upload", "reason"),
    [
        (SimpleUploadedFile("notes.jpg", b"not a picture at all"), "not an image"),
        (SimpleUploadedFile("empty.jpg", b""), "empty"),
        (None, "Choose a photo"),
    ],
)
def test_search_by_photo_refuses_bad_input_with_a_message(admin_client, photos, upload, reason):
    data = {"filters": "published__exact=1"}
    if upload is not None:
        data["photo"] = upload
    response = admin_client.post(reverse(BY_PHOTO), data, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse(CHANGELIST) + "?published__exact=1"
    assert any(reason in m for m in messages_of(response)), messages_of(response)


def test_search_by_photo_refuses_a_file_over_the_size_limit(admin_client, photos, sample_paths, monkeypatch):
    from photos.admin import PhotoAdmin

    monkeypatch.setattr(PhotoAdmin, "search_by_photo_max_bytes", 1000)
    response = admin_client.post(reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["coffee"])}, follow=True)
    assert any("larger than the limit" in m for m in messages_of(response))


def test_search_by_photo_refuses_an_upload_over_the_limit_before_reading_it(
    photos, sample_paths, counted_uploads, monkeypatch
):
    """Django's CSRF check read the whole form (a multi-gigabyte upload went to a temporary file)
    before the view compared the photo with ``search_by_photo_max_bytes``: a request whose
    Content-Length is already over the limit is refused unread, and CSRF is still checked."""
    from photos.admin import PhotoAdmin

    monkeypatch.setattr(PhotoAdmin, "search_by_photo_max_bytes", 1000)
    editor = Client(enforce_csrf_checks=True)
    editor.force_login(User.objects.create_superuser("csrf", "csrf@example.com", "pw"))
    editor.get(reverse(CHANGELIST))  # the changelist's form sets the CSRF cookie
    token = editor.cookies["csrftoken"].value
    big = SimpleUploadedFile("big.jpg", bytes(1000 + MULTIPART_OVERHEAD), content_type="image/jpeg")
    response = editor.post(reverse(BY_PHOTO), {"photo": big, "csrfmiddlewaretoken": token}, follow=True)
    assert counted_uploads == []
    assert response.redirect_chain == [(reverse(CHANGELIST), 302)]
    (message,) = messages_of(response)
    expected = r"Cannot search by this photo: the upload is [\d,]+ bytes, over the limit of 1,000 bytes\."
    assert re.fullmatch(expected, message), message
    # Within the limit the form is read; a POST without the CSRF token is still refused.
    small = SimpleUploadedFile("small.jpg", bytes(500), content_type="image/jpeg")
    assert editor.post(reverse(BY_PHOTO), {"photo": small}).status_code == 403
    small.seek(0)
    response = editor.post(reverse(BY_PHOTO), {"photo": small, "csrfmiddlewaretoken": token}, follow=True)
    assert counted_uploads == [500, 500]  # read by the CSRF check of each
    assert any("not an image" in m for m in messages_of(response)), messages_of(response)


def test_an_expired_photo_search_lists_nothing(admin_client, photos):
    response = admin_client.get(reverse(CHANGELIST), {"photo": "no-such-token"})
    assert ranked_pks(response) == []
    assert any("expired" in m for m in messages_of(response))


def test_a_photo_token_of_another_session_answers_like_an_unknown_one(admin_client, client, photos, sample_paths):
    """Tokens live in the uploader's session: another user naming one gets the page an unknown
    token gets (no ranking, the same message), not the uploader's photo."""
    redirect = admin_client.post(reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["rocket"])})
    token = re.search(r"photo=([\w-]+)", redirect["Location"]).group(1)
    assert ranked_pks(admin_client.get(reverse(CHANGELIST), {"photo": token}))[0] == photos["rocket"].pk
    client.force_login(User.objects.create_superuser("other", "other@example.com", "pw"))

    def page(name: str) -> tuple[list[int], list[str], str]:
        response = client.get(reverse(CHANGELIST), {"photo": name})
        html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
        return ranked_pks(response), messages_of(response), html.replace(name, "TOKEN")

    theirs, unknown = page(token), page("no-such-token")
    assert theirs == unknown
    assert theirs[0] == [] and "upload the photo again" in theirs[1][0]


def test_a_photo_search_made_for_other_vectors_lists_nothing(admin_client, photos):
    """A session's photo token from another admin (another model or embedding field, whose
    encoder makes 512-d visual vectors) is not compared with this admin's 1280-d vectors."""
    from django_semantic_images.admin.ranking import SESSION_KEY

    session = admin_client.session
    other = base64.b64encode(np.ones(512, dtype=np.float16).tobytes()).decode("ascii")
    session[SESSION_KEY] = {"other": {"vector": other, "thumbnail": "", "name": "cat.jpg"}}
    session.save()
    response = admin_client.get(reverse(CHANGELIST), {"photo": "other"})
    assert ranked_pks(response) == []
    assert any("upload the photo again" in m for m in messages_of(response)), messages_of(response)


# -- status filter, re-embed action --------------------------------------------


def test_the_failed_filter_lists_failed_rows_with_their_reason(admin_client, photos):
    response = admin_client.get(reverse(CHANGELIST), {"embedding": "failed"})
    assert ranked_pks(response) == [photos["broken"].pk]
    html = response.content.decode()
    assert "si-status-failed" in html and "truncated or corrupt" in html
    embedded = ranked_pks(admin_client.get(reverse(CHANGELIST), {"embedding": "embedded"}))
    assert photos["broken"].pk not in embedded and len(embedded) == len(photos) - 1


def test_a_new_upload_shows_pending_and_no_vectors_until_it_is_embedded(admin_client, photos, sample_paths):
    """The status and the stored vectors decide what is shown, not the time stamp of a pending row."""
    with embedding_deferred():  # a new upload whose embedding has not run yet
        fresh = Photo(title="Fresh upload")
        fresh.image.save("fresh.jpg", ContentFile(sample_paths["coffee"].read_bytes()), save=False)
        fresh.save()
    assert fresh.embedding_status == EmbeddingStatus.PENDING and fresh.embedding_updated_at is not None
    html = admin_client.get(reverse(CHANGELIST), {"embedding": "pending"}).content.decode()
    assert "si-status-pending" in html and "Not embedded yet" in html
    assert f"?similar_to={fresh.pk}" not in html  # nothing to compare with yet
    form = admin_client.get(reverse("admin:photos_photo_change", args=[fresh.pk])).content.decode()
    assert "none yet" in form and "semantic 384-d, stored" not in form and "Pending since" in form
    assert f"?similar_to={fresh.pk}" not in form


def test_a_ranking_says_how_many_rows_it_cannot_find_yet(admin_client, photos):
    """Rows not embedded yet are in no ranking: "0 results" (or a short list) said nothing of them.
    The count is of the rows the editor's filters list; a row with vectors being embedded again is
    still found, so not counted."""
    waiting = [photos["coffee"].pk, photos["rocket"].pk]
    cleared = {"embedding_visual": None, "embedding_semantic": None}
    Photo.objects.filter(pk__in=waiting).update(embedding_status=EmbeddingStatus.PENDING, **cleared)
    Photo.objects.filter(pk=photos["rocket"].pk).update(published=False)
    Photo.objects.filter(pk=photos["chelsea"].pk).update(embedding_status=EmbeddingStatus.PENDING)
    note = "2 images are not embedded yet: searches by meaning and by likeness find them once they are."
    response = admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee"})
    assert photos["coffee"].pk not in ranked_pks(response) and note in messages_of(response)
    response = admin_client.get(reverse(CHANGELIST), {"similar_to": photos["chelsea"].pk, "published__exact": "0"})
    assert "1 image is not embedded yet: searches by meaning and by likeness find it once it is." in messages_of(
        response
    )
    assert not [m for m in messages_of(admin_client.get(reverse(CHANGELIST))) if "not embedded yet" in m]


@pytest.mark.skipif(django.VERSION < (5, 0), reason="facet counts came with Django 5.0")
def test_facet_counts_leave_the_listings_note_once(admin_client, photos):
    """With "Show counts" (``_facets``) Django lists the rows again for each list filter, without that
    filter: the note was added each time, three notes, one of them counting rows the page does not list."""
    waiting = [photos["coffee"].pk, photos["rocket"].pk]
    cleared = {"embedding_visual": None, "embedding_semantic": None}
    Photo.objects.filter(pk__in=waiting).update(embedding_status=EmbeddingStatus.PENDING, **cleared)
    Photo.objects.filter(pk=photos["rocket"].pk).update(published=False)
    params = {"q": "a cup of coffee", "published__exact": "1", "_facets": "True"}
    for listing in (params, {**params, "q": "", "similar_to": photos["chelsea"].pk}):
        notes = [m for m in messages_of(admin_client.get(reverse(CHANGELIST), listing)) if "not embedded yet" in m]
        assert notes == ["1 image is not embedded yet: searches by meaning and by likeness find it once it is."]


def test_an_action_on_a_ranked_listing_leaves_only_the_next_pages_messages(admin_client, photos, sample_paths):
    """The listing's notes were also added while Django built the changelist of an action's POST
    (twice: the ChangeList and the action's queryset), then shown after the redirect beside the
    action's own message: "1 image is not embedded yet" three times, about a row just embedded."""
    with embedding_deferred():
        waiting = upload(sample_paths["chelsea"], title="A waiting cat")
    listing = reverse(CHANGELIST) + "?q=a+waiting+cat"
    note = "1 image is not embedded yet: searches by meaning and by likeness find it once it is."
    assert messages_of(admin_client.get(listing)) == [note]
    data = {"action": "reembed_selected", "_selected_action": [waiting.pk], "index": "0"}
    response = admin_client.post(listing, data, follow=True)
    assert Photo.objects.get(pk=waiting.pk).embedding_status == EmbeddingStatus.EMBEDDED
    assert messages_of(response) == ["Re-embedded 1 of 1 image."]
    # A ranking's warning about its source row, likewise: once, on the page that shows the listing.
    similar = reverse(CHANGELIST) + f"?similar_to={photos['broken'].pk}"
    data = {"action": "reembed_selected", "_selected_action": [photos["broken"].pk], "index": "0"}
    texts = messages_of(admin_client.post(similar, data, follow=True))
    assert len([m for m in texts if "could not be embedded" in m]) == 1, texts


def test_a_row_being_embedded_again_keeps_its_vectors_and_says_so(admin_client, photos):
    cat, coffee = photos["chelsea"], photos["coffee"]
    Photo.objects.filter(pk=cat.pk).update(embedding_status=EmbeddingStatus.PENDING)
    Photo.objects.filter(pk=coffee.pk).update(embedding_visual=None, embedding_semantic=None)
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "previous vectors are still searched" in html and f"?similar_to={cat.pk}" in html
    assert "si-status-missing" in html and f"?similar_to={coffee.pk}" not in html
    form = admin_client.get(reverse("admin:photos_photo_change", args=[coffee.pk])).content.decode()
    assert "none yet" in form and "Marked embedded, but no vectors are stored" in form


def test_the_reembed_action_embeds_again_and_reports(admin_client, photos):
    rocket, broken = photos["rocket"], photos["broken"]
    before = Photo.objects.get(pk=rocket.pk).embedding_updated_at
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "reembed_selected", "_selected_action": [rocket.pk, broken.pk]},
        follow=True,
    )
    assert response.status_code == 200
    rocket.refresh_from_db()
    broken.refresh_from_db()
    assert rocket.embedding_status == EmbeddingStatus.EMBEDDED and rocket.embedding_updated_at > before
    assert broken.embedding_status == EmbeddingStatus.FAILED and "truncated" in broken.embedding_error
    assert any("Re-embedded 1 of 2" in m and "1 failed" in m for m in messages_of(response))


def test_an_action_on_malformed_ids_leaves_them_out(admin_client, photos):
    """A forged selection naming ids no row can have (text, a UUID on an integer key) was a
    ValueError in Django's filter of the selection, a 500: they are left out, as unknown ids are."""
    rocket = photos["rocket"]
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "reembed_selected", "_selected_action": [*NONSENSE_IDS, rocket.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert messages_of(response) == ["Re-embedded 1 of 1 image."]
    # Nothing a key can hold: nothing selected, nothing changed (Django's own answer to that).
    before = list(Photo.objects.values_list("pk", "embedding_updated_at").order_by("pk"))
    malformed = [raw for raw in NONSENSE_IDS if not raw.lstrip("-").isdigit()]
    response = admin_client.post(reverse(CHANGELIST), {"action": "reembed_selected", "_selected_action": malformed})
    assert response.status_code == 302 and response["Location"] == reverse(CHANGELIST)
    assert any("Items must be selected" in m for m in messages_of(response)), messages_of(response)
    assert list(Photo.objects.values_list("pk", "embedding_updated_at").order_by("pk")) == before


def test_the_actions_use_no_deprecated_django_api(admin_client, photos):
    """Django 6.1 deprecates get_actions() without ``action_location`` and unpacking action tuples."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'value="reembed_selected"' in html
    ours = [str(w.message) for w in caught if "django_semantic_images" in w.filename]
    assert ours == []


def test_the_delete_action_still_works_on_the_listed_rows(admin_client, photos):
    pk = photos["astronaut"].pk
    response = admin_client.post(
        reverse(CHANGELIST) + "?q=a+person",
        {"action": "delete_selected", "_selected_action": [pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Photo.objects.filter(pk=pk).exists()


# -- change form ----------------------------------------------------------------


def test_the_change_form_shows_the_index_state_but_never_the_vectors(admin_client, photos):
    cat = photos["chelsea"]
    response = admin_client.get(reverse("admin:photos_photo_change", args=[cat.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert get_encoder().identity in html and "si-status-embedded" in html
    assert "visual 1280-d and semantic 384-d, stored" in html
    assert f'href="{reverse(CHANGELIST)}?similar_to={cat.pk}"' in html
    assert "embedding_visual" not in html and "embedding_semantic" not in html
    for value in np.asarray(cat.embedding_visual)[:5]:
        assert f"{value:.6f}"[:8] not in html
    top = cat.embedding_labels[0]
    assert top["probability"] >= 0.1
    assert f'data-semantic-suggestion="{top["label"]}" data-target="id_alt_text"' in html


def test_the_change_form_shows_the_embedding_time_in_the_sites_time_zone(admin_client, photos, settings):
    """As the admin's other dates ("Created at"), not in UTC."""
    settings.TIME_ZONE = "Asia/Kathmandu"  # UTC+05:45: no hour or minute in common with UTC
    cat = Photo.objects.get(pk=photos["chelsea"].pk)
    html = admin_client.get(reverse("admin:photos_photo_change", args=[cat.pk])).content.decode()
    row = re.search(r"<th>Embedded at</th><td>(.*?)</td>", html).group(1)
    assert row == date_format(timezone.localtime(cat.embedding_updated_at), "DATETIME_FORMAT")
    assert row != date_format(cat.embedding_updated_at, "DATETIME_FORMAT")


def test_suggestions_are_plain_labels_when_the_form_cannot_take_them(admin_client, photos, monkeypatch):
    """An admin showing the alt text read-only (or leaving it out): buttons would fill nothing."""
    cat = photos["chelsea"]
    url = reverse("admin:photos_photo_change", args=[cat.pk])
    top = cat.embedding_labels[0]["label"]
    monkeypatch.setattr(admin.site._registry[Photo], "readonly_fields", ["alt_text"])
    html = admin_client.get(url).content.decode()
    assert "data-semantic-suggestion" not in html and f"{top} (" in html
    monkeypatch.setattr(admin.site._registry[Photo], "readonly_fields", [])
    monkeypatch.setattr(admin.site._registry[Photo], "exclude", ["alt_text"])
    html = admin_client.get(url).content.decode()
    assert "data-semantic-suggestion" not in html and f"{top} (" in html


def test_saving_the_change_form_writes_no_suggestion(admin_client, photos):
    """Suggestions are filled in the browser only; a save without them leaves the alt text alone."""
    cat = photos["chelsea"]
    url = reverse("admin:photos_photo_change", args=[cat.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form.initial.get(name) or "" for name in form.fields if name != "image"}
    data["published"] = "on"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    cat.refresh_from_db()
    assert cat.alt_text == "" and cat.embedding_status == EmbeddingStatus.EMBEDDED


def test_a_raw_vector_named_in_readonly_fields_is_not_rendered(admin_client, photos, monkeypatch):
    from photos.admin import PhotoAdmin

    monkeypatch.setattr(PhotoAdmin, "readonly_fields", ["embedding_visual", "embedding_encoder"])
    monkeypatch.setattr(PhotoAdmin, "list_display", ["__str__", "embedding_visual"])
    html = admin_client.get(reverse("admin:photos_photo_change", args=[photos["chelsea"].pk])).content.decode()
    assert "field-embedding_encoder" in html and "field-embedding_visual" not in html
    assert "column-embedding_visual" not in admin_client.get(reverse(CHANGELIST)).content.decode()


@pytest.mark.urls("tests.admin_urls")
def test_the_vectors_of_a_models_other_embedding_field_are_not_rendered_either(admin_client, photos):
    """tests/admin_urls.py: an admin of a model with two embedding fields ranks by one; the other's
    vector columns, named in readonly_fields or list_display, were rendered as numbers."""
    from tests.multifield.models import CaptionedPhoto

    with embedding_deferred():
        row = CaptionedPhoto(caption="A cat")
        row.image.save("captioned.jpg", ContentFile(b"not read"), save=False)
        row.save()
    Photo.objects.filter(pk=row.pk).update(embedding_visual=photos["chelsea"].embedding_visual)
    html = admin_client.get(reverse("two:multifield_captionedphoto_change", args=[row.pk])).content.decode()
    assert "field-embedding_encoder" in html and "field-embedding_visual" not in html
    html = admin_client.get(reverse("two:multifield_captionedphoto_changelist")).content.decode()
    assert "column-embedding_state" in html and "column-embedding_semantic" not in html


def test_an_upload_through_the_admin_goes_through_the_pipeline(
    admin_client, photos, sample_paths, django_capture_on_commit_callbacks
):
    upload = SimpleUploadedFile("cat-upload.png", sample_paths["chelsea"].read_bytes(), content_type="image/png")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(
            reverse("admin:photos_photo_add"),
            {"image": upload, "title": "New cat", "alt_text": "", "published": "on", "owner": ""},
        )
    assert response.status_code == 302
    # One on-commit embedding request (the post_save signal's), then the admin's report of it (besides
    # the signals' hook that records the commit).
    sent = [c for c in callbacks if not isinstance(c, Committed)]
    assert [type(c) for c in sent][:1] == [PendingRows] and len(sent) == 2
    photo = Photo.objects.get(title="New cat")
    assert photo.embedding_status == EmbeddingStatus.EMBEDDED
    assert ranked_pks(admin_client.get(reverse(CHANGELIST), {"similar_to": photo.pk}))[0] in (
        photos["chelsea"].pk,
        photos["cat-crop"].pk,
    )


@pytest.fixture
def redis_queue(settings):
    """A real Redis broker, under this session's key prefix, and a queue of this test's own;
    yields (client, the queue's Redis key)."""
    import uuid

    from example_project.celery import app

    queue = f"test-admin-{uuid.uuid4().hex[:8]}"
    settings.SEMANTIC_IMAGES = {"ASYNC": True, "QUEUE": queue}
    client = redis_client()
    with configured_app(app, broker_url=REDIS_URL, broker_transport_options=BROKER_OPTIONS):
        yield client, f"{KEY_PREFIX}{queue}"
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*{queue}*"))
    if keys:
        client.delete(*keys)


def test_with_a_broker_uploads_and_reembedding_go_to_the_queue(
    admin_client, photos, sample_paths, redis_queue, django_capture_on_commit_callbacks
):
    client, queue = redis_queue
    upload = SimpleUploadedFile("queued.png", sample_paths["coffee"].read_bytes(), content_type="image/png")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:photos_photo_add"), {"image": upload, "title": "Queued", "published": "on"})
        response = admin_client.post(
            reverse(CHANGELIST),
            {"action": "reembed_selected", "_selected_action": [photos["rocket"].pk]},
            follow=True,
        )
    new = Photo.objects.get(title="Queued")
    messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
    tasks = sorted((m["headers"]["task"], m["headers"]["argsrepr"]) for m in messages)
    assert [task for task, _args in tasks] == ["semantic_images.embed_rows"] * 2
    assert {str(new.pk), str(photos["rocket"].pk)} == {re.search(r"\['(\d+)'\]", a).group(1) for _t, a in tasks}
    assert new.embedding_status == EmbeddingStatus.PENDING  # the worker embeds it, not the request
    assert Photo.objects.get(pk=photos["rocket"].pk).embedding_status == EmbeddingStatus.PENDING
    assert response.status_code == 200  # its message: test_the_reembed_action_says_how_many_the_queue_took


# -- what the add and change forms say about the embedding ------------------------
# These tests commit (transaction=True): the admin's own transaction then ends inside the
# request, so the embedding sent on commit runs before the response, as on a real site.


def post_photo(client, url: str, data: bytes, name: str, title: str):
    upload = SimpleUploadedFile(name, data, content_type="image/jpeg")
    fields = {"image": upload, "title": title, "alt_text": "", "published": "on", "owner": ""}
    return client.post(url, fields, follow=True)


def truncated_jpeg(path) -> bytes:
    """A JPEG cut in half: Django's ImageField accepts it (the header is whole), decoding fails."""
    data = image_bytes(Image.open(path).convert("RGB"), quality=90)
    return data[: len(data) // 2]


@pytest.mark.django_db(transaction=True)
def test_the_add_and_change_forms_say_when_the_image_could_not_be_embedded(admin_client, sample_paths):
    response = post_photo(
        admin_client, reverse("admin:photos_photo_add"), truncated_jpeg(sample_paths["rocket"]), "cut.jpg", "Cut"
    )
    photo = Photo.objects.get(title="Cut")
    assert photo.embedding_status == EmbeddingStatus.FAILED  # embedded in-process, no broker
    texts = messages_of(response)
    assert any("was added successfully" in m for m in texts), texts
    assert f"The image could not be embedded: {photo.embedding_error}" in texts
    assert "truncated or corrupt" in photo.embedding_error
    assert "messagelist" in response.content.decode() and "could not be embedded" in response.content.decode()
    # Replacing the picture with a good one: the change form says it is embedded now.
    change = reverse("admin:photos_photo_change", args=[photo.pk])
    response = post_photo(admin_client, change, sample_paths["chelsea"].read_bytes(), "cat.jpg", "Cut")
    photo.refresh_from_db()
    assert photo.embedding_status == EmbeddingStatus.EMBEDDED
    assert "“<bdi>Cut</bdi>” was embedded: searches find it now." in messages_of(response)
    # A save that changes nothing the vectors depend on says nothing about embedding.
    response = admin_client.post(change, {"title": "Cut", "alt_text": "", "owner": ""}, follow=True)
    assert response.status_code == 200 and Photo.objects.get(pk=photo.pk).published is False
    assert not [m for m in messages_of(response) if "embedded" in m], messages_of(response)


@pytest.mark.django_db(transaction=True)
def test_with_a_broker_the_add_and_change_forms_say_the_embedding_was_queued(admin_client, sample_paths, redis_queue):
    client, key = redis_queue
    response = post_photo(
        admin_client, reverse("admin:photos_photo_add"), sample_paths["coffee"].read_bytes(), "q.jpg", "Queued"
    )
    photo = Photo.objects.get(title="Queued")
    assert photo.embedding_status == EmbeddingStatus.PENDING and client.llen(key) == 1
    assert any(m.startswith("Embedding was queued;") for m in messages_of(response)), messages_of(response)
    change = reverse("admin:photos_photo_change", args=[photo.pk])
    response = admin_client.post(
        change, {"title": "Queued again", "alt_text": "", "published": "on", "owner": ""}, follow=True
    )
    assert client.llen(key) == 2
    assert any(m.startswith("Embedding was queued;") for m in messages_of(response)), messages_of(response)


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_the_add_form_says_the_embedding_was_not_queued(admin_client, sample_paths, settings):
    """The broker refused the work (the row stays pending, for the sweep): not "Embedding was queued"."""
    from example_project.celery import app

    settings.SEMANTIC_IMAGES = {"ASYNC": True}
    with configured_app(app, broker_url="redis://127.0.0.1:1/0"):  # nothing listens there
        response = post_photo(
            admin_client, reverse("admin:photos_photo_add"), sample_paths["coffee"].read_bytes(), "u.jpg", "Unsent"
        )
    assert Photo.objects.get(title="Unsent").embedding_status == EmbeddingStatus.PENDING
    texts = messages_of(response)
    assert "“<bdi>Unsent</bdi>” could not be queued now and stays pending; the periodic sweep will send it." in texts, (
        texts
    )
    assert not [m for m in texts if m.startswith("Embedding was queued")], texts


@pytest.mark.django_db(transaction=True)
def test_with_embedding_on_save_off_the_add_form_says_nothing_was_queued(admin_client, sample_paths, settings):
    """EMBED_ON_SAVE off: no work is sent on save (the sweep and the commands embed); the form said
    "Embedding was queued"."""
    settings.SEMANTIC_IMAGES = {"ASYNC": True, "EMBED_ON_SAVE": False}
    response = post_photo(
        admin_client, reverse("admin:photos_photo_add"), sample_paths["coffee"].read_bytes(), "o.jpg", "Off"
    )
    assert Photo.objects.get(title="Off").embedding_status == EmbeddingStatus.PENDING
    texts = messages_of(response)
    assert (
        "“<bdi>Off</bdi>” is pending: embedding on save is off (EMBED_ON_SAVE), so the periodic sweep or "
        "semantic_images_reindex embeds it." in texts
    ), texts


@pytest.mark.django_db(transaction=True)
def test_a_save_in_a_related_objects_popup_leaves_no_message_for_the_next_page(admin_client, sample_paths):
    """Django says nothing after a save in the popup of a foreign key's "+" or pencil (the window
    closes); the embedding's message was stored all the same and shown on whatever admin page the
    editor opened next, about an image saved elsewhere."""
    add = reverse("admin:photos_photo_add") + "?_popup=1"
    upload = SimpleUploadedFile("popup.jpg", sample_paths["coffee"].read_bytes(), content_type="image/jpeg")
    fields = {"image": upload, "title": "Popup", "alt_text": "", "owner": "", "_popup": "1"}
    response = admin_client.post(add, fields)
    assert response.status_code == 200 and "popup_response_data" in response.context
    photo = Photo.objects.get(title="Popup")
    assert photo.embedding_status == EmbeddingStatus.EMBEDDED  # embedded in-process, no broker
    change = reverse("admin:photos_photo_change", args=[photo.pk]) + "?_popup=1"
    upload = SimpleUploadedFile("popup2.jpg", sample_paths["rocket"].read_bytes(), content_type="image/jpeg")
    response = admin_client.post(change, {**fields, "image": upload, "title": "Popup changed"})
    assert response.status_code == 200 and "popup_response_data" in response.context
    assert Photo.objects.get(pk=photo.pk).embedding_status == EmbeddingStatus.EMBEDDED
    assert messages_of(admin_client.get(reverse(CHANGELIST))) == []


@pytest.mark.django_db(transaction=True)
def test_the_reembed_action_says_how_many_the_queue_took(admin_client, sample_paths, redis_queue):
    """The message comes once the tasks were sent (after the commit): with the broker down, the rows
    stay pending for the sweep, and the action said "2 images were queued for embedding"."""
    from example_project.celery import app

    client, key = redis_queue
    with embedding_deferred():
        rows = [upload(sample_paths[stem], title=stem) for stem in ("coffee", "rocket")]
    data = {"action": "reembed_selected", "_selected_action": [rows[0].pk]}
    assert messages_of(admin_client.post(reverse(CHANGELIST), data, follow=True)) == [
        "1 image was queued for embedding."
    ]
    assert client.llen(key) == 1
    data["_selected_action"] = [row.pk for row in rows]
    with configured_app(app, broker_url="redis://127.0.0.1:1/0"):  # nothing listens there
        texts = messages_of(admin_client.post(reverse(CHANGELIST), data, follow=True))
    assert texts == ["2 images could not be queued and stay pending; the periodic sweep will send them."], texts
    assert [status_of(row) for row in rows] == [EmbeddingStatus.PENDING] * 2


# -- permissions ------------------------------------------------------------------


def staff_user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="photos", codename__in=codenames))
    return user


def test_a_user_without_view_permission_gets_no_results(client, photos, sample_paths):
    client.force_login(staff_user("nobody"))
    assert client.get(reverse(CHANGELIST), {"q": "a cup of coffee"}).status_code == 403
    assert client.get(reverse(CHANGELIST), {"similar_to": photos["chelsea"].pk}).status_code == 403
    response = client.post(reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["rocket"])})
    assert response.status_code == 403


def test_a_user_without_view_permission_learns_nothing_from_similar_to(client, photos):
    """The 403 comes before the source row is looked up: no message names a row, or tells a
    hidden row from a missing one, on the next page the user opens."""
    client.force_login(staff_user("nobody"))
    told = []
    for pk in (photos["broken"].pk, photos["chelsea"].pk, 999999):
        assert client.get(reverse(CHANGELIST), {"similar_to": pk}).status_code == 403
        told.append(messages_of(client.get(reverse("admin:index"))))
    assert told == [[], [], []]


def test_a_viewer_can_search_but_not_reembed(client, photos):
    client.force_login(staff_user("viewer", "view_photo"))
    response = client.get(reverse(CHANGELIST), {"q": "a cup of coffee"})
    assert ranked_pks(response)[0] == photos["coffee"].pk
    assert "reembed_selected" not in response.content.decode()
    before = Photo.objects.get(pk=photos["coffee"].pk).embedding_updated_at
    client.post(reverse(CHANGELIST), {"action": "reembed_selected", "_selected_action": [photos["coffee"].pk]})
    assert Photo.objects.get(pk=photos["coffee"].pk).embedding_updated_at == before


@pytest.mark.urls("tests.admin_urls")
def test_an_admin_that_restricts_rows_restricts_every_ranking(client, photos, sample_paths):
    """tests/admin_urls.py: an admin whose get_queryset shows editors only their own photos."""
    owner = staff_user("owner", "view_photo")
    Photo.objects.filter(pk__in=[photos["coffee"].pk, photos["rocket"].pk]).update(owner=owner)
    client.force_login(owner)
    url = reverse("own:photos_photo_changelist")
    assert sorted(ranked_pks(client.get(url, {"q": "a cat"}))) == sorted([photos["coffee"].pk, photos["rocket"].pk])
    assert ranked_pks(client.get(url, {"similar_to": photos["chelsea"].pk})) == []  # not theirs
    assert ranked_pks(client.get(url, {"similar_to": photos["coffee"].pk})) == [photos["rocket"].pk]
    upload = flipped_upload(sample_paths["chelsea"])
    redirect = client.post(reverse("own:photos_photo_search_by_photo"), {"photo": upload})
    assert set(ranked_pks(client.get(redirect["Location"]))) <= {photos["coffee"].pk, photos["rocket"].pk}


@pytest.mark.urls("tests.admin_urls")
def test_the_reembed_action_leaves_out_rows_the_user_may_not_change(client, photos):
    """tests/admin_urls.py: an admin whose has_change_permission(request, obj) lets editors change
    only their own photos; the action re-embedded every selected row and counted them all."""
    owner = staff_user("owner", "view_photo", "change_photo")
    coffee, rocket = photos["coffee"], photos["rocket"]
    Photo.objects.filter(pk=coffee.pk).update(owner=owner)
    before = dict(Photo.objects.values_list("pk", "embedding_updated_at"))
    client.force_login(owner)
    data = {"action": "reembed_selected", "_selected_action": [coffee.pk, rocket.pk]}
    response = client.post(reverse("change_own:photos_photo_changelist"), data, follow=True)
    assert messages_of(response) == ["Re-embedded 1 of 1 image. 1 selected image you may not change was left out."]
    after = dict(Photo.objects.values_list("pk", "embedding_updated_at"))
    assert after[rocket.pk] == before[rocket.pk] and after[coffee.pk] > before[coffee.pk]
    data["_selected_action"] = [rocket.pk]
    response = client.post(reverse("change_own:photos_photo_changelist"), data, follow=True)
    assert messages_of(response) == ["You may not change the selected image: nothing was re-embedded."]
    assert Photo.objects.get(pk=rocket.pk).embedding_updated_at == before[rocket.pk]
    data["_selected_action"] = [999999]  # deleted meanwhile: not a refusal
    response = client.post(reverse("change_own:photos_photo_changelist"), data, follow=True)
    assert messages_of(response) == ["The selected images are no longer listed: nothing was re-embedded."]


@pytest.mark.urls("tests.admin_urls")
def test_similar_to_a_row_the_admin_hides_answers_like_a_missing_one(client, photos):
    """The same status, Content-Type, message and page as for an id no row has, but for the id."""
    owner = staff_user("owner", "view_photo")
    Photo.objects.filter(pk=photos["coffee"].pk).update(owner=owner)
    client.force_login(owner)
    url = reverse("own:photos_photo_changelist")

    def page(pk: int) -> tuple[int, str, list[str], str]:
        response = client.get(url, {"similar_to": pk})
        html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
        html = html.replace(f"“<bdi>{pk}</bdi>”", "“<bdi>ID</bdi>”").replace(f"similar_to={pk}", "similar_to=ID")
        return response.status_code, response["Content-Type"], messages_of(response), html

    hidden, missing = page(photos["chelsea"].pk), page(Photo.objects.order_by("-pk").first().pk + 1000)
    assert hidden[:2] == missing[:2] == (200, "text/html; charset=utf-8")
    assert hidden[3] == missing[3]
    assert "There is no image with ID “<bdi>ID</bdi>” that you can see." in hidden[3]
    assert [m.replace(str(photos["chelsea"].pk), "ID") for m in hidden[2]] == [
        "There is no image with ID “<bdi>ID</bdi>” that you can see."
    ]


@pytest.mark.urls("tests.admin_urls")
def test_the_ready_admin_without_search_fields_still_searches_by_meaning(admin_client, photos):
    response = admin_client.get(reverse("plain:photos_photo_changelist"), {"q": "a cup of coffee"})
    assert ranked_pks(response)[0] == photos["coffee"].pk
    html = response.content.decode()
    assert 'id="searchbar"' in html and 'id="photo-search"' in html and "si-thumb" in html
    # No search fields, no ordinary matches listed first: the help under the box does not promise them.
    assert '<div class="help" id="searchbar_helptext">Ranks images by meaning.</div>' in html


@pytest.mark.urls("tests.admin_urls")
def test_the_mixin_on_an_admin_with_its_own_changelist_keeps_it(admin_client, photos):
    """tests/admin_urls.py: the mixin put first on an admin whose get_changelist() gives a ChangeList
    of its own (published photos only); the mixin replaced it with its own, dropping its filter."""
    from tests.admin_urls import OwnChangeList

    Photo.objects.filter(pk=photos["coffee"].pk).update(published=False)
    url = reverse("own_changelist:photos_photo_changelist")
    response = admin_client.get(url, {"q": "a cup of coffee"})
    assert isinstance(response.context["cl"], OwnChangeList)
    ranked = ranked_pks(response)
    assert ranked and photos["coffee"].pk not in ranked
    assert [row.score for row in response.context["cl"].result_list] == sorted(
        (row.score for row in response.context["cl"].result_list), reverse=True
    )
    similar = admin_client.get(url, {"similar_to": photos["chelsea"].pk})
    assert photos["cat-crop"].pk == ranked_pks(similar)[0] and photos["coffee"].pk not in ranked_pks(similar)


def test_the_mixin_on_a_model_without_an_embedding_field_fails_the_system_check():
    from django.contrib import admin

    from django_semantic_images.admin import SemanticImageAdmin

    errors = SemanticImageAdmin(User, admin.AdminSite()).check()
    assert [e.id for e in errors] == ["semantic_images.E101"]
    assert "User has no ImageEmbeddingField" in errors[0].msg
    assert not admin.site._registry[Photo].check()


def test_the_browser_tests_write_screenshots_to_docs_only_when_asked(monkeypatch, tmp_path):
    """`make test` leaves docs/img alone; `make screenshots` sets the variable to docs/img."""
    from tests import test_browser_admin as browser_tests

    monkeypatch.delenv(browser_tests.SCREENSHOTS_ENV, raising=False)
    assert browser_tests.screenshot_folder(tmp_path) == tmp_path
    monkeypatch.setenv(browser_tests.SCREENSHOTS_ENV, str(browser_tests.DOCS / "img"))
    assert browser_tests.screenshot_folder(tmp_path) == browser_tests.DOCS / "img"
    makefile = (browser_tests.DOCS.parent / "Makefile").read_text()
    assert f"{browser_tests.SCREENSHOTS_ENV}=$(CURDIR)/docs/img" in makefile
    assert f"env -u {browser_tests.SCREENSHOTS_ENV}" in makefile.split("\ntest:")[1].split("\n\n")[0]


def test_a_search_in_a_script_the_text_model_cannot_read_matches_keywords_with_a_message(admin_client, photos):
    """all-MiniLM-L6-v2 reads Latin script only: Cyrillic words are matched in the search
    fields (unranked) and a message says so, instead of a ranking that would be noise."""
    Photo.objects.filter(pk=photos["chelsea"].pk).update(alt_text="Рыжая кошка на диване")
    response = admin_client.get(reverse(CHANGELIST), {"q": "кошка"})
    assert ranked_pks(response) == [photos["chelsea"].pk]
    (message,) = [m for m in messages_of(response) if "cannot read" in m]
    assert "Cyrillic" in message and "keywords" in message
    # Latin words are ranked by meaning as before, without the message.
    response = admin_client.get(reverse(CHANGELIST), {"q": "a cup of coffee"})
    assert ranked_pks(response)[0] == photos["coffee"].pk
    assert not [m for m in messages_of(response) if "cannot read" in m]


def test_the_search_fields_find_a_text_stored_decomposed(admin_client, photos):
    """Search words are read composed (NFC); a text stored decomposed (NFD: a title from a macOS file
    name, an import) holds other code points, and Django's ``icontains`` over the search fields missed
    it: the ranking's search-field matches, the keyword match of words the text model cannot read and
    the autocomplete. Each word now matches in either form, each in a field of its own if need be."""
    nfd = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731
    assert nfd("café") != "café"
    # No vector: only the search fields' match lists it.
    Photo.objects.filter(pk=photos["broken"].pk).update(title=nfd("Crème brûlée au café"))
    Photo.objects.filter(pk=photos["chelsea"].pk).update(title=nfd("Рыжая кошка ест йогурт"), alt_text="ёжик")
    for words in ("café", nfd("café"), "brûlée café", '"crème brûlée"'):
        response = admin_client.get(reverse(CHANGELIST), {"q": words})
        matched = [row.pk for row in response.context["cl"].result_list if row.search_match]
        assert matched == [photos["broken"].pk], words
    # Words the text model cannot read: the search fields' matches alone, a word in either form.
    for words in ("йогурт", nfd("йогурт"), "йогурт ёжик", "кошка"):
        assert ranked_pks(admin_client.get(reverse(CHANGELIST), {"q": words})) == [photos["chelsea"].pk], words
    assert ranked_pks(admin_client.get(reverse(CHANGELIST), {"q": "йогурт нет"})) == []
    url = reverse("admin:autocomplete")
    params = {"app_label": "multifield", "model_name": "photoalbum", "field_name": "cover"}
    found = admin_client.get(url, {**params, "term": "йогурт"})
    assert [row["id"] for row in found.json()["results"]] == [str(photos["chelsea"].pk)]


def test_a_property_among_the_text_fields_is_left_out_of_the_admins_keyword_match(admin_client, photos, monkeypatch):
    """Without search_fields, words the text model cannot read are matched in the text fields: a
    property among them (``text_fields`` takes one) is no column, and filtering on it was a 500."""
    from django.contrib import admin

    from django_semantic_images.fields import get_embedding_field

    monkeypatch.setattr(admin.site._registry[Photo], "search_fields", ())
    monkeypatch.setattr(get_embedding_field(Photo), "text_fields", ("alt_text", "caption_words"))
    monkeypatch.setattr(Photo, "caption_words", property(lambda self: self.alt_text), raising=False)
    Photo.objects.filter(pk=photos["chelsea"].pk).update(alt_text="Рыжая кошка на диване")
    response = admin_client.get(reverse(CHANGELIST), {"q": "кошка"})
    assert ranked_pks(response) == [photos["chelsea"].pk]
    (message,) = [m for m in messages_of(response) if "cannot read" in m]
    assert "in alt_text (" in message


def test_an_encoder_that_cannot_load_leaves_the_keyword_search_with_a_message(admin_client, photos, settings):
    """A text model that is not there (weights missing, a hub unreachable) was a 500 for every search
    by words and by photo; the search fields' matches are listed, the photo comes back, and each says why."""
    Photo.objects.filter(pk=photos["coffee"].pk).update(alt_text="A cup of coffee")
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": "/nonexistent/text-model"}}
    response = admin_client.get(reverse(CHANGELIST), {"q": "coffee"})
    assert ranked_pks(response) == [photos["coffee"].pk]
    assert "Search by meaning is unavailable now" in " ".join(messages_of(response))
    response = admin_client.post(
        reverse(BY_PHOTO), {"photo": flipped_upload(photos["chelsea"].image.path), "filters": "published__exact=1"}
    )
    assert response.status_code == 302 and response["Location"] == reverse(CHANGELIST) + "?published__exact=1"
    assert "Search by photo is unavailable now" in " ".join(messages_of(response))


def test_the_autocomplete_leaves_no_message_for_a_later_page(admin_client, photos):
    """Django's autocomplete (an album's cover photo) answers JSON, where no message is shown: the
    note of a search in a script the text model cannot read waited, once per keystroke, for the
    editor's next admin page."""
    url = reverse("admin:autocomplete")
    params = {"app_label": "multifield", "model_name": "photoalbum", "field_name": "cover"}
    Photo.objects.filter(pk=photos["chelsea"].pk).update(alt_text="Рыжая кошка на диване")
    for term in ("кош", "кошка"):
        found = admin_client.get(url, {**params, "term": term})
        assert [row["id"] for row in found.json()["results"]] == [str(photos["chelsea"].pk)]
    assert messages_of(admin_client.get(reverse("admin:index"))) == []


def test_a_row_with_a_zero_vector_is_shown_without_a_score_and_never_ranked_first(admin_client, photos, sample_paths):
    """A vector of all zeros (written by SQL or ``update()``: the pipeline refuses one) scores NaN: the
    score column showed "nan", and PostgreSQL sorts NaN above every number. Each ranking now shows such a
    row without a score, after the scored rows, as the API does."""
    coffee, crop, rocket = photos["coffee"], photos["cat-crop"], photos["rocket"]
    Photo.objects.filter(pk=coffee.pk).update(embedding_semantic=np.zeros(384, np.float32))
    Photo.objects.filter(pk__in=[crop.pk, rocket.pk]).update(embedding_visual=np.zeros(1280, np.float32))
    token = re.search(
        r"photo=([\w-]+)",
        admin_client.post(reverse(BY_PHOTO), {"photo": flipped_upload(sample_paths["rocket"])})["Location"],
    ).group(1)
    rankings = {
        "search": ({"q": "a cup of coffee"}, coffee),
        "similar": ({"similar_to": photos["chelsea"].pk}, crop),
        "by photo": ({"photo": token}, rocket),
    }
    for name, (params, zero) in rankings.items():
        response = admin_client.get(reverse(CHANGELIST), params)
        results = response.context["cl"].result_list
        assert response.status_code == 200, name
        html = response.content.decode()
        assert "nan" not in re.findall(r'<td class="field-search_score">(.*?)</td>', html, re.S).__str__().lower(), name
        pks = [row.pk for row in results]
        unscored = [i for i, row in enumerate(results) if row.score is None or row.score != row.score]  # NaN
        assert unscored == list(range(len(pks) - len(unscored), len(pks))), name  # after every scored row
        assert zero.pk not in pks or pks.index(zero.pk) in unscored, name
        assert pks[0] != zero.pk, name
    # Similar images of the zero row itself: nothing can be compared with it; no 500, no "nan".
    response = admin_client.get(reverse(CHANGELIST), {"similar_to": crop.pk})
    assert response.status_code == 200 and ranked_pks(response) == []
    assert "a visual vector of all zeros" in " ".join(messages_of(response))
