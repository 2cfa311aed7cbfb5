"""The Celery tasks run eagerly in this process (no broker): retries, failures, batching, threads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from django_semantic_images import EmbeddingStatus
from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX
from django_semantic_images.signals import PendingRows
from django_semantic_images.sweep import sweep
from django_semantic_images.tasks import MAX_RETRIES, embed_rows
from django_semantic_images.worker import available_cores, torch_threads
from photos.models import Photo

from .conftest import unreadable

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_storage_fault_is_retried_then_marked_for_the_sweep(make_photo, sample_paths):
    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "rocket")]
    paths = [Path(photo.image.path) for photo in photos]
    with unreadable(paths):  # every file of the batch: the storage looks gone, and the task is retried
        result = embed_rows.apply(args=["photos.Photo", [photo.pk for photo in photos]])
        assert result.failed()
    for photo in photos:
        row = Photo.objects.get(pk=photo.pk)
        assert row.embedding_status == EmbeddingStatus.FAILED
        assert row.embedding_error.startswith(TRANSIENT_PREFIX) and "Storage error" in row.embedding_error
        # the sweep leaves it its backoff (30 to 60 s after a first fault), not at its next run
        now = timezone.now()
        assert now + timedelta(seconds=25) < row.embedding_lease_until <= now + timedelta(seconds=60)
    assert sweep(pending_timeout=600).total == 0
    # storage is back, the backoff over: the sweep queues the rows again (in-process here) and they are embedded
    for photo in photos:
        backoff_over(photo)
    assert sweep(pending_timeout=600).queued == {"photos.Photo.embedding": 2}
    assert {Photo.objects.get(pk=p.pk).embedding_status for p in photos} == {EmbeddingStatus.EMBEDDED}


def test_rows_a_task_took_to_fill_its_batch_are_marked_for_the_sweep_too(make_photo, sample_paths):
    """Celery's retries claim only the task's own rows, and when they ran out only those were marked:
    the waiting rows its first try took to fill its batch were held, then sent again by the sweep
    with no reason and no try counted. The tasks framework marked them all."""
    from django_semantic_images.tasks import batch_fillers

    own = [make_photo(sample_paths[s]) for s in ("chelsea", "rocket")]
    waiting = make_photo(sample_paths["coffee"])
    photos = [*own, waiting]
    paths = [Path(photo.image.path) for photo in photos]
    with unreadable(paths):  # every file of the batch: the storage looks gone, the task is retried
        result = embed_rows.apply(args=["photos.Photo", [str(photo.pk) for photo in own]])  # as dispatch sends
        assert result.failed()
    now = timezone.now()
    for photo in photos:
        row = Photo.objects.get(pk=photo.pk)
        assert (row.embedding_status, row.embedding_claimed_by) == (EmbeddingStatus.FAILED, ""), photo is waiting
        error = row.embedding_error
        assert error.startswith(f"{TRANSIENT_PREFIX}(attempt 1 of ") and "Storage error" in error, error
        assert now + timedelta(seconds=25) < row.embedding_lease_until <= now + timedelta(seconds=60)  # its backoff
    # the task's own rows, sent as strings, are told from those it took: only the latter are marked at once
    assert batch_fillers(Photo, [p.pk for p in photos], [str(p.pk) for p in own]) == [waiting.pk]


def test_a_task_whose_retries_run_out_stores_the_reason_shortened(make_photo, sample_paths):
    """The reason stored when Celery's retries ran out was the fault's whole message (a database's may
    span lines and quote a whole row), not its first line cut as every other reason is."""
    from django_semantic_images.pipeline.failures import REASON_CHARS

    from .conftest import LONG_DATABASE_MESSAGE, embedding_refused_for_a_while

    photo = make_photo(sample_paths["chelsea"])
    with embedding_refused_for_a_while():
        result = embed_rows.apply(args=["photos.Photo", [photo.pk]])
    assert result.failed()
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED
    prefix = f"{TRANSIENT_PREFIX}(attempt 1 of 5) "
    assert row.embedding_error.startswith(prefix), row.embedding_error
    reason = row.embedding_error.removeprefix(prefix)
    first_line = LONG_DATABASE_MESSAGE.splitlines()[0]
    assert reason == f"OperationalError: {first_line}"[:REASON_CHARS], reason[-300:]


def test_one_unreadable_file_alone_in_its_batch_fails_its_row_as_among_others(make_photo, sample_paths, settings):
    """A storage error on one file (EISDIR) fails that row alone in a batch of several; alone in its
    batch (an upload's own task, a batch of one row, beside a row found unchanged) it was
    taken for the whole storage gone: the task failed into Celery's retries (8, the rows held meanwhile)."""
    unreadable = make_photo(sample_paths["chelsea"])
    path = Path(unreadable.image.path)
    path.unlink()
    path.mkdir()  # EISDIR: that file alone fails, for a reason that may pass

    def assert_failed_alone(result, embedded: list[str], skipped: list[str]) -> None:
        assert result.successful(), result.traceback
        assert result.get()["failed"].keys() == {str(unreadable.pk)}
        assert (result.get()["embedded"], result.get()["skipped"]) == (embedded, skipped)
        row = Photo.objects.get(pk=unreadable.pk)
        assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_claimed_by == ""
        assert row.embedding_error.startswith(f"{TRANSIENT_PREFIX}(attempt 1 of ") and "Is a directory" in (
            row.embedding_error
        )
        assert row.embedding_lease_until > timezone.now() + timedelta(seconds=25)  # its backoff, then the sweep
        Photo.objects.filter(pk=unreadable.pk).update(  # as it was: pending, no try counted
            embedding_status=EmbeddingStatus.PENDING, embedding_error="", embedding_lease_until=None
        )

    try:
        # its own task
        assert_failed_alone(embed_rows.apply(args=["photos.Photo", [unreadable.pk]]), [], [])
        # a task of batches of one row (BATCH_SIZE 1)
        good = make_photo(sample_paths["coffee"])
        settings.SEMANTIC_IMAGES = {"BATCH_SIZE": 1}
        assert_failed_alone(embed_rows.apply(args=["photos.Photo", [good.pk, unreadable.pk]]), [str(good.pk)], [])
        # beside a row found unchanged (its file read fine: the storage is there)
        settings.SEMANTIC_IMAGES = {"BATCH_SIZE": 8}
        assert_failed_alone(embed_rows.apply(args=["photos.Photo", [good.pk, unreadable.pk]]), [], [str(good.pk)])
    finally:
        path.rmdir()


def backoff_over(photo: Photo) -> None:
    """The time a failed row waits before the sweep sends it again has passed."""
    Photo.objects.filter(pk=photo.pk).update(embedding_lease_until=timezone.now() - timedelta(seconds=1))


def test_a_bad_image_is_marked_failed_once_not_retried(make_photo, sample_paths):
    good = make_photo(sample_paths["coffee"])
    bad = make_photo(b"GIF89a but not really", name="fake.gif")
    result = embed_rows.apply(args=["photos.Photo", [good.pk, bad.pk]])
    assert result.successful() and result.get()["failed"].keys() == {str(bad.pk)}
    assert result.get()["embedded"] == [str(good.pk)]
    row = Photo.objects.get(pk=bad.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and not row.embedding_error.startswith(TRANSIENT_PREFIX)


def test_a_task_fills_its_batch_with_other_waiting_rows(make_photo, sample_paths):
    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "coffee", "rocket")]
    result = embed_rows.apply(args=["photos.Photo", [photos[0].pk]]).get()
    assert sorted(result["embedded"]) == sorted(str(p.pk) for p in photos)
    again = embed_rows.apply(args=["photos.Photo", [photos[1].pk]]).get()  # its own task arrives later
    assert again == {"embedded": [], "skipped": [str(photos[1].pk)], "failed": {}}


