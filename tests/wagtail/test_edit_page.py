"""An image's edit page: its embedding state, the Re-embed button and the similar images panel,
within what the editor may see."""

from __future__ import annotations

import io
import os
import re
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape
from PIL import Image, ImageOps
from wagtail import VERSION as WAGTAIL_VERSION
from wagtail.images import get_image_model
from wagtail.models import Collection, GroupCollectionPermission

from django_semantic_images.contrib.wagtail.edit_views import SemanticImageEditView
from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.fields import EmbeddingStatus, get_embedding_field
from django_semantic_images.pipeline import embed_pks

from .conftest import OTHER
from .editors import editor_of

pytestmark = pytest.mark.django_db


def edit_page(client, image):
    response = client.get(reverse("wagtailimages:edit", args=(image.pk,)))
    assert response.status_code == 200
    assert isinstance(response.context["view"], SemanticImageEditView)
    return response


def mirrored(path) -> bytes:
    """The photo flipped left to right, as a JPEG: the same scene, other bytes."""
    out = io.BytesIO()
    ImageOps.mirror(Image.open(path).convert("RGB")).save(out, "JPEG", quality=90)
    return out.getvalue()


def status_of(image) -> str:
    return ImageVectors.objects.get(pk=image.pk).embedding.status


def test_panel_lists_the_nearest_images_first(superuser_client, sample_images, make_image, embed, sample_paths):
    cat, horse = sample_images["chelsea"], sample_images["horse"]
    other_cat = make_image(mirrored(sample_paths["chelsea"]), "IMG_0100")
    embed(other_cat)
    response = edit_page(superuser_client, cat)
    similar = response.context["similar_images"]
    assert similar[0] == other_cat
    assert cat not in similar and set(similar) == set(sample_images.values()) - {cat} | {other_cat}
    assert [image.distance for image in similar] == sorted(image.distance for image in similar)
    html = response.content.decode()
    assert reverse("wagtailimages:edit", args=(other_cat.pk,)) in html  # each links to its edit page
    assert html.count('class="image-choice"') == len(similar)
    assert 'data-embedding-state="embedded"' in html
    if WAGTAIL_VERSION >= (8, 0):  # Wagtail 7's edit page has no stats block to add the state to
        assert '<a href="#semantic-images" data-embedding-status="embedded">Embedded</a>' in html  # beside the stats
    # Another image's page ranks its own neighbours.
    assert edit_page(superuser_client, horse).context["similar_images"][0] != other_cat


def test_panel_shows_at_most_its_count(superuser_client, sample_images, monkeypatch):
    monkeypatch.setattr(SemanticImageEditView, "similar_images_count", 2)
    similar = edit_page(superuser_client, sample_images["coffee"]).context["similar_images"]
    assert len(similar) == 2


def test_editors_never_see_another_collections_images_in_the_panel(
    client, django_user_model, make_image, embed, sample_paths
):
    root = Collection.get_first_root_node()
    pets, products = root.add_child(name="Pets"), root.add_child(name="Products")
    cat = make_image(sample_paths["chelsea"], "IMG_0001", collection=pets)
    other_cat = make_image(mirrored(sample_paths["chelsea"]), "IMG_0002", collection=products)
    mug = make_image(sample_paths["coffee"], "IMG_0003", collection=pets)
    embed(cat, other_cat, mug)
    client.force_login(editor_of(pets, django_user_model, "pets"))
    response = edit_page(client, cat)
    assert response.context["similar_images"] == [mug]
    assert reverse("wagtailimages:edit", args=(other_cat.pk,)) not in response.content.decode()
    # The products' editor sees the other cat's page, and the pets' images nowhere in its panel.
    client.force_login(editor_of(products, django_user_model, "products"))
    assert edit_page(client, other_cat).context["similar_images"] == []
    assert "No other embedded image" in edit_page(client, other_cat).content.decode()
    hidden = client.get(reverse("wagtailimages:edit", args=(cat.pk,)))
    missing = client.get(reverse("wagtailimages:edit", args=(cat.pk + 1000,)))
    assert hidden.status_code == missing.status_code == 404  # hidden answers like missing
    assert hidden.content == missing.content and hidden["Content-Type"] == missing["Content-Type"]


