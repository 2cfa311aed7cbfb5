"""The vectors table beside Wagtail's images: embedding on upload, on change, deletion, renditions."""

from __future__ import annotations

import io
import json
from pathlib import PurePath

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from PIL import features
from wagtail.images import get_image_model
from wagtail.images.forms import BaseImageForm

from django_semantic_images.contrib.wagtail.forms import ReadableImageField
from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.fields import EmbeddingStatus, _path_problem
from django_semantic_images.signals import PendingRows

pytestmark = pytest.mark.django_db


def vectors_of(image) -> ImageVectors:
    return ImageVectors.objects.get(pk=image.pk)


def test_single_upload_is_embedded_after_commit(superuser_client, sample_paths, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = superuser_client.post(
            reverse("wagtailimages:add"),
            {
                "title": "Chelsea on a blanket",
                "description": "A tabby cat",
                "tags": "pet, animal",
                "file": SimpleUploadedFile("chelsea.png", sample_paths["chelsea"].read_bytes(), "image/png"),
            },
        )
    assert response.status_code == 302, response.context["form"].errors
    assert callbacks, "the embedding waits for the commit"
    image = get_image_model().objects.get(title="Chelsea on a blanket")
    vectors = vectors_of(image)
    assert vectors.embedding.status == EmbeddingStatus.EMBEDDED, vectors.embedding.error
    assert vectors.embedding_semantic is not None and vectors.embedding_visual is not None
    assert vectors.tag_names == "animal, pet"
    assert {"Chelsea on a blanket", "A tabby cat", "animal, pet"} <= set(ImageVectors.embedding.texts(vectors))


def test_multiple_upload_is_embedded(superuser_client, sample_paths, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("wagtailimages:add_multiple"),
            {"files[]": SimpleUploadedFile("rocket.jpg", sample_paths["rocket"].read_bytes(), "image/jpeg")},
        )
    assert response.status_code == 200 and response.json()["success"], response.content[:500]
    image = get_image_model().objects.get(pk=response.json()["image_id"])
    assert vectors_of(image).embedding.status == EmbeddingStatus.EMBEDDED


def test_corrupt_file_is_marked_failed_and_the_upload_stays(
    superuser_client, sample_paths, django_capture_on_commit_callbacks
):
    """Wagtail rejects a file it cannot decode itself; one whose stored bytes are broken by the
    time the embedding reads them (bad storage, a partial write) is marked failed, with the reason."""
    data = sample_paths["rocket"].read_bytes()
    with django_capture_on_commit_callbacks() as callbacks:
        response = superuser_client.post(
            reverse("wagtailimages:add_multiple"),
            {"files[]": SimpleUploadedFile("rocket.jpg", data, "image/jpeg")},
        )
    assert response.status_code == 200 and response.json()["success"], response.content[:500]
    image = get_image_model().objects.get(pk=response.json()["image_id"])
    with open(image.file.path, "wb") as stored:
        stored.write(data[: len(data) // 3])
    for callback in callbacks:
        callback()
    vectors = vectors_of(image)
    assert vectors.embedding.status == EmbeddingStatus.FAILED
    assert "truncated" in vectors.embedding.error
    assert vectors.embedding_semantic is None
    assert get_image_model().objects.filter(pk=image.pk).exists()


def test_svg_upload_is_marked_failed_without_blocking(superuser_client, django_capture_on_commit_callbacks):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("wagtailimages:add_multiple"),
            {"files[]": SimpleUploadedFile("logo.svg", svg, "image/svg+xml")},
        )
    assert response.status_code == 200 and response.json()["success"], response.content[:500]
    vectors = vectors_of(get_image_model().objects.get(pk=response.json()["image_id"]))
    assert vectors.embedding.status == EmbeddingStatus.FAILED
    assert vectors.embedding.error


def scheduled() -> set:
    """Images whose vectors wait for this transaction's commit."""
    return {
        pk
        for _, callback, *_ in connection.run_on_commit
        if isinstance(callback, PendingRows)
        for (model, _), pks in callback.rows.items()
        if model is ImageVectors
        for pk in pks
    }


def test_changes_that_matter_ask_for_embedding_again(make_image, embed, sample_paths):
    image = make_image(sample_paths["chelsea"], "IMG_1", schedule=True)
    assert image.pk in scheduled()
    connection.run_on_commit.clear()
    embed(image)
    image = get_image_model().objects.get(pk=image.pk)
    image.focal_point_x = 10
    image.save()
    image.save(update_fields=["file_size"])
    assert not scheduled() and vectors_of(image).embedding.status == EmbeddingStatus.EMBEDDED
    assert vectors_of(image).embedding.visual_norm is not None  # the CNN output is known
    image.title = "Chelsea on a blanket"
    image.save()
    assert scheduled() == {image.pk} and vectors_of(image).embedding.status == EmbeddingStatus.PENDING
    assert vectors_of(image).embedding.visual_norm is None  # no text-only re-embed of changed inputs
    connection.run_on_commit.clear()
    embed(image)
    image.tags.add("cat")
    assert scheduled() == {image.pk} and vectors_of(image).embedding.status == EmbeddingStatus.PENDING


def test_a_new_file_written_over_the_stored_one_asks_for_embedding_again(make_image, embed, sample_paths, settings):
    """A storage that writes a new file over one of the same name (S3's ``file_overwrite``,
    Django's ``allow_overwrite``) keeps the image's file name: the image saved with another
    picture looked unchanged and kept the old picture's vectors, marked embedded."""
    image = make_image(sample_paths["coffee"], "IMG_1")
    embed(image)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "tests.storages.OverwritingStorage"},  # Django 4.2 has no allow_overwrite
    }
    image = get_image_model().objects.get(pk=image.pk)
    stored = image.file.name
    image.file = ContentFile(sample_paths["rocket"].read_bytes(), name=PurePath(stored).name)
    image.save()
    assert image.file.name == stored  # the same name, another picture
    assert scheduled() == {image.pk} and vectors_of(image).embedding.status == EmbeddingStatus.PENDING
    assert vectors_of(image).embedding_visual is None  # not the old picture's meanwhile
    connection.run_on_commit.clear()
    image = get_image_model().objects.get(pk=image.pk)
    image.save()  # saved again with its file as stored: nothing to embed
    assert not scheduled()


