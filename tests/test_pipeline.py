"""The embedding pipeline against real PostgreSQL + pgvector and the real models."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image, features

from django_semantic_images import EmbeddingStatus
from django_semantic_images.encoders import get_encoder
from django_semantic_images.pipeline import embed_instances, embed_pks
from photos.models import Photo

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_saved_photo_is_embedded_after_commit(sample_paths):
    from django.core.files import File

    photo = Photo(title="")
    with sample_paths["coffee"].open("rb") as fh:
        photo.image.save("coffee.png", File(fh))  # saves the row; embedding runs on commit
    photo.refresh_from_db()
    assert photo.embedding.status == EmbeddingStatus.EMBEDDED
    assert photo.embedding.encoder == get_encoder().identity
    assert len(photo.embedding_visual) == 1280 and len(photo.embedding_semantic) == 384
    assert len(photo.embedding.content_hash) == 64
    assert photo.embedding.updated_at is not None
    assert photo.embedding.labels and "label" in photo.embedding.labels[0]


@pytest.mark.django_db  # a test in a transaction that is rolled back, as Django's TestCase
def test_each_save_of_a_test_that_runs_its_commit_hooks_is_embedded(sample_paths, django_capture_on_commit_callbacks):
    """Django's ``captureOnCommitCallbacks(execute=True)`` runs a test's commit hooks and leaves
    them listed (the test's transaction never commits): a later save joined the first save's
    batch, already sent, and stayed pending."""
    from tests.conftest import statuses, upload

    photos = []
    for stem in ("chelsea", "coffee"):
        with django_capture_on_commit_callbacks(execute=True) as hooks:
            photos.append(upload(sample_paths[stem]))
        assert hooks
    assert statuses(photos) == {photo.pk: EmbeddingStatus.EMBEDDED for photo in photos}


def test_unchanged_content_is_not_embedded_again(make_photo, sample_paths):
    photo = make_photo(sample_paths["rocket"])
    first = embed_instances([photo])
    assert first.embedded == [photo.pk]
    stamp = Photo.objects.get(pk=photo.pk).embedding_updated_at
    again = embed_instances(Photo.objects.filter(pk=photo.pk))
    assert again.skipped == [photo.pk] and not again.embedded
    assert Photo.objects.get(pk=photo.pk).embedding_updated_at == stamp
    forced = embed_instances(Photo.objects.filter(pk=photo.pk), force=True)
    assert forced.embedded == [photo.pk]


def test_changed_alt_text_is_embedded_again(make_photo, sample_paths):
    photo = make_photo(sample_paths["rocket"])
    embed_instances([photo])
    photo = Photo.objects.get(pk=photo.pk)
    before = np.array(photo.embedding_semantic)
    photo.alt_text = "A space rocket on its launch pad"
    photo.save()  # triggers in-process embedding on commit
    photo.refresh_from_db()
    assert photo.embedding.status == EmbeddingStatus.EMBEDDED
    assert not np.allclose(before, np.array(photo.embedding_semantic))


def test_blank_alt_text_counts_as_no_words(make_photo, sample_paths):
    """Zero-width characters alone (a byte order mark left by an import) are no words, as in a
    search: they were fused into the picture's vector as the text model's vector of nothing."""
    blanks = ["", " \t\u00a0", "\u200b\ufeff", "\ufeff \u2060"]
    photos = [make_photo(sample_paths["rocket"], alt_text=alt) for alt in blanks]
    embed_instances(photos)
    vectors = [np.array(Photo.objects.get(pk=p.pk).embedding_semantic) for p in photos]
    for alt, vector in zip(blanks[1:], vectors[1:], strict=True):
        np.testing.assert_allclose(vector, vectors[0], atol=1e-6, err_msg=ascii(alt))


def test_a_corrupt_file_fails_with_a_reason_and_its_neighbours_are_embedded(make_photo, sample_paths):
    good1 = make_photo(sample_paths["chelsea"])
    truncated = make_photo(sample_paths["rocket"].read_bytes()[:2000], name="broken.jpg")
    not_image = make_photo(b"this is a text file, not a picture", name="notes.jpg")
    empty = make_photo(b"", name="empty.jpg")
    good2 = make_photo(sample_paths["coffee"])
    report = embed_instances([good1, truncated, not_image, empty, good2], batch_size=8)
    assert sorted(report.embedded) == sorted([good1.pk, good2.pk])
    rows = {p.pk: p for p in Photo.objects.all()}
    for bad in (truncated, not_image, empty):
        assert rows[bad.pk].embedding_status == EmbeddingStatus.FAILED
        assert rows[bad.pk].embedding_error
        assert rows[bad.pk].embedding_visual is None
    assert "truncated or corrupt" in rows[truncated.pk].embedding_error
    assert "not an image" in rows[not_image.pk].embedding_error
    assert "empty" in rows[empty.pk].embedding_error
    assert rows[good1.pk].embedding_status == rows[good2.pk].embedding_status == EmbeddingStatus.EMBEDDED


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_a_corrupt_avif_fails_with_a_reason_and_its_neighbours_are_embedded(make_photo, sample_paths):
    """Pillow's AVIF decoder raises RuntimeError: it stopped the whole batch, every row pending."""
    from tests.test_imaging import corrupt_avif

    good = make_photo(sample_paths["chelsea"])
    broken = [make_photo(corrupt_avif(part), name=f"{part}.avif") for part in ("picture", "index")]
    report = embed_instances([good, *broken], batch_size=8)
    assert report.embedded == [good.pk] and sorted(report.failed) == sorted(p.pk for p in broken)
    for photo in broken:
        photo.refresh_from_db()
        assert photo.embedding_status == EmbeddingStatus.FAILED
        assert "truncated or corrupt" in photo.embedding_error


def test_decompression_bomb_is_refused_before_decoding(make_photo, settings):
    settings.SEMANTIC_IMAGES = {"MAX_IMAGE_PIXELS": 1_000_000}
    buf = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buf, "PNG")  # 4 MP of zeros compresses to a few KB
    bomb = make_photo(buf.getvalue(), name="bomb.png")
    report = embed_instances([bomb])
    assert bomb.pk in report.failed
    assert "over the limit" in Photo.objects.get(pk=bomb.pk).embedding_error