def test_pending_image_says_so(superuser_client, sample_images, make_image, sample_paths):
    waiting = make_image(sample_paths["rocket"], "IMG_0200")  # not embedded yet
    response = edit_page(superuser_client, waiting)
    assert response.context["similar_images"] is None
    html = response.content.decode()
    assert 'data-embedding-state="pending"' in html and 'data-similar-images="none"' in html
    assert "waiting to be embedded" in html and "data-embedding-error" not in html


def test_image_without_a_row_of_vectors_is_pending(superuser_client, make_image, sample_paths):
    image = make_image(sample_paths["rocket"], "IMG_0201")
    ImageVectors.objects.filter(pk=image.pk).delete()  # uploaded before the app was installed
    response = edit_page(superuser_client, get_image_model().objects.get(pk=image.pk))
    assert response.context["embedding_state"].status == EmbeddingStatus.PENDING
    assert response.context["similar_images"] is None


def test_failed_image_shows_the_reason(superuser_client, sample_images, make_image, sample_paths):
    lost = make_image(sample_paths["rocket"], "IMG_0300")
    os.remove(lost.file.path)  # its file was lost in storage before it was embedded
    assert list(embed_pks(ImageVectors, [lost.pk]).failed) == [lost.pk]
    error = ImageVectors.objects.get(pk=lost.pk).embedding.error
    assert error
    html = edit_page(superuser_client, lost).content.decode()
    assert 'data-embedding-state="failed"' in html and 'data-similar-images="none"' in html
    assert f"<span data-embedding-error>{escape(error)}</span>" in html
    assert "embedding it failed" in html


