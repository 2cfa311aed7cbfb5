"""Wagtail's per-image admin views answer an image the editor may not see at all (one of a
collection they have no permission on) exactly as a missing id: Wagtail's own answered with
"permission denied" (a redirect to the dashboard, a 403) or (Wagtail's admin API) with the image
itself, where a missing id is a 404, so which ids exist in hidden collections could be read off.
An image the editor sees but may not change keeps Wagtail's answer."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from wagtail.images import get_image_model
from wagtail.models import UploadedFile

from django_semantic_images.contrib.wagtail import hidden

from .editors import chooser_of, editor_of, pets_editor_and_a_products_image

pytestmark = pytest.mark.django_db

#: What Wagtail's JavaScript sends (``require_admin_access`` then answers "permission denied" with a 403).
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}
HEADERS = pytest.mark.parametrize("headers", [{}, XHR], ids=["page", "javascript"])
#: A filter of the URL generator's preview of a crop.
SPEC = "fill-80x60"
#: Each view of one image: URL name, the arguments after the id, method.
#: The URL generator's output is its own view from Wagtail 7.1 on; Wagtail 7.0's page fetches JSON
#: from ``generate_url`` instead.
IMAGE_VIEWS = [
    ("wagtailimages:url_generator", (), "get"),
    *([("wagtailimages:url_generator_output", (), "get")] if hidden.URL_GENERATOR_OUTPUT else []),
    *([("wagtailimages:generate_url", (SPEC,), "get")] if hidden.WAGTAIL_GENERATE_URL else []),
    ("wagtailimages:preview", (SPEC,), "get"),
    ("wagtailimages:edit_multiple", (), "post"),
    ("wagtailimages:delete_multiple", (), "post"),
    ("wagtailadmin_api:images:detail", (), "get"),
]


def answer(response) -> tuple:
    """All that tells one answer from another: status, where it redirects, its kind and its body."""
    return response.status_code, response.get("Location"), response.get("Content-Type"), response.content


def assert_answers_like_missing(client, name: str, pk: int, *args, method: str = "get", **extra) -> None:
    """``name``'s URL answers for ``pk`` (an object hidden from the client's user) exactly as for a missing id (404)."""
    send = getattr(client, method)
    hidden = answer(send(reverse(name, args=(pk, *args)), **extra))
    missing = answer(send(reverse(name, args=(pk + 1000, *args)), **extra))
    assert hidden[0] == 404, (name, method, extra, hidden[:3])
    assert hidden == missing, (name, method, extra)


def get(client, name: str, *args, **extra):
    return client.get(reverse(name, args=args), **extra)


@pytest.mark.urls("tests.wagtail.serve_urls")  # Wagtail's URL generator needs the serve view
@HEADERS
@pytest.mark.parametrize(("name", "args", "method"), IMAGE_VIEWS, ids=[view[0].split(":")[-1] for view in IMAGE_VIEWS])
def test_a_hidden_image_answers_like_a_missing_one(
    client, django_user_model, make_image, sample_paths, name, args, method, headers
):
    """The URL generator (its page, and the output it fetches: a bare 403), the crop preview, the
    multiple uploader's edit and delete (posted by its JavaScript: a 403) answered a hidden image with
    "permission denied", and Wagtail's admin API with the image; a missing id is a 404 in each.
    Nothing is changed or deleted."""
    pets, products, mug = pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths)
    data = {f"image-{mug.pk}-title": "renamed", f"image-{mug.pk}-collection": pets.pk} if method == "post" else {}
    assert_answers_like_missing(client, name, mug.pk, *args, method=method, data=data, **headers)
    mug.refresh_from_db()
    assert (mug.title, mug.collection) == ("mug", products)


@pytest.mark.urls("tests.wagtail.serve_urls")
def test_an_image_the_editor_sees_keeps_wagtails_answers(client, django_user_model, make_image, sample_paths):
    """The editor's own image: Wagtail's pages. One they may choose, not change: Wagtail's
    "permission denied" (they know it exists)."""
    pets, products, mug = pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths)
    cat = make_image(sample_paths["chelsea"], "cat", collection=pets)
    assert get(client, "wagtailimages:url_generator", cat.pk).status_code == 200
    if hidden.URL_GENERATOR_OUTPUT:
        assert get(client, "wagtailimages:url_generator_output", cat.pk).status_code == 200
    if hidden.WAGTAIL_GENERATE_URL:  # Wagtail 7.0
        assert get(client, "wagtailimages:generate_url", cat.pk, SPEC).json()["url"].endswith(f"/{cat.pk}/{SPEC}/")
    preview = get(client, "wagtailimages:preview", cat.pk, SPEC)
    assert preview.status_code == 200 and preview["Content-Type"].startswith("image/")
    assert get(client, "wagtailadmin_api:images:detail", cat.pk).json()["title"] == "cat"
    # An editor of the pets who may choose the products' images, not change them, sees the mug.
    both = chooser_of(products, django_user_model, "chooser")
    both.groups.add(Group.objects.get(name="Pets editors"))
    client.force_login(both)
    generator = get(client, "wagtailimages:url_generator", mug.pk)
    assert (generator.status_code, generator["Location"]) == (302, reverse("wagtailadmin_home"))
    if hidden.URL_GENERATOR_OUTPUT:
        output = get(client, "wagtailimages:url_generator_output", mug.pk)
        assert (output.status_code, output.content) == (
            403,
            b"You do not have permission to generate a URL for this image.",
        )
    if hidden.WAGTAIL_GENERATE_URL:  # Wagtail 7.0
        generated = get(client, "wagtailimages:generate_url", mug.pk, SPEC)
        assert (generated.status_code, generated.json()) == (
            403,
            {"error": "You do not have permission to generate a URL for this image."},
        )
    assert get(client, "wagtailimages:preview", mug.pk, SPEC).status_code == 302
    assert client.post(reverse("wagtailimages:delete_multiple", args=(mug.pk,)), **XHR).status_code == 403
    assert get(client, "wagtailadmin_api:images:detail", mug.pk).json()["title"] == "mug"
    # The editor's own image is deleted by the multiple uploader's delete.
    deleted = client.post(reverse("wagtailimages:delete_multiple", args=(cat.pk,)), **XHR)
    assert deleted.json() == {"success": True, "image_id": cat.pk}
    assert (
        get_image_model().objects.filter(pk=mug.pk).exists()
        and not get_image_model().objects.filter(pk=cat.pk).exists()
    )


def test_the_admin_api_lists_and_finds_only_the_images_the_editor_sees(
    client, django_user_model, make_image, sample_paths
):
    """Wagtail's admin API (``/admin/api/main/images/``) listed every image to any editor, with its
    title and thumbnail, and found a hidden one by id (a redirect to it, where a missing id is a 404)."""
    pets, products, mug = pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths)
    cat = make_image(sample_paths["chelsea"], "cat", collection=pets)
    hidden = client.get(reverse("wagtailadmin_api:images:find"), {"id": mug.pk})
    missing = client.get(reverse("wagtailadmin_api:images:find"), {"id": mug.pk + 1000})
    assert hidden.status_code == 404 and answer(hidden) == answer(missing)
    assert get(client, "wagtailadmin_api:images:find", data={"id": cat.pk}).status_code == 302
    listing = get(client, "wagtailadmin_api:images:listing").json()
    assert ([item["id"] for item in listing["items"]], listing["meta"]["total_count"]) == ([cat.pk], 1)


@HEADERS
@pytest.mark.parametrize("name", ["create_multiple_from_uploaded_image", "delete_upload_multiple"])
def test_another_editors_upload_answers_like_a_missing_one(
    client, django_user_model, make_image, sample_paths, name, headers
):
    """The multiple uploader keeps a file whose other fields did not validate as an upload of its
    uploader's: completing or deleting another editor's answered "permission denied" (a 403, or a
    redirect), a missing id a 404, so which uploads exist could be read off. Nothing is changed."""
    pets, products, mug = pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths)
    other = editor_of(products, django_user_model, "products")
    upload = UploadedFile.objects.create(
        for_content_type=ContentType.objects.get_for_model(get_image_model()),
        file=SimpleUploadedFile("cup.jpg", sample_paths["coffee"].read_bytes()),
        uploaded_by_user=other,
    )
    data = {f"uploaded-image-{upload.pk}-title": "cup", f"uploaded-image-{upload.pk}-collection": pets.pk}
    assert_answers_like_missing(client, f"wagtailimages:{name}", upload.pk, method="post", data=data, **headers)
    assert UploadedFile.objects.filter(pk=upload.pk).exists()
    assert not get_image_model().objects.filter(title="cup").exists()
    # Its uploader deletes it: Wagtail's answer.
    client.force_login(other)
    deleted = client.post(reverse("wagtailimages:delete_upload_multiple", args=(upload.pk,)), **XHR)
    assert deleted.json() == {"success": True} and not UploadedFile.objects.filter(pk=upload.pk).exists()


@pytest.mark.parametrize(
    ("view", "params", "message"),
    [
        ("find", {"id": "abc"}, "id must be an integer"),
        ("listing", {"search": " ".join(["a"] * 250)}, "search: more than 64 words"),
        ("listing", {"search": "cat", "search_operator": "xor"}, "search_operator must be 'and' or 'or'"),
        ("listing", {"search": "cat\x00"}, "search cannot contain NUL characters"),
        ("listing", {"offset": "9" * 30}, "offset cannot be higher than 9223372036854775807"),
        ("listing", {"format": "xml"}, "format must be one of: json, api"),
    ],
    ids=["find-id", "search-words", "search-operator", "search-nul", "offset", "format"],
)
def test_the_admin_api_answers_bad_input_with_a_400_naming_the_parameter(superuser_client, view, params, message):
    """Wagtail's admin API of images failed on input its public images API refuses with a 400 (the
    checks of ``SemanticImagesAPIViewSet``): a 500 (``ValueError``, ``RecursionError``, PostgreSQL's
    refusal of a NUL or of an offset past a bigint), or a 404 with an empty message."""
    response = superuser_client.get(reverse(f"wagtailadmin_api:images:{view}"), params)
    assert (response.status_code, response.json()) == (400, {"message": message})