def test_a_task_for_a_deleted_row_does_nothing(make_photo, sample_paths):
    photo = make_photo(sample_paths["chelsea"])
    pk = photo.pk
    photo.delete()
    assert embed_rows.apply(args=["photos.Photo", [pk]]).get() == {"embedded": [], "skipped": [], "failed": {}}


def test_rows_saved_in_one_transaction_share_one_callback(sample_paths):
    from django.core.files.base import ContentFile
    from django.db import connection

    with transaction.atomic():
        for stem in ("chelsea", "coffee"):
            photo = Photo()
            photo.image.save(f"{stem}.png", ContentFile(sample_paths[stem].read_bytes()), save=False)
            photo.save()
        hooks = [func for _, func, *_ in connection.run_on_commit if isinstance(func, PendingRows)]
        assert len(hooks) == 1 and [len(pks) for pks in hooks[0].rows.values()] == [2]
        with pytest.raises(RuntimeError), transaction.atomic():  # a rolled-back savepoint drops its rows only
            photo = Photo()
            photo.image.save("rocket.jpg", ContentFile(sample_paths["rocket"].read_bytes()), save=False)
            photo.save()
            raise RuntimeError
        hooks = [func for _, func, *_ in connection.run_on_commit if isinstance(func, PendingRows)]
        assert [len(pks) for pks in hooks[0].rows.values()] == [2] and len(hooks) == 1
    # committed: embedded in-process (no broker)
    assert set(Photo.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.EMBEDDED}