@pytest.mark.parametrize(
    "corrupt", [lambda data: data[: len(data) // 3], lambda data: b"not an image at all" * 10], ids=["cut", "garbage"]
)
def test_an_image_whose_file_cannot_be_read_opens_with_the_reason(
    superuser_client, sample_images, make_image, sample_paths, corrupt
):
    """A file present but cut short or corrupt (the failures the report links to): Wagtail's image
    tag raised from the page's preview and the listing's thumbnails (a 500); they are drawn as for
    a missing file, and the page says why the image failed."""
    broken = make_image(sample_paths["rocket"], "IMG_0400")
    with open(broken.file.path, "rb") as file:
        data = file.read()
    with open(broken.file.path, "wb") as file:
        file.write(corrupt(data))
    assert list(embed_pks(ImageVectors, [broken.pk]).failed) == [broken.pk]
    error = ImageVectors.objects.get(pk=broken.pk).embedding.error
    response = edit_page(superuser_client, broken)
    html = response.content.decode()
    assert 'data-embedding-state="failed"' in html and f"<span data-embedding-error>{escape(error)}</span>" in html
    assert 'src="/media/not-found"' in html
    # The listing (both layouts) draws it the same way, and the other images as before.
    for layout in ("grid", "list"):
        listing = superuser_client.get(reverse("wagtailimages:index"), {"layout": layout})
        assert listing.status_code == 200 and 'src="/media/not-found"' in listing.content.decode()
        assert len(listing.context["object_list"]) == len(sample_images) + 1
    # So does another image's panel, whose nearest images include it (its file broken after it was embedded).
    coffee = sample_images["coffee"]
    with open(coffee.file.path, "wb") as file:
        file.write(b"broken later")
    coffee.renditions.all().delete()  # the listing above drew its thumbnail before
    page = edit_page(superuser_client, sample_images["chelsea"])
    assert coffee in page.context["similar_images"] and 'src="/media/not-found"' in page.content.decode()


def test_an_image_whose_file_cannot_be_read_can_be_deleted_and_chosen(superuser_client, make_image, sample_paths):
    """Deleting the broken image the report lists, or choosing it in a page's image field: the
    delete page and the chooser's chosen and select_format steps drew its preview with Wagtail's
    image tag, which let the decoder's error through (a 500); it is drawn as a missing file."""
    broken = make_image(sample_paths["rocket"], "IMG_0401")
    with open(broken.file.path, "wb") as file:
        file.write(b"not an image at all")
    for name in ("wagtailimages_chooser:chosen", "wagtailimages_chooser:select_format"):
        response = superuser_client.get(reverse(name, args=(broken.pk,)))
        assert response.status_code == 200 and "not-found" in response.content.decode(), name
    delete_url = reverse("wagtailimages:delete", args=(broken.pk,))
    page = superuser_client.get(delete_url)
    assert page.status_code == 200 and 'src="/media/not-found"' in page.content.decode()
    assert superuser_client.post(delete_url).status_code == 302
    assert not get_image_model().objects.filter(pk=broken.pk).exists()


@pytest.mark.parametrize("form_base", [None, "django_semantic_images.contrib.wagtail.forms.ImageForm"])
def test_an_image_whose_file_cannot_be_read_can_be_saved(
    superuser_client, make_image, sample_paths, settings, form_base
):
    """Saving the edit page of an image whose file is cut short or corrupt without a new file (a
    new title): Django assigned the unchanged file again and read its dimensions from it, a 500
    for every save of the form. A new file still replaces it."""
    if form_base:
        settings.WAGTAILIMAGES_IMAGE_FORM_BASE = form_base
    broken = make_image(sample_paths["rocket"], "IMG_0402")
    with open(broken.file.path, "wb") as file:
        file.write(b"not an image at all")
    url = reverse("wagtailimages:edit", args=(broken.pk,))
    data = {"title": "Rocket <launch>", "collection": broken.collection_id, "tags": "", "description": ""}
    response = superuser_client.post(url, data)
    assert response.status_code == 302
    saved = get_image_model().objects.get(pk=broken.pk)
    assert saved.title == "Rocket <launch>" and saved.file.name == broken.file.name
    assert (saved.width, saved.height) == (broken.width, broken.height)
    assert status_of(saved) == EmbeddingStatus.PENDING  # a new title: embedded again
    # A form with errors renders again (its preview drawn as a missing file's).
    again = superuser_client.post(url, {**data, "title": ""})
    assert again.status_code == 200 and again.context["form"].errors["title"]
    # A new file still replaces it.
    with open(sample_paths["coffee"], "rb") as file:
        upload = SimpleUploadedFile(sample_paths["coffee"].name, file.read())
    replacing = superuser_client.post(url, {**data, "file": upload})
    assert replacing.status_code == 302, replacing.context["form"].errors
    replaced = get_image_model().objects.get(pk=broken.pk)
    assert replaced.file.name != broken.file.name and (replaced.width, replaced.height) != (broken.width, broken.height)


def test_failed_upload_shows_the_reason(superuser_client, django_capture_on_commit_callbacks):
    """An upload the pipeline cannot decode (an SVG: Wagtail accepts it, the encoder cannot read it)."""
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("wagtailimages:add_multiple"),
            {"files[]": SimpleUploadedFile("logo.svg", svg, "image/svg+xml")},
        )
    image = get_image_model().objects.get(pk=response.json()["image_id"])
    vectors = ImageVectors.objects.get(pk=image.pk)
    assert vectors.embedding.status == EmbeddingStatus.FAILED and vectors.embedding.error
    response = edit_page(superuser_client, image)
    assert response.context["embedding_state"].error == vectors.embedding.error
    assert f"<span data-embedding-error>{escape(vectors.embedding.error)}</span>" in response.content.decode()


def test_reembed_marks_pending_and_embeds(
    superuser_client, sample_images, make_image, sample_paths, django_capture_on_commit_callbacks
):
    cat = sample_images["chelsea"]
    get_image_model().objects.filter(pk=cat.pk).update(title="חתול <i>")  # right to left, with markup
    url = reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk,))
    assert url == f"/cms/images/{cat.pk}/reembed/"
    assert url in edit_page(superuser_client, cat).content.decode()  # the button's form
    with django_capture_on_commit_callbacks() as callbacks:
        response = superuser_client.post(url)
        assert status_of(cat) == EmbeddingStatus.PENDING
    assert response.status_code == 302 and response["Location"] == reverse("wagtailimages:edit", args=(cat.pk,))
    assert callbacks, "the embedding waits for the commit"
    for callback in callbacks:
        callback()
    assert status_of(cat) == EmbeddingStatus.EMBEDDED
    page = superuser_client.get(response["Location"])
    # Wagtail's message, the title isolated (bidirectional text) and escaped.
    assert "Image “<bdi>חתול &lt;i&gt;</bdi>” will be embedded again." in page.content.decode()