def test_a_stored_file_over_max_file_bytes_fails_unread_and_its_neighbours_are_embedded(make_photo, settings):
    """The pipeline read every stored file whole before any limit: a multi-gigabyte upload was loaded
    into the worker's memory (a worker killed for it took its whole batch down, again at every sweep).
    A file over MAX_FILE_BYTES is now marked failed with the reason, its neighbours embedded."""
    small, large = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(small, "PNG")
    Image.effect_noise((400, 400), 80).convert("RGB").save(large, "PNG")  # noise: no compression
    assert len(small.getvalue()) < 50_000 < len(large.getvalue())
    settings.SEMANTIC_IMAGES = {"MAX_FILE_BYTES": 50_000}
    good, big = make_photo(small.getvalue(), name="small.png"), make_photo(large.getvalue(), name="large.png")
    report = embed_instances([good, big])
    assert report.embedded == [good.pk] and list(report.failed) == [big.pk]
    error = Photo.objects.get(pk=big.pk).embedding_error
    assert "MAX_FILE_BYTES" in error and "50,000" in error and f"{len(large.getvalue()):,}" in error


def test_exif_orientation_is_applied(make_photo, sample_paths):
    from django_semantic_images.imaging import decode_image

    upright = Image.open(sample_paths["rocket"]).convert("RGB")
    rotated = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CW to view": the stored pixels are rotated 90 CCW
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", exif=exif)
    decoded = decode_image(buf.getvalue(), max_side=10_000)
    assert decoded.size == upright.size


def test_jpeg_draft_mode_decodes_large_photos_small(sample_paths):
    from django_semantic_images.imaging import decode_image

    big = Image.open(sample_paths["coffee"]).convert("RGB").resize((4000, 3000))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    decoded = decode_image(buf.getvalue(), min_side=256, max_side=1024)
    assert max(decoded.size) <= 1024 and min(decoded.size) >= 256


def test_deferred_fields_load_and_save_without_sending_work(make_photo, sample_paths, monkeypatch):
    photo = make_photo(sample_paths["rocket"], title="Launch")
    embed_instances([photo])
    sent = []
    monkeypatch.setattr("django_semantic_images.dispatch.request_embedding", lambda *a, **k: sent.append(a))
    partial = Photo.objects.defer("embedding_visual", "title").get(pk=photo.pk)
    assert len(partial.embedding_visual) == 1280  # a deferred read must not recurse
    partial.published = False
    partial.save()
    assert sent == []
    only = Photo.objects.only("pk", "alt_text").get(pk=photo.pk)
    only.alt_text = "A rocket on the launch pad"
    only.save()
    assert len(sent) == 1


