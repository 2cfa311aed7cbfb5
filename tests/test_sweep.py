"""``sweep``: which rows are due, and sending them again (in-process, no broker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_semantic_images import EmbeddingStatus
from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX
from django_semantic_images.sweep import sweep
from photos.models import Photo
from tests.conftest import run_command as run
from tests.conftest import status_of as status

pytestmark = pytest.mark.django_db(transaction=True)


def test_sweep_requeues_due_rows_only(rows):
    fresh = rows["pending"]
    old = Photo.objects.get(pk=fresh.pk)
    Photo.objects.filter(pk=fresh.pk).update(embedding_updated_at=timezone.now() - timedelta(hours=1))
    Photo.objects.filter(pk=rows["embedded"].pk).update(embedding_encoder="old-encoder:1")
    report = sweep(pending_timeout=600)  # no broker: the due rows are embedded in this process
    assert report.queued == {"photos.Photo.embedding": 3}
    for name in ("pending", "transient", "embedded"):
        assert status(rows[name]) == EmbeddingStatus.EMBEDDED, name
    broken = Photo.objects.get(pk=rows["broken"].pk)
    assert broken.embedding_status == EmbeddingStatus.FAILED and TRANSIENT_PREFIX not in broken.embedding_error
    assert old.embedding_status == EmbeddingStatus.PENDING
    assert sweep(pending_timeout=600).total == 0


def test_sweep_leaves_recently_pending_rows_to_their_tasks(rows):
    report = sweep(pending_timeout=600)
    assert report.queued == {"photos.Photo.embedding": 1}  # only the transient failure
    assert status(rows["pending"]) == EmbeddingStatus.PENDING
    out = run("semantic_images_reindex", "--due", "--no-progress")
    assert "nothing to do" in out


def due_pks(**kwargs) -> set[int]:
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.sweep import due_filter

    return set(Photo.objects.filter(due_filter(get_embedding_field(Photo), **kwargs)).values_list("pk", flat=True))


def test_lost_work_is_due_within_a_lease_with_the_default_settings(make_photo, sample_paths):
    """The default LEASE (30 s) plus the example site's beat period (10 s) stays under 60 s."""
    from django.conf import settings as django_settings

    from django_semantic_images.conf import DEFAULTS
    from django_semantic_images.pipeline.claims import claim_rows

    lease = DEFAULTS["LEASE"]
    beat = django_settings.CELERY_BEAT_SCHEDULE["semantic-images-sweep"]["schedule"]
    assert lease + beat < 60
    claimed, queued, unsent = (make_photo(sample_paths[s]) for s in ("chelsea", "coffee", "rocket"))
    start = timezone.now()
    assert claim_rows(Photo, [claimed.pk], "worker-that-dies") == [claimed.pk]  # its lease: LEASE s from now
    Photo.objects.filter(pk=unsent.pk).update(embedding_lease_until=None)  # dispatch could not send it
    while_held = start + timedelta(seconds=lease - 1)
    after = start + timedelta(seconds=lease + 1)
    # a claim is taken back when its lease runs out, whatever the queue holds
    assert claimed.pk not in due_pks(now=while_held, unsent=True, queue_empty=True)
    assert claimed.pk in due_pks(now=after)
    # unsent work is due at once with a queue; in-process it waits for PENDING_TIMEOUT
    assert unsent.pk in due_pks(now=start, unsent=True)
    assert unsent.pk not in due_pks(now=start)
    # queued work whose lease ran out is due only once the queue is empty (else it waits its turn)
    assert queued.pk not in due_pks(now=after, unsent=True)
    assert queued.pk in due_pks(now=after, unsent=True, queue_empty=True)
    assert queued.pk not in due_pks(now=while_held, unsent=True, queue_empty=True)
    # the backstop: pending too long, with the queue never empty
    late = timezone.now() + timedelta(seconds=DEFAULTS["PENDING_TIMEOUT"] + 1)
    assert {queued.pk, unsent.pk} <= due_pks(now=late)


def test_the_sweep_leaves_stale_and_transiently_failed_rows_to_the_worker_holding_them(make_photo, sample_paths):
    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.pipeline import embed_pks
    from django_semantic_images.pipeline.claims import claim_rows

    stale, transient = (make_photo(sample_paths[s]) for s in ("chelsea", "coffee"))
    Photo.objects.filter(pk=stale.pk).update(
        embedding_status=EmbeddingStatus.EMBEDDED, embedding_encoder="old-encoder:1"
    )
    Photo.objects.filter(pk=transient.pk).update(
        embedding_status=EmbeddingStatus.FAILED, embedding_error=f"{TRANSIENT_PREFIX}storage timed out"
    )
    pks = sorted([stale.pk, transient.pk])
    assert claim_rows(Photo, pks, "worker-a") == pks  # e.g. the task of reindex --stale --queue
    assert sweep(pending_timeout=600).total == 0  # its lease holds: not the sweep's to take
    assert embed_pks(Photo, pks, claim="worker-a").embedded == pks  # the holder's writes go through
    Photo.objects.filter(pk=stale.pk).update(embedding_encoder="old-encoder:1")
    assert claim_rows(Photo, [stale.pk], "worker-b") == [stale.pk]
    assert stale.pk not in due_pks()
    later = timezone.now() + timedelta(seconds=semantic_settings.LEASE + 1)
    assert stale.pk in due_pks(now=later)  # a holder whose lease ran out loses them


def test_a_retry_under_the_same_claim_gets_a_full_lease_on_the_rows_it_still_holds(make_photo, sample_paths):
    """A Celery retry in the process of its first attempt (the same claim token) whose release failed
    (the database was gone) takes its rows back with a lease of its own: not what was left of the
    first attempt's, which would run out under its first batch and let the sweep take them back."""
    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.pipeline.claims import claim_rows

    photo = make_photo(sample_paths["chelsea"])
    assert claim_rows(Photo, [photo.pk], "host:1:task") == [photo.pk]
    Photo.objects.filter(pk=photo.pk).update(embedding_lease_until=timezone.now() + timedelta(seconds=1))
    start = timezone.now()
    assert claim_rows(Photo, [photo.pk], "host:1:task") == [photo.pk]  # the retry
    lease = Photo.objects.get(pk=photo.pk).embedding_lease_until
    assert lease >= start + timedelta(seconds=semantic_settings.LEASE - 1)
    assert claim_rows(Photo, [photo.pk], "host:2:other") == []  # still one holder


def test_overlapping_sweeps_send_a_due_row_once(make_photo, sample_paths):
    import threading
    import time

    from django.db import connection, transaction

    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.sweep import due_filter, mark_pending

    photo = make_photo(sample_paths["coffee"])
    Photo.objects.filter(pk=photo.pk).update(embedding_updated_at=timezone.now() - timedelta(hours=1))
    locked = threading.Event()

    def another_sweep() -> None:  # has found the row due and is marking it sent
        try:
            with transaction.atomic():
                list(Photo.objects.select_for_update().filter(pk=photo.pk))
                locked.set()
                time.sleep(1.5)
                emb = get_embedding_field(Photo)
                assert mark_pending(Photo, emb, [photo.pk], due_filter(emb, pending_timeout=600)) == 1
        finally:
            connection.close()

    other = threading.Thread(target=another_sweep)
    other.start()
    assert locked.wait(30)
    report = sweep(pending_timeout=600)
    other.join()
    assert report.total == 0  # the other sweep sends it
    assert status(photo) == EmbeddingStatus.PENDING