def test_reembed_keeps_the_listing_the_editor_came_from(superuser_client, sample_images):
    """Wagtail's edit page goes back to the listing (its filters, search, page) in ``?next=``:
    the Re-embed button comes back to the edit page with it, not to a bare one."""
    cat = sample_images["chelsea"]
    listing = reverse("wagtailimages:index") + "?q=cat&ordering=title"
    page = superuser_client.get(reverse("wagtailimages:edit", args=(cat.pk,)), {"next": listing})
    panel = page.content.decode().split('id="semantic-images"')[1]
    assert f'name="next" value="{escape(listing)}"' in panel  # in the Re-embed form
    similar = reverse("wagtailimages:edit", args=(page.context["similar_images"][0].pk,))
    link = urlsplit(unescape(re.search(rf'href="({similar}[^"]*)"', panel).group(1)))
    assert parse_qs(link.query) == {"next": [listing]}  # a similar image's edit page goes back to the same listing
    url = reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk,))
    response = superuser_client.post(url, {"next": listing})
    assert response.status_code == 302
    assert response["Location"] == reverse("wagtailimages:edit", args=(cat.pk,)) + "?" + urlencode({"next": listing})
    elsewhere = superuser_client.post(url, {"next": "https://example.org/"})  # not this site: left out
    assert elsewhere["Location"] == reverse("wagtailimages:edit", args=(cat.pk,))


def test_next_over_https_never_leads_to_plain_http(superuser_client, sample_images):
    """On a page served over HTTPS, a ``next`` to this very host over ``http://`` is left out (the
    editor would be sent on unencrypted): by the Re-embed button, the edit page and its save."""
    cat = sample_images["chelsea"]
    edit = reverse("wagtailimages:edit", args=(cat.pk,))
    downgrade = "http://testserver" + reverse("wagtailimages:index")
    response = superuser_client.post(
        reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk,)), {"next": downgrade}, secure=True
    )
    assert response["Location"] == edit
    page = superuser_client.get(edit, {"next": downgrade}, secure=True)
    assert page.context["next"] == "" and downgrade not in page.content.decode()
    saved = superuser_client.post(
        edit, {"title": cat.title, "collection": cat.collection_id, "next": downgrade}, secure=True
    )
    assert saved.status_code == 302 and saved["Location"] != downgrade
    same = "https://testserver" + reverse("wagtailimages:index")  # HTTPS to this host: kept
    kept = superuser_client.post(
        reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk,)), {"next": same}, secure=True
    )
    assert kept["Location"] == edit + "?" + urlencode({"next": same})


def test_reembed_after_the_file_is_repaired(
    superuser_client, sample_images, make_image, sample_paths, django_capture_on_commit_callbacks
):
    data = sample_paths["coffee"].read_bytes()
    broken = make_image(data, "IMG_0400")
    os.remove(broken.file.path)
    embed_pks(ImageVectors, [broken.pk])
    assert status_of(broken) == EmbeddingStatus.FAILED
    with open(broken.file.path, "wb") as stored:  # restored from a backup
        stored.write(data)
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(reverse("semantic_images_wagtail_edit:reembed", args=(broken.pk,)))
    assert response.status_code == 302
    vectors = ImageVectors.objects.get(pk=broken.pk)
    assert vectors.embedding.status == EmbeddingStatus.EMBEDDED and not vectors.embedding.error
    assert edit_page(superuser_client, broken).context["similar_images"][0] == sample_images["coffee"]


class ImagesOnTheOtherAlias:
    """A site's router that keeps the images (and their vectors) on a database of their own."""

    def db_for_read(self, model, **hints):
        return OTHER if model in (get_image_model(), ImageVectors) else None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return True