def test_worker_threads_share_the_cores(settings):
    cores = available_cores()
    assert torch_threads(1) == max(1, cores - 1)  # one core decodes while torch encodes
    assert torch_threads(cores * 2) == 1
    settings.SEMANTIC_IMAGES = {"WORKER_THREADS": 3}
    assert torch_threads(1) == 3


def test_concurrent_tasks_claim_different_waiting_rows(make_photo, sample_paths):
    from django_semantic_images.pipeline.claims import claim_rows

    own, *waiting = [make_photo(sample_paths[s]) for s in ("chelsea", "coffee", "rocket", "horse")]
    first = claim_rows(Photo, [own.pk], "task-a", top_up=1)  # its own row and one waiting row
    second = claim_rows(Photo, [own.pk], "task-b", top_up=1)
    assert first == sorted([own.pk, waiting[0].pk])  # the oldest waiting row first
    assert len(second) == 1 and second[0] in {p.pk for p in waiting[1:]}  # own row held by task-a


def test_a_file_that_failed_is_not_decoded_again_by_its_own_task(make_photo, sample_paths, caplog):
    good = make_photo(sample_paths["coffee"])
    bad = make_photo(b"not a picture at all", name="notes.jpg")
    first = embed_rows.apply(args=["photos.Photo", [good.pk]]).get()  # takes the waiting bad row along
    assert first["failed"].keys() == {str(bad.pk)}
    second = embed_rows.apply(args=["photos.Photo", [bad.pk]]).get()  # the bad row's own task, later
    assert second == {"embedded": [], "skipped": [], "failed": {}}
    logged = [r for r in caplog.records if f"pk={bad.pk} failed" in r.getMessage()]
    assert len(logged) == 1
    forced = embed_rows.apply(args=["photos.Photo", [bad.pk]], kwargs={"force": True}).get()
    assert forced["failed"].keys() == {str(bad.pk)}  # force decodes it again


def test_a_row_is_claimed_by_one_task_at_a_time(make_photo, sample_paths):
    from django_semantic_images.pipeline.claims import claim_rows, release_rows

    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "coffee", "rocket")]
    pks = [p.pk for p in photos]
    assert claim_rows(Photo, pks[:2], "task-a") == pks[:2]
    assert claim_rows(Photo, pks, "task-b") == pks[2:]  # the rows task-a holds are left to it
    assert claim_rows(Photo, pks, "task-c", top_up=5) == []
    release_rows(Photo, pks, "task-a")
    assert claim_rows(Photo, pks, "task-c") == pks[:2]


def test_retries_use_celery_autoretry_with_capped_jittered_backoff():
    from django_semantic_images.tasks import BACKOFF_MAX, TRANSIENT_ERRORS

    assert embed_rows.autoretry_for == TRANSIENT_ERRORS and embed_rows.max_retries == MAX_RETRIES
    assert embed_rows.retry_backoff is True and embed_rows.retry_jitter is True
    assert embed_rows.retry_backoff_max == BACKOFF_MAX == 600