def test_a_replaced_file_is_never_ranked_by_the_old_pictures_vectors(
    superuser_client, sample_images, sample_paths, django_capture_on_commit_callbacks
):
    """A file replaced on the edit page: until the new one was embedded (a busy worker, a sweep
    away with EMBED_ON_SAVE off), the image kept the old picture's vectors, so a search by that
    picture, the similar panels and searches by meaning found it, showing another picture."""
    from django_semantic_images.query import similar_to

    cat = sample_images["chelsea"]
    new_file = SimpleUploadedFile("new.png", sample_paths["coffee"].read_bytes(), "image/png")
    with django_capture_on_commit_callbacks() as callbacks:  # the embedding has not run yet
        response = superuser_client.post(
            reverse("wagtailimages:edit", args=(cat.pk,)),
            {"title": cat.title, "collection": cat.collection_id, "file": new_file},
        )
    assert response.status_code == 302
    vectors = vectors_of(cat)
    assert vectors.embedding.status == EmbeddingStatus.PENDING
    assert vectors.embedding_visual is None and vectors.embedding_semantic is None
    assert cat not in similar_to(get_image_model().objects.all(), sample_paths["chelsea"])
    assert vectors_of(sample_images["rocket"]).embedding_visual is not None  # the others keep theirs
    for callback in callbacks:
        callback()
    assert vectors_of(cat).embedding.status == EmbeddingStatus.EMBEDDED
    assert list(similar_to(get_image_model().objects.all(), sample_paths["coffee"]))[0] in (
        cat,
        sample_images["coffee"],
    )