@pytest.mark.django_db(transaction=True, serialized_rollback=True, databases=["default", OTHER])
def test_reembed_writes_on_the_database_of_the_image(
    second_alias, superuser_client, make_image, sample_paths, settings
):
    """The Re-embed button marked the image pending on ``default`` whatever database the image is
    on: with the images on another database its vectors there stayed as they were."""
    settings.DATABASE_ROUTERS = [f"{__name__}.ImagesOnTheOtherAlias"]
    settings.SEMANTIC_IMAGES = {"EMBED_ON_SAVE": False}
    cat = make_image(sample_paths["chelsea"], "IMG_0001")
    bulk = reverse("wagtail_bulk_action", args=("wagtailimages", "image", "semantic_reembed"))
    table = ImageVectors._meta.db_table
    for post in (
        lambda: superuser_client.post(reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk,))),
        lambda: superuser_client.post(f"{bulk}?id={cat.pk}"),  # the bulk action
    ):
        ImageVectors.objects.filter(pk=cat.pk).update(embedding_status=EmbeddingStatus.FAILED)
        with (
            CaptureQueriesContext(connections["default"]) as default,
            CaptureQueriesContext(connections[OTHER]) as other,
        ):
            assert post().status_code == 302
        assert [q["sql"] for q in default.captured_queries if table in q["sql"]] == []
        assert any(q["sql"].startswith("UPDATE") and table in q["sql"] for q in other.captured_queries)
        assert status_of(cat) == EmbeddingStatus.PENDING


def test_reembed_needs_post_csrf_and_change_permission(
    client, superuser_client, django_user_model, make_image, embed, sample_paths, django_capture_on_commit_callbacks
):
    root = Collection.get_first_root_node()
    pets, products = root.add_child(name="Pets"), root.add_child(name="Products")
    cat = make_image(sample_paths["chelsea"], "IMG_0001", collection=pets)
    embed(cat)
    url = reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk,))
    assert superuser_client.get(url).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(django_user_model.objects.get(username="admin"))
    assert strict.post(url).status_code == 403  # no CSRF token
    # Another collection's editor, and one who may only choose images in this one.
    client.force_login(editor_of(products, django_user_model, "products"))
    missing = reverse("semantic_images_wagtail_edit:reembed", args=(cat.pk + 1000,))
    hidden_post, missing_post = client.post(url), client.post(missing)
    assert hidden_post.status_code == missing_post.status_code == 404  # hidden answers like missing
    assert hidden_post.content == missing_post.content
    hidden_get, missing_get = client.get(url), client.get(missing)  # the method is refused before any lookup
    assert [(r.status_code, r["Allow"]) for r in (hidden_get, missing_get)] == [(405, "POST")] * 2
    chooser = Group.objects.create(name="Choosers")
    chooser.permissions.add(Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"))
    GroupCollectionPermission.objects.create(
        group=chooser,
        collection=pets,
        permission=Permission.objects.get(content_type__app_label="wagtailimages", codename="choose_image"),
    )
    user = django_user_model.objects.create_user("chooser", "chooser@example.com", "password")
    user.groups.add(chooser)
    client.force_login(user)
    assert client.post(url).status_code == 404
    # No image permission at all: Wagtail turns them away from the whole Images area, any id alike.
    hidden, missing_page = (client.get(reverse("wagtailimages:edit", args=(pk,))) for pk in (cat.pk, cat.pk + 1000))
    assert (hidden.status_code, hidden.get("Location")) == (missing_page.status_code, missing_page.get("Location"))
    assert superuser_client.post(missing).status_code == 404
    assert status_of(cat) == EmbeddingStatus.EMBEDDED  # nothing was queued
    # The pets' editor may.
    client.force_login(editor_of(pets, django_user_model, "pets"))
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(url).status_code == 302
    assert status_of(cat) == EmbeddingStatus.PENDING and callbacks


def test_panel_ranks_through_the_hnsw_index(indexed_images, django_user_model, rf):
    """The panel's query, for an editor of one collection: ``ORDER BY vectors.embedding_visual <=>
    v LIMIT 12`` over the one-to-one join, filtered by the editor's collections, can read the
    visual vectors' HNSW index (as tests/wagtail/test_search.py checks for searches by words)."""
    root = Collection.get_first_root_node()
    pets, products = root.add_child(name="Pets"), root.add_child(name="Products")
    images, _visual = indexed_images("visual", [pets, products])
    field = get_embedding_field(ImageVectors)
    request = rf.get("/")
    request.user = editor_of(pets, django_user_model, "pets")
    view = SemanticImageEditView()
    view.setup(request, image_id=images[0].pk)
    view.object = images[0]
    nearest = view.nearest_images()
    assert nearest is not None
    found = list(nearest[:12])
    assert len(found) == 12 and all(image.collection_id == pets.pk for image in found)
    assert images[0] not in found
    plan = nearest[:12].explain()
    assert f"Index Scan using {field.index_name(ImageVectors, 'visual')}" in plan, plan