def test_embedding_by_key_uses_no_deprecated_django_api(make_photo, sample_paths):
    """A model whose texts are its own columns has no related rows to fetch: Django 6.1 deprecates
    ``select_related()`` without names (it followed every foreign key, e.g. the photo's owner)."""
    photo = make_photo(sample_paths["coffee"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Calling select_related")
        report = embed_pks(Photo, [photo.pk], force=True)
    assert list(report.embedded) == [photo.pk]


def test_a_row_without_a_file_fails_instead_of_staying_pending(make_photo, sample_paths):
    """A NULL file column (or an empty relation on an ``image__file`` path) has no name to match:
    the failure was never written, and the row stayed pending, sent again by every sweep."""
    from django.db import connection

    photo = make_photo(sample_paths["chelsea"])
    table = connection.ops.quote_name(Photo._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN image DROP NOT NULL")
    try:
        Photo.objects.filter(pk=photo.pk).update(image=None)
        report = embed_pks(Photo, [photo.pk])
        row = Photo.objects.get(pk=photo.pk)
        assert report.failed == {photo.pk: "The row has no image file."}
        assert (row.embedding_status, row.embedding_error) == (EmbeddingStatus.FAILED, "The row has no image file.")
    finally:
        Photo.objects.filter(pk=photo.pk).delete()
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN image SET NOT NULL")


def test_a_run_without_a_claim_never_writes_over_texts_changed_meanwhile(make_photo, sample_paths, monkeypatch):
    """The reindex command embeds without claims: an editor's new title, embedded by a worker
    while the command encoded the old one, was overwritten by the old title's vectors."""
    from django_semantic_images.pipeline import embedding
    from django_semantic_images.pipeline.reading import content_hash

    photo = make_photo(sample_paths["rocket"], title="Launch")
    newer = content_hash(sample_paths["rocket"].read_bytes(), ["A red bicycle"])
    original = embedding._batch_pixels

    def an_editor_saves_and_a_worker_embeds_meanwhile(*args, **kwargs):
        Photo.objects.filter(pk=photo.pk).update(
            title="A red bicycle", embedding_status=EmbeddingStatus.EMBEDDED, embedding_hash=newer
        )
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding, "_batch_pixels", an_editor_saves_and_a_worker_embeds_meanwhile)
    report = embed_pks(Photo, [photo.pk])
    assert report.embedded == []
    row = Photo.objects.get(pk=photo.pk)
    assert (row.title, row.embedding_hash) == ("A red bicycle", newer)


def test_a_file_name_the_storage_refuses_fails_that_row_alone(make_photo, sample_paths):
    """A name outside storage (an import that stored "../x.jpg" or an absolute path) raised Django's
    SuspiciousFileOperation, no decoding error: the whole batch failed, again at every sweep."""
    good = make_photo(sample_paths["chelsea"])
    outside = make_photo(sample_paths["rocket"])
    absolute = make_photo(sample_paths["coffee"])
    Photo.objects.filter(pk=outside.pk).update(image="../outside.jpg")
    Photo.objects.filter(pk=absolute.pk).update(image="/etc/hostname")
    report = embed_pks(Photo, [good.pk, outside.pk, absolute.pk])
    assert report.embedded == [good.pk]
    assert set(report.failed) == {outside.pk, absolute.pk}
    assert "not allowed" in report.failed[outside.pk]
    assert Photo.objects.get(pk=outside.pk).embedding_status == EmbeddingStatus.FAILED


def test_a_row_failing_with_an_unexpected_error_fails_alone_and_its_neighbours_are_embedded(make_photo, sample_paths):
    from pathlib import Path

    from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX
    from tests.conftest import dds_pillow_cannot_decode

    good = make_photo(sample_paths["coffee"])
    odd = make_photo(dds_pillow_cannot_decode(), name="odd.dds")
    unreadable = make_photo(sample_paths["chelsea"])
    path = Path(unreadable.image.path)
    path.unlink()
    path.mkdir()  # EISDIR on every read: an OSError of this one file
    try:
        report = embed_pks(Photo, [good.pk, odd.pk, unreadable.pk], batch_size=8)
    finally:
        path.rmdir()
    assert report.embedded == [good.pk]
    assert report.failed.keys() == {odd.pk, unreadable.pk}
    rows = {p.pk: p for p in Photo.objects.all()}
    assert "Unknown pixel format" in rows[odd.pk].embedding_error
    assert not rows[odd.pk].embedding_error.startswith(TRANSIENT_PREFIX)
    assert rows[unreadable.pk].embedding_error.startswith(f"{TRANSIENT_PREFIX}(attempt 1 of ")


@pytest.mark.django_db
def test_rows_a_default_manager_hides_are_embedded_too(draft_model, sample_paths):
    """A model whose default manager hides rows (the unpublished ones): the pipeline read and
    wrote through that manager, so a hidden row was never embedded, by a task, an explicit
    ``embed_instances()`` ("0 embedded, 0 unchanged, 0 failed") or the sweep."""
    from django.core.files.base import ContentFile

    from django_semantic_images.signals import embedding_deferred
    from django_semantic_images.sweep import sweep

    Draft = draft_model
    drafts = []
    with embedding_deferred():
        for _ in range(3):
            draft = Draft()
            draft.image.save("chelsea.jpg", ContentFile(sample_paths["chelsea"].read_bytes()), save=False)
            draft.save()
            drafts.append(draft)
    every = Draft._base_manager
    assert Draft.objects.count() == 0 and every.count() == 3
    assert embed_pks(Draft, [drafts[0].pk]).embedded == [drafts[0].pk]
    assert embed_instances(every.filter(pk=drafts[1].pk)).embedded == [drafts[1].pk]
    assert sweep([Draft], pending_timeout=0).queued == {"photos.Draft.embedding": 1}
    assert set(every.values_list("embedding_status", flat=True)) == {EmbeddingStatus.EMBEDDED}


def test_an_in_process_run_never_writes_over_a_file_replaced_meanwhile_under_its_name(
    make_photo, sample_paths, monkeypatch, settings
):
    """A storage that overwrites (``allow_overwrite``, S3's ``file_overwrite``) keeps the file's name:
    an in-process run (no claim) compared the name alone, so while it encoded the old picture an
    editor's new one, saved and embedded meanwhile, got the old picture's vectors and hash, for good."""
    import threading
    from pathlib import Path

    from django.core.files.base import ContentFile
    from django.db import connection

    from django_semantic_images.pipeline import embedding
    from django_semantic_images.pipeline.reading import content_hash

    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "tests.storages.OverwritingStorage"},  # Django 4.2 has no allow_overwrite
    }
    photo = make_photo(sample_paths["rocket"], title="Launch")
    newer = sample_paths["coffee"].read_bytes()
    original, replaced = embedding._prepare, threading.Event()

    def an_editor_replaces_the_file_once_it_was_read(item, *args, **kwargs):
        prepared = original(item, *args, **kwargs)
        if not replaced.is_set():
            replaced.set()
            try:  # another request: its save commits, and its own in-process run embeds the new file
                editor = Photo.objects.get(pk=photo.pk)
                editor.image = ContentFile(newer, name=Path(editor.image.name).name)  # upload_to adds the folder
                editor.save()
            finally:
                connection.close()
        return prepared

    monkeypatch.setattr(embedding, "_prepare", an_editor_replaces_the_file_once_it_was_read)
    embed_pks(Photo, [photo.pk])
    row = Photo.objects.get(pk=photo.pk)
    assert row.image.name == photo.image.name  # the same name, a new picture
    assert (row.embedding_status, row.embedding_hash) == (EmbeddingStatus.EMBEDDED, content_hash(newer, ["Launch"]))


