"""The Celery pipeline end to end: real worker processes, real Redis, real PostgreSQL, real models.

Each test commits its rows, a worker started as a subprocess embeds them, and the
test polls the database. All Redis keys of a session share one random prefix.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.test import override_settings
from PIL import Image

from django_semantic_images import EmbeddingStatus
from django_semantic_images.sweep import sweep
from photos.models import Photo

from .celery_worker import (
    BROKER_OPTIONS,
    REDIS_URL,
    RESULT_OPTIONS,
    Worker,
    cleanup_keys,
    configured_app,
    database_url,
    queue_length,
    wait_for,
)

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

QUEUE = f"embed-{uuid.uuid4().hex[:8]}"
#: Gentle on a shared 2-core machine: one torch thread per worker process, on the CPU even where a GPU is.
WORKER_SETTINGS = {"WORKER_THREADS": 1, "DECODE_THREADS": 2, "DEVICE": "cpu"}


@pytest.fixture(scope="module")
def broker():
    """Point this process's Celery app at Redis (and back to no broker afterwards)."""
    from example_project.celery import app

    with (
        configured_app(
            app,
            broker_url=REDIS_URL,
            result_backend=REDIS_URL,
            broker_transport_options=BROKER_OPTIONS,
            result_backend_transport_options=RESULT_OPTIONS,
        ),
        override_settings(SEMANTIC_IMAGES={"QUEUE": QUEUE}),
    ):
        yield app
    cleanup_keys()


@pytest.fixture(scope="module")
def test_database(django_db_setup, django_db_blocker) -> str:
    with django_db_blocker.unblock():
        return database_url(connection.settings_dict)


@pytest.fixture(scope="module")
def worker(broker, test_database, tmp_path_factory):
    """One worker for the module, on the module's queue."""
    proc = Worker(QUEUE, test_database, WORKER_SETTINGS, tmp_path_factory.mktemp("workers"))
    proc.wait_loaded(broker)
    yield proc
    proc.stop()


def upload(source: Path | bytes, name: str | None = None, **fields) -> Photo:
    """Save a Photo as a site would (the on-commit hook sends the work)."""
    data = source.read_bytes() if isinstance(source, Path) else source
    photo = Photo(**fields)
    photo.image.save(name or (source.name if isinstance(source, Path) else "upload.jpg"), ContentFile(data), save=False)
    photo.save()
    return photo


def statuses(photos: list[Photo]) -> dict[int, str]:
    return dict(Photo.objects.filter(pk__in=[p.pk for p in photos]).values_list("pk", "embedding_status"))


def settled(photos: list[Photo]) -> bool:
    found = statuses(photos)
    return len(found) == len(photos) and EmbeddingStatus.PENDING not in found.values()


def worker_info(app, queue: str = QUEUE) -> dict:
    return app.send_task("semantic_images.worker_info", queue=queue).get(timeout=120)


def test_uploads_are_embedded_by_the_worker_whose_models_load_once(worker, broker, sample_paths):
    with transaction.atomic():
        photos = [upload(sample_paths[s], title=s) for s in ("chelsea", "coffee", "rocket")]
        gone = upload(sample_paths["astronaut"])
    assert statuses(photos) == {p.pk: EmbeddingStatus.PENDING for p in photos}
    gone.delete()  # deleted before (or while) the worker handles it: nothing may break
    wait_for(lambda: settled(photos), 180, "the worker to embed the uploads", worker)
    assert set(statuses(photos).values()) == {EmbeddingStatus.EMBEDDED}
    first = worker_info(broker)
    assert first["loaded_at"] is not None and first["device"] == "cpu" and first["threads"] == 1

    more = [upload(sample_paths["coins"]), upload(sample_paths["horse"])]  # two transactions, two tasks
    wait_for(lambda: settled(more), 120, "the second uploads", worker)
    second = worker_info(broker)
    assert (second["pid"], second["loaded_at"]) == (first["pid"], first["loaded_at"])  # loaded once per process

    results = list(Photo.objects.semantic_search("a cat")[:3])
    assert results[0].pk == photos[0].pk
    assert gone.pk not in {p.pk for p in Photo.objects.semantic_search("an astronaut")}


def test_bad_files_fail_with_a_reason_and_their_batch_neighbours_are_embedded(worker, broker, sample_paths):
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")  # 100 megapixels in a few kilobytes
    with transaction.atomic():
        good1 = upload(sample_paths["chelsea"])
        truncated = upload(sample_paths["rocket"].read_bytes()[:3000], "truncated.jpg")
        empty = upload(b"", "empty.jpg")
        text = upload(b"Dear editor, this is not a picture.\n", "letter.jpg")
        bombed = upload(bomb.getvalue(), "bomb.png")
        good2 = upload(sample_paths["coffee"])
    photos = [good1, truncated, empty, text, bombed, good2]
    wait_for(lambda: settled(photos), 180, "the batch to settle", worker)
    rows = {p.pk: p for p in Photo.objects.filter(pk__in=[p.pk for p in photos])}
    assert rows[good1.pk].embedding_status == rows[good2.pk].embedding_status == EmbeddingStatus.EMBEDDED
    reasons = {
        truncated.pk: ("truncated or corrupt",),
        empty.pk: ("empty",),
        text.pk: ("not an image",),
        bombed.pk: ("over the limit", "too large to decode safely"),
    }
    for pk, expected in reasons.items():
        assert rows[pk].embedding_status == EmbeddingStatus.FAILED
        assert any(reason in rows[pk].embedding_error for reason in expected), rows[pk].embedding_error
        assert rows[pk].embedding_visual is None
    assert worker.alive
    after = upload(sample_paths["horse"])
    wait_for(lambda: settled([after]), 120, "an upload after the bad batch", worker)
    assert statuses([after]) == {after.pk: EmbeddingStatus.EMBEDDED}
    # failed for good: the sweep leaves them alone
    assert sweep(pending_timeout=0).total == 0