def test_a_rolled_back_edit_made_again_with_the_same_image_asks_for_embedding(make_image, embed, sample_paths):
    """An edit rolled back (its pending mark with it), then saved again with the same instance (a
    retry): the snapshot already held the new title, so the retry looked unchanged and the image
    kept the vectors of its old title."""
    from django.db import transaction

    image = make_image(sample_paths["chelsea"], "IMG_1")
    embed(image)
    image = get_image_model().objects.get(pk=image.pk)
    image.title = "Chelsea on a blanket"
    with pytest.raises(RuntimeError), transaction.atomic():
        image.save()
        raise RuntimeError("the rest of the request failed: the save is rolled back")
    assert vectors_of(image).embedding.status == EmbeddingStatus.EMBEDDED and not scheduled()
    image.save()
    assert scheduled() == {image.pk} and vectors_of(image).embedding.status == EmbeddingStatus.PENDING


def test_an_image_refreshed_from_the_database_compares_its_saves_with_what_it_reloaded(make_image, embed, sample_paths):
    """``refresh_from_db()`` reloads the title but left the snapshot of the first load: an image
    refreshed after another editor's new title (embedded) and given its old title back looked
    unchanged, so its vectors stayed those of the other title, marked embedded."""
    image = make_image(sample_paths["chelsea"], "A cat")
    embed(image)
    image, other = get_image_model().objects.get(pk=image.pk), get_image_model().objects.get(pk=image.pk)
    other.title = "A dog"
    other.save()
    embed(other)
    connection.run_on_commit.clear()
    image.refresh_from_db()
    image.title = "A cat"
    image.save()
    assert scheduled() == {image.pk} and vectors_of(image).embedding.status == EmbeddingStatus.PENDING


def test_a_save_with_update_fields_counts_only_the_inputs_it_stores(make_image, embed, sample_paths):
    """``save(update_fields=["title"])`` with the description changed in memory too: the snapshot
    took the unsaved description, so the later save that stored it looked unchanged and the
    vectors kept the old description."""
    image = make_image(sample_paths["chelsea"], "IMG_1", description="a cat")
    embed(image)
    image = get_image_model().objects.get(pk=image.pk)
    image.title, image.description = "Chelsea on a blanket", "a tabby cat on a sofa"
    image.save(update_fields=["title"])
    assert scheduled() == {image.pk}
    embed(image)  # the new title, the stored (old) description
    image.save()  # stores the description
    assert vectors_of(image).embedding.status == EmbeddingStatus.PENDING


def test_renditions_are_never_embedded_and_deleting_an_image_deletes_its_vectors(make_image, sample_paths):
    image = make_image(sample_paths["coffee"], "IMG_2")
    image.get_rendition("max-100x100")
    assert ImageVectors.objects.count() == 1
    image.delete()
    assert not ImageVectors.objects.exists()


def test_reindex_embeds_images_uploaded_before_the_app(make_image, sample_paths):
    image = make_image(sample_paths["astronaut"], "IMG_3")
    ImageVectors.objects.all().delete()  # as if the image came before the app
    call_command("semantic_images_reindex", "--model", "semantic_images_wagtail.ImageVectors", "--no-progress")
    assert vectors_of(image).embedding.status == EmbeddingStatus.EMBEDDED


def test_semantic_search_command_ranks_wagtail_images(sample_images, capsys):
    """``manage.py semantic_search`` on Wagtail's image model (its vectors through a one-to-one),
    and with ``--field`` naming that path."""
    call_command("semantic_search", "a cup of coffee", "--model", "wagtailimages.Image", "--limit", "1")
    call_command(
        "semantic_search",
        "a cup of coffee",
        "--model",
        "wagtailimages.Image",
        "--limit",
        "1",
        "--field",
        "semantic_vectors__embedding",
    )
    first, again = (lines.splitlines()[1].split() for lines in capsys.readouterr().out.split("rank")[1:])
    assert int(first[2]) == int(again[2]) == sample_images["coffee"].pk


