"""``semantic_images_reindex``, ``semantic_images_status``, the sweep and the encoder check,
in-process (no broker), against real PostgreSQL + pgvector and the real models."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.utils import timezone

from django_semantic_images import EmbeddingStatus
from django_semantic_images.encoders import get_encoder
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.pipeline import TRANSIENT_PREFIX, embed_instances
from django_semantic_images.sweep import sweep
from photos.models import Photo

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def status(photo: Photo) -> str:
    return Photo.objects.get(pk=photo.pk).embedding_status


@pytest.fixture
def rows(make_photo, sample_paths):
    """Embedded, pending, failed-for-good and failed-for-a-passing-reason rows."""
    embedded = make_photo(sample_paths["chelsea"], title="a cat")
    embed_instances([embedded])
    pending = make_photo(sample_paths["coffee"])
    broken = make_photo(b"not a picture", name="notes.jpg")
    embed_instances([broken])
    transient = make_photo(sample_paths["rocket"])
    Photo.objects.filter(pk=transient.pk).update(
        embedding_status=EmbeddingStatus.FAILED, embedding_error=f"{TRANSIENT_PREFIX}storage timed out"
    )
    return {"embedded": embedded, "pending": pending, "broken": broken, "transient": transient}


def test_missing_embeds_rows_without_vectors_but_not_bad_images(rows):
    before = Photo.objects.get(pk=rows["embedded"].pk).embedding_updated_at
    out = run("semantic_images_reindex", "--missing", "--no-progress")
    assert "photos.Photo.embedding: 2 embedded, 0 unchanged, 0 failed" in out
    assert status(rows["pending"]) == status(rows["transient"]) == EmbeddingStatus.EMBEDDED
    assert status(rows["broken"]) == EmbeddingStatus.FAILED
    assert Photo.objects.get(pk=rows["embedded"].pk).embedding_updated_at == before


def test_all_skips_unchanged_rows_and_force_recomputes_them(rows):
    out = run("semantic_images_reindex", "--model", "photos.Photo", "--batch-size", "2", "--no-progress")
    # the pending and transient rows are embedded, the embedded one is unchanged, the bad image fails again
    assert "2 embedded, 1 unchanged, 1 failed" in out
    assert f"pk={rows['broken'].pk}: The file is not an image" in out
    stamp = Photo.objects.get(pk=rows["embedded"].pk).embedding_updated_at
    out = run("semantic_images_reindex", "--force", "--no-progress")
    assert "3 embedded, 0 unchanged, 1 failed" in out
    assert Photo.objects.get(pk=rows["embedded"].pk).embedding_updated_at > stamp


def test_stale_reembeds_only_rows_from_another_encoder(rows):
    embed_instances(Photo.objects.filter(pk=rows["pending"].pk))
    Photo.objects.filter(pk=rows["embedded"].pk).update(embedding_encoder="old-encoder:1")
    report = json.loads(run("semantic_images_status", "--json"))["fields"][0]
    assert report["other_encoder"] == 1
    out = run("semantic_images_reindex", "--stale", "--no-progress")
    assert "1 embedded, 0 unchanged, 0 failed" in out
    assert Photo.objects.get(pk=rows["embedded"].pk).embedding_encoder == get_encoder().identity
    assert status(rows["transient"]) == EmbeddingStatus.FAILED  # not stale, not touched


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


def test_status_counts_and_oldest_pending_row(rows, make_photo, sample_paths):
    newer = make_photo(sample_paths["astronaut"])
    assert newer.embedding_updated_at > rows["pending"].embedding_updated_at
    data = json.loads(run("semantic_images_status", "--json"))
    assert data["mode"] == "in-process (no broker)"
    info = data["fields"][0]
    assert info["encoder"] == get_encoder().identity
    assert info["counts"] == {"embedded": 1, "pending": 2, "failed": 2}
    assert info["failed_transient"] == 1 and info["total"] == 5
    assert info["oldest_pending"]["pk"] == str(rows["pending"].pk)
    assert info["index_bytes"]["semantic"] > 0 and info["index_bytes"]["visual"] > 0
    assert data["shared_buffers_bytes"] >= 128 * 2**20
    text = run("semantic_images_status")
    assert "HNSW indexes: semantic " in text
    assert f"shared_buffers {data['shared_buffers_bytes'] / 2**20:.0f} MB" in text
    assert "photos.Photo.embedding: 5 rows: 1 embedded, 2 pending, 2 failed (1 for a passing reason)" in text
    assert f"oldest pending: pk={rows['pending'].pk}" in text


def test_bad_arguments_are_clear_errors(db):
    with pytest.raises(CommandError, match="No Celery broker"):
        run("semantic_images_reindex", "--queue")
    with pytest.raises(CommandError, match="Unknown model"):
        run("semantic_images_reindex", "--model", "photos.Nope")
    with pytest.raises(CommandError, match="at least 1"):
        run("semantic_images_reindex", "--batch-size", "0")
    with pytest.raises(CommandError, match="No ImageEmbeddingField named 'nope'"):
        run("semantic_images_reindex", "--field", "nope")


class WiderEncoder(ConSEEncoder):
    """The default encoder with other column sizes, as after switching to a CLIP-like model."""

    name = "wider-test-encoder"
    visual_dimensions = 512
    semantic_dimensions = 512


def test_a_dimension_change_fails_the_check_with_the_commands_to_run(settings):
    settings.SEMANTIC_IMAGES = {"ENCODER": f"{__name__}.WiderEncoder"}
    with pytest.raises(SystemCheckError) as info:
        call_command("check", "--database", "default", stdout=io.StringIO(), stderr=io.StringIO())
    message = str(info.value)
    assert "embedding_visual stores 1280-d vectors, but the encoder wider-test-encoder" in message
    assert "makemigrations photos" in message
    assert "semantic_images_reindex --model photos.Photo" in message


def due_pks(**kwargs) -> set[int]:
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.sweep import due_filter

    return set(Photo.objects.filter(due_filter(get_embedding_field(Photo), **kwargs)).values_list("pk", flat=True))


def test_lost_work_is_due_within_a_lease_with_the_default_settings(make_photo, sample_paths):
    """The default LEASE (30 s) plus the example site's beat period (10 s) stays under 60 s."""
    from django.conf import settings as django_settings

    from django_semantic_images.conf import DEFAULTS
    from django_semantic_images.pipeline import claim_rows

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