def test_a_large_16_bit_grey_image_is_embedded(make_photo):
    """Pillow's ``reduce()``, which ``thumbnail()`` uses on an image over four times ``MAX_IMAGE_SIDE``,
    refuses 16-bit modes: a 16-bit grey scan of 4200 x 3000 failed as "truncated or corrupt"."""
    ramp = np.tile(np.linspace(0, 65535, 4200).astype(np.uint16), (3000, 1))
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "PNG")
    scan = make_photo(buf.getvalue(), name="scan.png")
    report = embed_instances([scan])
    assert (report.embedded, report.failed) == ([scan.pk], {})
    assert Photo.objects.get(pk=scan.pk).embedding_status == EmbeddingStatus.EMBEDDED


def failed_without_vectors(pks: list) -> dict:
    """Every photo by key, after checking that those of ``pks`` failed and hold no vectors."""
    rows = {p.pk: p for p in Photo.objects.all()}
    for pk in pks:
        assert rows[pk].embedding_status == EmbeddingStatus.FAILED
        assert rows[pk].embedding_visual is None and rows[pk].embedding_semantic is None
    return rows


def test_an_all_zero_vector_from_the_encoder_fails_the_row_instead_of_being_stored(
    make_photo, sample_paths, monkeypatch
):
    """A zero vector has no direction: its cosine with anything is NaN, so the row could be neither
    ranked nor compared. The pipeline stored it as embedded all the same; the row now fails, with a
    reason saying so and no vectors, and its neighbours are embedded."""
    from django_semantic_images.fields import get_embedding_field

    good = make_photo(sample_paths["coffee"], title="coffee")
    blank_visual = make_photo(sample_paths["chelsea"], title="a cat")
    blank_semantic = make_photo(sample_paths["rocket"], title="")  # no words: nothing fused into it
    encoder = get_embedding_field(Photo).get_encoder()
    real = encoder.encode_pixels

    def zero_some(pixels):
        vectors = real(pixels)
        vectors.visual[1] = 0.0
        vectors.semantic[2] = 0.0
        return vectors

    monkeypatch.setattr(encoder, "encode_pixels", zero_some)
    report = embed_instances([good, blank_visual, blank_semantic], batch_size=8)
    assert report.embedded == [good.pk] and report.failed.keys() == {blank_visual.pk, blank_semantic.pk}
    rows = failed_without_vectors([blank_visual.pk, blank_semantic.pk])
    assert all("all zeros" in rows[pk].embedding_error for pk in (blank_visual.pk, blank_semantic.pk))
    assert rows[good.pk].embedding_status == EmbeddingStatus.EMBEDDED