def test_an_unchanged_resave_sends_no_work(broker, sample_paths, settings):
    idle = f"{QUEUE}-idle"  # no worker consumes it: count the messages
    settings.SEMANTIC_IMAGES = {"QUEUE": idle}
    with transaction.atomic():
        photos = [upload(sample_paths[s]) for s in ("chelsea", "coffee", "rocket", "horse", "coins")]
    assert queue_length(idle) == 1  # one transaction, one task for its five rows
    photo = Photo.objects.get(pk=photos[0].pk)
    photo.published = False
    photo.save()
    Photo.objects.get(pk=photos[1].pk).save()
    assert queue_length(idle) == 1
    photo.alt_text = "A tabby cat"
    photo.save()
    assert queue_length(idle) == 2


def test_with_the_broker_down_uploads_succeed_and_the_sweep_embeds_them_later(worker, broker, sample_paths):
    broker.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        with transaction.atomic():
            photo = upload(sample_paths["chelsea"], title="saved while the broker was down")
    finally:
        broker.conf.broker_url = REDIS_URL
    assert Photo.objects.get(pk=photo.pk).embedding_status == EmbeddingStatus.PENDING
    time.sleep(1)  # a task would have been consumed by now; there is none
    assert Photo.objects.get(pk=photo.pk).embedding_status == EmbeddingStatus.PENDING
    assert sweep(pending_timeout=60).total == 0  # not pending long enough yet
    report = sweep(pending_timeout=0)
    assert report.queued == {"photos.Photo.embedding": 1}
    wait_for(lambda: settled([photo]), 120, "the swept row", worker)
    assert statuses([photo]) == {photo.pk: EmbeddingStatus.EMBEDDED}


def test_killing_a_worker_mid_batch_loses_no_embedding(broker, test_database, sample_paths, settings, tmp_path):
    queue = f"{QUEUE}-kill"
    settings.SEMANTIC_IMAGES = {"QUEUE": queue, "BATCH_SIZE": 32}  # one task for all rows
    per_batch = {**WORKER_SETTINGS, "BATCH_SIZE": 2}  # the worker embeds and writes two at a time
    first = Worker(queue, test_database, per_batch, tmp_path)
    try:
        first.wait_loaded(broker)
        names = sorted(sample_paths)
        with transaction.atomic():
            photos = [upload(sample_paths[names[i % len(names)]], f"kill-{i}.jpg") for i in range(16)]

        def some_done() -> int:
            return Photo.objects.filter(pk__in=[p.pk for p in photos], embedding_status="embedded").count()

        done = wait_for(some_done, 180, "the first rows of the batch", first)
        first.kill()
        task_id = re.search(r"semantic_images\.embed_rows\[([0-9a-f-]+)\] received", first.output()).group(1)
    finally:
        first.stop()
    done_at_kill = some_done()
    assert done <= done_at_kill < len(photos), "the worker finished before it was killed"
    second = Worker(queue, test_database, per_batch, tmp_path)
    try:
        second.wait_loaded(broker)  # the killed worker's message comes back after the visibility timeout
        wait_for(lambda: settled(photos), 180, "the new worker to finish the batch", second)
    finally:
        second.stop()
    assert set(statuses(photos).values()) == {EmbeddingStatus.EMBEDDED}
    # the killed worker's unacknowledged message went back to the queue and the new worker ran it
    assert f"semantic_images.embed_rows[{task_id}] received" in second.output()


def test_reindex_through_the_queue(worker, broker, make_photo, sample_paths):
    from django.core.management import call_command

    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "coffee", "rocket")]  # saved without work
    out = io.StringIO()
    call_command(
        "semantic_images_reindex", "--missing", "--queue", "--batch-size", "2", stdout=out, stderr=io.StringIO()
    )
    assert "3 rows sent as 2 tasks to queue" in out.getvalue()
    wait_for(lambda: settled(photos), 120, "the reindexed rows", worker)
    assert set(statuses(photos).values()) == {EmbeddingStatus.EMBEDDED}
    status = io.StringIO()
    call_command("semantic_images_status", stdout=status)
    assert f"embedding: queue '{QUEUE}'" in status.getvalue()


def test_a_worker_that_does_not_consume_the_queue_loads_no_models(broker, test_database, tmp_path):
    other = Worker(QUEUE, test_database, WORKER_SETTINGS, tmp_path, concurrency=2, consume=f"{QUEUE}-other")
    try:
        other.wait_ready()
        info = worker_info(broker, queue=f"{QUEUE}-other")
    finally:
        other.stop()
    assert info["concurrency"] == 2 and info["embeds"] is False
    assert info["loaded_at"] is None and info["threads"] is None