def test_the_duplicates_command_groups_wagtail_images(make_image, embed, sample_paths):
    """``--model wagtailimages.Image`` was refused ("has no ImageEmbeddingField") although the
    groups are found through the images' vectors, as ``semantic_search`` finds them."""
    first, copy = (make_image(sample_paths["coffee"], f"IMG_{n}") for n in (8, 9))
    embed(first, copy, make_image(sample_paths["rocket"], "IMG_10"))
    out = io.StringIO()
    call_command("semantic_images_duplicates", "--model", "wagtailimages.Image", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["model"] == "wagtailimages.Image" and document["field"] == "semantic_vectors__embedding"
    (group,) = document["groups"]
    assert [(item["pk"], item["str"], item["file"]) for item in group["items"]] == [
        (image.pk, image.title, image.file.name) for image in (first, copy)
    ]


def test_the_sweep_adds_and_embeds_images_created_without_signals(make_image, sample_paths, django_assert_num_queries):
    """Images made by ``bulk_create`` (or ``loaddata``, a data migration) send no signal: they had
    no row of vectors, and the sweep never gave them one, so only a reindex ever embedded them."""
    from django_semantic_images import sweep as sweep_module
    from django_semantic_images.tasks import sweep

    sweep_module._missing_rows_looked.clear()  # another test's sweep in this process looked just now
    template = make_image(sample_paths["astronaut"], "IMG_4")
    image_model = get_image_model()
    images = image_model.objects.bulk_create(
        [image_model(title=f"IMG_{i}", file=template.file.name, width=1, height=1) for i in (5, 6)]
    )
    assert not ImageVectors.objects.filter(pk__in=[image.pk for image in images]).exists()
    assert sweep() == {"semantic_images_wagtail.ImageVectors.embedding": 2}  # what beat runs
    for image in images:
        assert vectors_of(image).embedding.status == EmbeddingStatus.EMBEDDED, vectors_of(image).embedding.error
    image_model.objects.bulk_create([image_model(title="IMG_7", file=template.file.name, width=1, height=1)])
    assert sweep() == {}  # one look a minute per process: the next sweeps do not scan both tables
    sweep_module._missing_rows_looked.clear()
    assert sweep() == {"semantic_images_wagtail.ImageVectors.embedding": 1}
    with django_assert_num_queries(1):  # nothing missing: one anti-join
        assert ImageVectors.objects.add_missing_rows() == 0


def test_paths_through_relations_are_checked():
    field = ImageVectors.embedding
    assert field.check() == []
    assert _path_problem(ImageVectors, "image__nope", allow_property=True).endswith(
        "not a field of wagtailimages.Image."
    )
    assert "not a foreign key" in _path_problem(ImageVectors, "embedding_status__x", allow_property=False)
    assert _path_problem(ImageVectors, "tag_names", allow_property=False)  # a property is no image file


def test_a_title_that_is_only_the_file_name_is_not_text_evidence(make_image, sample_paths):
    """Wagtail titles an upload by its file name; such a title says nothing of the picture."""
    from django_semantic_images.contrib.wagtail.models import ImageVectors

    named = make_image(sample_paths["coffee"], "coffee")
    again = make_image(sample_paths["coffee"], "coffee.png")  # stored as coffee_XXXXXXX.png
    titled = make_image(sample_paths["coffee"], "Morning coffee")
    odd = make_image(sample_paths["coffee"], "..")  # no file could be named so
    assert again.file.name != named.file.name
    images = (named, again, titled, odd)
    words = {image.title: ImageVectors.objects.get(pk=image.pk).title_words for image in images}
    assert words == {"coffee": "", "coffee.png": "", "Morning coffee": "Morning coffee", "..": ".."}


def test_a_file_name_that_storage_rewrote_is_still_not_text_evidence(superuser_client, sample_paths):
    """Wagtail's multiple upload titles an image by its file name as uploaded; storage keeps it
    with spaces, brackets and accents rewritten (``IMG 0042 (1).jpg`` as ``IMG_0042_1.jpg``), and
    such a title was fused as words (a phone's or a screenshot's name is most names)."""
    data = sample_paths["coffee"].read_bytes()
    names = ["IMG 0042 (1).png", "Screenshot 2024-05-01 at 10.11.12.png", "Café crème.png"]
    for name in names:
        for title in ({"title": name.rsplit(".", 1)[0]}, {}):  # as Wagtail's page sends it; without it
            response = superuser_client.post(
                reverse("wagtailimages:add_multiple"), {"files[]": SimpleUploadedFile(name, data), **title}
            )
            assert response.status_code == 200 and response.json()["success"], response.content[:300]
    titled = {image.title: vectors_of(image).title_words for image in get_image_model().objects.all()}
    assert len(titled) == 2 * len(names) and set(titled.values()) == {""}, titled


def assert_refused_by_both_uploads(client, upload, reason: str) -> None:
    """Wagtail's single upload refuses ``upload`` under the field with the reason, and its multiple
    upload refuses it with the same words (this app's form base)."""
    single = client.post(reverse("wagtailimages:add"), {"title": "Broken", "file": upload})
    assert single.status_code == 200
    assert f"The file is not a readable image ({reason}" in single.content.decode()
    upload.seek(0)
    multiple = client.post(reverse("wagtailimages:add_multiple"), {"files[]": upload})
    assert multiple.status_code == 200 and not multiple.json()["success"]
    assert "not a readable image" in multiple.json()["error_message"]


@pytest.mark.parametrize("form_base", ["", "django_semantic_images.contrib.wagtail.forms.ImageForm"])
def test_a_truncated_upload_is_refused_with_the_reason_and_the_next_file_goes_on(
    superuser_client, sample_paths, settings, form_base
):
    """Wagtail's own form lets Pillow's error out (a server error); with this app's form base the
    upload is refused under the field, and the next file of a multiple upload is saved."""
    settings.WAGTAILIMAGES_IMAGE_FORM_BASE = form_base
    data = sample_paths["rocket"].read_bytes()
    truncated = SimpleUploadedFile("broken.jpg", data[: len(data) // 2], "image/jpeg")
    if not form_base:
        superuser_client.raise_request_exception = False
        assert superuser_client.post(reverse("wagtailimages:add_multiple"), {"files[]": truncated}).status_code == 500
        return
    assert_refused_by_both_uploads(superuser_client, truncated, "image file is truncated")
    good = SimpleUploadedFile("rocket.jpg", data, "image/jpeg")
    assert superuser_client.post(reverse("wagtailimages:add_multiple"), {"files[]": good}).json()["success"]
    assert list(get_image_model().objects.values_list("title", flat=True)) == ["rocket.jpg"]


def test_the_system_check_warns_of_wagtails_image_form_that_lets_a_corrupt_upload_through(settings):
    """Without this app's form base, the test above gets a server error: the check says so at start
    (semantic_images.W006) and names the setting; with it, or a form base declaring its field, nothing."""
    from django.core.checks import Warning as CheckWarning
    from django.core.checks import run_checks

    def w006() -> list[str]:
        return [m.hint or "" for m in run_checks() if isinstance(m, CheckWarning) and m.id == "semantic_images.W006"]

    settings.WAGTAILIMAGES_IMAGE_FORM_BASE = ""
    [hint] = w006()
    assert 'WAGTAILIMAGES_IMAGE_FORM_BASE = "django_semantic_images.contrib.wagtail.forms.ImageForm"' in hint
    settings.WAGTAILIMAGES_IMAGE_FORM_BASE = "wagtail.images.forms.BaseImageForm"
    assert len(w006()) == 1
    settings.WAGTAILIMAGES_IMAGE_FORM_BASE = "django_semantic_images.contrib.wagtail.forms.ImageForm"
    assert w006() == []
    settings.WAGTAILIMAGES_IMAGE_FORM_BASE = "tests.wagtail.test_models.SiteImageForm"
    assert w006() == []


class SiteImageForm(BaseImageForm):
    """A site's own form base declaring the readable file field (what W006's hint suggests)."""

    file = ReadableImageField()


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
@pytest.mark.parametrize("part", ["picture", "index"])
def test_a_corrupt_avif_upload_is_refused_with_the_reason(superuser_client, settings, part):
    """Pillow's AVIF plugin fails with RuntimeError where other formats raise OSError: with this
    app's form base, that too is refused under the field (it was a server error)."""
    from tests.test_imaging import corrupt_avif

    settings.WAGTAILIMAGES_IMAGE_FORM_BASE = "django_semantic_images.contrib.wagtail.forms.ImageForm"
    broken = SimpleUploadedFile("broken.avif", corrupt_avif(part), "image/avif")
    assert_refused_by_both_uploads(superuser_client, broken, "Failed to decode")
    assert not get_image_model().objects.exists()


def test_a_text_side_change_reembeds_without_the_image_file(make_image, embed, sample_paths, settings):
    """Another ConSE recipe (a text-side option): the vectors are rebuilt from the stored CNN output,
    through the image relation's file name check, with the file moved out of storage."""
    import os

    import numpy as np

    image = make_image(sample_paths["coffee"], "A cup of coffee", description="coffee on a table")
    embed(image)
    before = vectors_of(image)
    settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "ENCODER_OPTIONS": {"temperature": 2.0}}
    path = image.file.path
    os.rename(path, path + ".away")
    try:
        out = io.StringIO()
        call_command("semantic_images_reindex", "--stale", "--no-progress", stdout=out)
    finally:
        os.rename(path + ".away", path)
    assert "1 embedded, 0 unchanged, 0 failed (1 from their stored CNN output" in out.getvalue()
    after = vectors_of(image)
    assert after.embedding_encoder != before.embedding_encoder and after.embedding_claimed_by == ""
    assert float(np.dot(after.embedding_semantic, before.embedding_semantic)) < 0.99999  # a new mixture
    np.testing.assert_array_equal(np.asarray(after.embedding_visual), np.asarray(before.embedding_visual))


def test_a_run_without_a_claim_never_writes_over_a_title_edited_meanwhile(make_image, embed, sample_paths, monkeypatch):
    """In-process embedding (no broker) and the reindex command write without a claim; before the
    write the pipeline re-checked only the vectors row's own columns, and an image's texts are all
    on Wagtail's image: the old title's vectors were written, marked embedded, over the pending
    edit (or over the new title's vectors, when the edit's own embedding finished first)."""
    from django_semantic_images.pipeline import embed_pks, embedding
    from django_semantic_images.pipeline.reading import content_hash
    from django_semantic_images.signals import embedding_deferred

    image = make_image(sample_paths["rocket"], "Launch")
    original = embedding._batch_pixels

    def an_editor_renames_it_meanwhile(*args, **kwargs):
        edited = get_image_model().objects.get(pk=image.pk)
        edited.title = "A red bicycle"
        with embedding_deferred():
            edited.save()
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding, "_batch_pixels", an_editor_renames_it_meanwhile)
    assert embed_pks(ImageVectors, [image.pk]).embedded == []
    assert vectors_of(image).embedding.status == EmbeddingStatus.PENDING  # left to the edit's own work
    monkeypatch.undo()
    embed(image)
    assert vectors_of(image).embedding_hash == content_hash(sample_paths["rocket"].read_bytes(), ["A red bicycle"])