def test_a_nan_vector_from_the_encoder_fails_the_row_for_good_with_its_reason(make_photo, sample_paths, monkeypatch):
    """A vector with a NaN (an encoder's overflow on one image) has no cosine with anything either;
    pgvector refuses it, so the batch fell back to one row at a time and the row was failed as a
    fault that may pass ("DataError: NaN not allowed in vector"), retried five times, and a batch
    of that row alone (an upload) raised a TransientError. It now fails for good at once, as a
    zero vector does, with no vectors, and its neighbours are embedded."""
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.pipeline.failures import NOT_FINITE

    good = make_photo(sample_paths["coffee"], title="coffee")
    nan_visual = make_photo(sample_paths["chelsea"], title="a cat")
    nan_semantic = make_photo(sample_paths["rocket"], title="a rocket")
    encoder = get_embedding_field(Photo).get_encoder()
    real = encoder.encode_pixels

    bad: dict[bytes, str] = {}  # the pixels of the images given a NaN, by the side given it

    def nan_some(pixels):
        if not bad:  # the first batch, in the rows' order
            bad.update({np.asarray(pixels[1]).tobytes(): "visual", np.asarray(pixels[2]).tobytes(): "semantic"})
        vectors = real(pixels)
        for i, image in enumerate(pixels):
            side = bad.get(np.asarray(image).tobytes())
            if side is not None:
                getattr(vectors, side)[i, 5] = np.nan
        return vectors

    monkeypatch.setattr(encoder, "encode_pixels", nan_some)
    report = embed_instances([good, nan_visual, nan_semantic], batch_size=8)
    assert report.embedded == [good.pk] and report.failed.keys() == {nan_visual.pk, nan_semantic.pk}
    rows = failed_without_vectors([nan_visual.pk, nan_semantic.pk])
    assert all(rows[pk].embedding_error == NOT_FINITE for pk in (nan_visual.pk, nan_semantic.pk))
    alone = make_photo(sample_paths["chelsea"], title="alone")
    report = embed_instances([alone])
    assert report.failed.keys() == {alone.pk}
    assert Photo.objects.get(pk=alone.pk).embedding_status == EmbeddingStatus.FAILED


@pytest.mark.django_db(transaction=True)
def test_a_storage_whose_folder_is_gone_is_a_fault_that_may_pass_not_a_missing_file(make_photo, sample_paths, settings):
    """A missing file fails its row for good; but when the storage's whole folder is gone (a network
    mount not there, a volume not attached) every row read meanwhile was failed for good as a missing
    file, never tried again once the folder was back. Such a read is now a fault that may pass."""
    import shutil
    from pathlib import Path

    from django_semantic_images.pipeline.failures import TransientError

    photo = make_photo(sample_paths["chelsea"])
    root = Path(settings.MEDIA_ROOT)
    away = root.with_name(root.name + "-unmounted")
    shutil.move(root, away)
    try:
        # Every file of the batch unreadable for a reason that may pass: the batch is tried again
        # (a Celery retry, the sweep), its rows left as they were.
        with pytest.raises(TransientError, match="storage's folder is not there"):
            embed_instances([Photo.objects.get(pk=photo.pk)])
    finally:
        shutil.move(away, root)
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.PENDING and not row.embedding_error, row.embedding_error
    embed_instances([row])  # the folder is back
    assert Photo.objects.get(pk=photo.pk).embedding_status == EmbeddingStatus.EMBEDDED