def test_rows_released_after_a_failure_are_not_taken_by_another_tasks_top_up(make_photo, sample_paths):
    from django_semantic_images.pipeline.claims import claim_rows, release_rows

    held, later = (make_photo(sample_paths[s]) for s in ("chelsea", "coffee"))
    assert claim_rows(Photo, [held.pk], "task-a") == [held.pk]
    release_rows(Photo, [held.pk], "task-a", hold=600)  # task-a failed: the row waits, out of the way
    assert claim_rows(Photo, [later.pk], "task-b", top_up=5) == [later.pk]


def test_a_file_pillow_refuses_does_not_block_later_uploads(make_photo, sample_paths):
    from tests.conftest import dds_pillow_cannot_decode

    odd = make_photo(dds_pillow_cannot_decode(), name="odd.dds")  # the oldest pending row: every top-up takes it
    later = [make_photo(sample_paths[s]) for s in ("chelsea", "rocket")]
    for photo in later:
        assert embed_rows.apply(args=["photos.Photo", [photo.pk]]).successful()
    assert {Photo.objects.get(pk=p.pk).embedding_status for p in later} == {EmbeddingStatus.EMBEDDED}
    row = Photo.objects.get(pk=odd.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and "Unknown pixel format" in row.embedding_error


def test_a_file_that_always_fails_to_read_is_tried_a_bounded_number_of_times(make_photo, sample_paths):
    from django_semantic_images.pipeline.failures import TRANSIENT_ATTEMPTS

    photo = make_photo(sample_paths["chelsea"])
    path = Path(photo.image.path)
    path.unlink()
    path.mkdir()  # EISDIR on every read
    waits = []
    try:
        embed_rows.apply(args=["photos.Photo", [photo.pk]])  # its retries run out: marked for the sweep
        for _ in range(TRANSIENT_ATTEMPTS):
            row = Photo.objects.get(pk=photo.pk)
            assert row.embedding_status == EmbeddingStatus.FAILED
            if not row.embedding_error.startswith(TRANSIENT_PREFIX):
                break
            waits.append(row.embedding_lease_until - timezone.now())
            waiting = sweep(pending_timeout=600)  # not at the next sweep: it waits its backoff
            assert (waiting.queued, waiting.unsent) == ({}, {})
            backoff_over(photo)
            sweep(pending_timeout=600)  # sent again (in-process here): another try
    finally:
        path.rmdir()
    assert len(waits) == TRANSIENT_ATTEMPTS - 1 and waits[0] > timedelta(seconds=25)
    assert all(later > 1.5 * earlier for earlier, later in zip(waits, waits[1:], strict=False))  # each longer
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_error.startswith("Gave up after")
    assert sweep(pending_timeout=600).total == 0


def test_a_database_error_on_one_row_fails_that_row_with_its_reason_and_the_batch_goes_on(make_photo, sample_paths):
    """A database error on one row's write (here a constraint refusing it) failed the whole task:
    the batch was rolled back and its rows held ``pending``, with no reason, until PENDING_TIMEOUT."""
    from django.db import connection

    good, refused = (make_photo(sample_paths[s]) for s in ("coffee", "chelsea"))
    table = connection.ops.quote_name(Photo._meta.db_table)
    with connection.cursor() as cursor:  # NOT VALID: only the rows written from now on are checked
        cursor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT refuses_one CHECK (id <> {int(refused.pk)} "
            "OR embedding_status <> 'embedded') NOT VALID"
        )
    try:
        result = embed_rows.apply(args=["photos.Photo", [good.pk, refused.pk]])
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuses_one")
    assert result.successful(), result.traceback
    assert result.get()["embedded"] == [str(good.pk)] and result.get()["failed"].keys() == {str(refused.pk)}
    row = Photo.objects.get(pk=refused.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_claimed_by == ""
    assert row.embedding_error.startswith(TRANSIENT_PREFIX) and "IntegrityError" in row.embedding_error
    assert Photo.objects.get(pk=good.pk).embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_lease_until > timezone.now()  # its backoff, then the sweep sends it again
    Photo.objects.filter(pk=refused.pk).update(embedding_lease_until=timezone.now())  # the backoff is over
    assert sweep(pending_timeout=600).queued == {"photos.Photo.embedding": 1}  # in-process here
    assert Photo.objects.get(pk=refused.pk).embedding_status == EmbeddingStatus.EMBEDDED


def test_a_database_error_on_the_one_row_of_a_batch_fails_that_row_as_among_others(make_photo, sample_paths):
    """A database error on one row's write fails that row alone in a batch of several; as the only row
    to write (its own task, beside a row found unchanged) it was taken for the encoder's or the
    database's fault ("every row of the batch failed alone"): the task failed into Celery's retries,
    8 of them, each encoding the row twice."""
    from django.db import connection

    unchanged = make_photo(sample_paths["coffee"])
    assert embed_rows.apply(args=["photos.Photo", [unchanged.pk]]).get()["embedded"] == [str(unchanged.pk)]
    refused = make_photo(sample_paths["chelsea"])
    table = connection.ops.quote_name(Photo._meta.db_table)
    with connection.cursor() as cursor:  # NOT VALID: only the rows written from now on are checked
        cursor.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT refuses_one CHECK (id <> {int(refused.pk)} "
            "OR embedding_status <> 'embedded') NOT VALID"
        )
    rows = []
    try:
        for pks, skipped in (([refused.pk], []), ([unchanged.pk, refused.pk], [str(unchanged.pk)])):
            result = embed_rows.apply(args=["photos.Photo", pks])
            assert result.successful(), result.traceback
            assert (result.get()["embedded"], result.get()["skipped"]) == ([], skipped)
            assert result.get()["failed"].keys() == {str(refused.pk)}
            rows.append(Photo.objects.get(pk=refused.pk))
            Photo.objects.filter(pk=refused.pk).update(  # as it was: pending, no try counted
                embedding_status=EmbeddingStatus.PENDING, embedding_error="", embedding_lease_until=None
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuses_one")
    for row in rows:
        assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_claimed_by == ""
        error = row.embedding_error
        assert error.startswith(f"{TRANSIENT_PREFIX}(attempt 1 of ") and "IntegrityError" in error, error
        assert row.embedding_lease_until > timezone.now()  # its backoff, then the sweep sends it again


def test_a_task_whose_models_cannot_load_marks_its_rows_with_the_reason(
    make_photo, sample_paths, settings, tiny_bert, tmp_path
):
    """The models load before the task claims its rows, outside the part that marks them on an error:
    a worker whose models could not load (here a text model without its weights) left the rows
    ``pending`` with no reason and no try counted, sent again by every sweep, for ever; in-process
    the same error marked them ``failed`` with it."""
    import shutil

    broken = tmp_path / "text-model"
    shutil.copytree(tiny_bert, broken)
    weights = [*broken.glob("*.safetensors"), *broken.glob("*.bin")]
    assert weights
    for path in weights:
        path.unlink()
    photo = make_photo(sample_paths["chelsea"])
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(broken)}}
    result = embed_rows.apply(args=["photos.Photo", [photo.pk]])
    assert result.failed()
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_claimed_by == ""
    error = row.embedding_error
    assert error.startswith(f"{TRANSIENT_PREFIX}(attempt 1 of ") and "OSError" in error, error
    assert row.embedding_lease_until > timezone.now()  # its backoff, then the sweep sends it again


def test_one_unreadable_file_among_others_waits_its_backoff_before_the_sweep_tries_it_again(make_photo, sample_paths):
    good, unreadable = (make_photo(sample_paths[s]) for s in ("coffee", "chelsea"))
    path = Path(unreadable.image.path)
    path.unlink()
    path.mkdir()  # EISDIR: that file alone fails, for a reason that may pass
    try:
        result = embed_rows.apply(args=["photos.Photo", [good.pk, unreadable.pk]]).get()
        assert result["embedded"] == [str(good.pk)] and result["failed"].keys() == {str(unreadable.pk)}
        row = Photo.objects.get(pk=unreadable.pk)
        assert row.embedding_error.startswith(TRANSIENT_PREFIX) and row.embedding_lease_until > timezone.now()
        waiting = sweep(pending_timeout=600)  # the next sweep leaves it to its backoff
        assert (waiting.queued, waiting.unsent) == ({}, {})
    finally:
        path.rmdir()
