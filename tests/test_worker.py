"""The Celery pipeline end to end: real worker processes, real Redis, real PostgreSQL, real models.

Each test commits its rows, a worker started as a subprocess embeds them, and the
test polls the database. All Redis keys of a session share one random prefix. The
module's worker runs beat too (the sweep every BEAT s) with a LEASE of a few
seconds, so that lost work comes back in seconds; a trigger counts the embedding
writes per row, to show that no row is embedded twice.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from PIL import Image

from django_semantic_images import EmbeddingStatus
from django_semantic_images.sweep import sweep
from photos.models import Photo

from .celery_worker import (
    REDIS_URL,
    Worker,
    configured_app,
    database_url,
    drop_queued_messages,
    on_redis,
    queue_length,
    wait_for,
)
from .conftest import statuses, upload

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

QUEUE = f"embed-{uuid.uuid4().hex[:8]}"
#: Seconds: the lease of claimed and queued rows, and the sweep period of the module's worker
#: (the defaults are 30 s and the site's beat period; test_sweep checks those). To time
#: recovery with the defaults: SEMANTIC_IMAGES_TEST_LEASE=30 SEMANTIC_IMAGES_TEST_BEAT=10 pytest -s ...
LEASE = int(os.environ.get("SEMANTIC_IMAGES_TEST_LEASE", "5"))
BEAT = float(os.environ.get("SEMANTIC_IMAGES_TEST_BEAT", "1"))
#: Gentle on a shared 2-core machine: one torch thread per worker process, on the CPU even where a GPU is.
WORKER_SETTINGS = {"WORKER_THREADS": 1, "DECODE_THREADS": 2, "DEVICE": "cpu", "LEASE": LEASE}


@pytest.fixture(scope="module")
def broker():
    """Point this process's Celery app at Redis (and back to no broker afterwards)."""
    from example_project.celery import app

    with on_redis(app, QUEUE=QUEUE, LEASE=LEASE):
        yield app


@pytest.fixture(scope="module")
def test_database(django_db_setup, django_db_blocker) -> str:
    with django_db_blocker.unblock():
        return database_url(connection.settings_dict)


@pytest.fixture(scope="module")
def worker(broker, test_database, tmp_path_factory):
    """One worker for the module, on the module's queue, with beat sending it the sweep every BEAT s."""
    proc = Worker(QUEUE, test_database, WORKER_SETTINGS, tmp_path_factory.mktemp("workers"), beat=BEAT)
    proc.wait_loaded(broker)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def second_worker(broker, test_database, tmp_path_factory):
    """Another worker, on a queue of its own, embedding two images per batch (no beat)."""
    settings = {**WORKER_SETTINGS, "BATCH_SIZE": 2}
    proc = Worker(f"{QUEUE}-2", test_database, settings, tmp_path_factory.mktemp("workers"))
    proc.wait_loaded(broker)
    yield proc
    proc.stop()


@pytest.fixture
def writes():
    """Counts the embedding writes per row (a trigger), from every process: ``writes() -> {pk: n}``."""
    table = Photo._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_embedding_writes (row_pk bigint NOT NULL)")
        cursor.execute(
            "CREATE FUNCTION test_count_embedding_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO test_embedding_writes VALUES (NEW.id); RETURN NULL; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER test_count_embedding_write AFTER UPDATE ON {table} FOR EACH ROW "
            "WHEN (NEW.embedding_status = 'embedded' "
            "AND NEW.embedding_updated_at IS DISTINCT FROM OLD.embedding_updated_at) "
            "EXECUTE FUNCTION test_count_embedding_write()"
        )

    def counts() -> dict[int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT row_pk, count(*) FROM test_embedding_writes GROUP BY row_pk")
            return dict(cursor.fetchall())

    yield counts
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER test_count_embedding_write ON {table}")
        cursor.execute("DROP FUNCTION test_count_embedding_write()")
        cursor.execute("DROP TABLE test_embedding_writes")


def settled(photos: list[Photo]) -> bool:
    found = statuses(photos)
    return len(found) == len(photos) and EmbeddingStatus.PENDING not in found.values()


def worker_info(app, queue: str = QUEUE) -> dict:
    return app.send_task("semantic_images.worker_info", queue=queue).get(timeout=120)


def embedded_once(photos: list[Photo], writes) -> None:
    assert set(statuses(photos).values()) == {EmbeddingStatus.EMBEDDED}
    assert writes() == {p.pk: 1 for p in photos}


def test_tasks_lost_with_a_restarted_redis_are_embedded_once_when_a_worker_is_back(
    request, broker, sample_paths, writes
):
    # Runs first: no worker consumes the queue yet, so the task waits there.
    with transaction.atomic():
        photos = [upload(sample_paths[s], f"restart-{s}.jpg") for s in ("chelsea", "coffee", "rocket")]
    assert queue_length(QUEUE) == 1
    assert drop_queued_messages(QUEUE) == 1  # a Redis restart without persistence: the task is gone
    proc = request.getfixturevalue("worker")  # a worker starts (and sweeps when ready), loads its models
    available = time.monotonic()
    wait_for(lambda: settled(photos), 3 * LEASE + 10 * BEAT + 30, "the lost rows", proc)
    print(f"lost with Redis: embedded {time.monotonic() - available:.1f} s after the worker had loaded")
    embedded_once(photos, writes)


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


def test_one_unreadable_file_alone_in_its_task_fails_its_row_at_once(worker, broker, settings, sample_paths):
    """A storage error on the file of a task of that row alone (EISDIR) took the task into Celery's
    retries, as if the whole storage were gone: 8 of them, a random wait of up to 1, 2, 4 ... s
    each, the row held ``pending`` meanwhile; among others it fails that row alone. It now does
    alone too: ``failed`` with the reason at once, counted, and the worker goes on."""
    from pathlib import Path

    from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX
    from django_semantic_images.signals import embedding_deferred

    name = f"photos/unreadable-{uuid.uuid4().hex[:8]}.jpg"
    folder = Path(settings.MEDIA_ROOT) / name
    folder.mkdir(parents=True)  # the "file" is a folder: reading it fails with EISDIR, a fault that may pass
    try:
        with embedding_deferred():  # the worker's sweep sends it, a task of that row alone
            unreadable = Photo.objects.create(image=name)
        wait_for(lambda: settled([unreadable]), 30, "the unreadable row to settle", worker)
    finally:
        folder.rmdir()
    row = Photo.objects.get(pk=unreadable.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_claimed_by == ""
    error = row.embedding_error
    assert error.startswith(f"{TRANSIENT_PREFIX}(attempt 1 of ") and "Is a directory" in error, error
    after = upload(sample_paths["horse"])
    wait_for(lambda: settled([after]), 120, "an upload after the unreadable file", worker)
    assert statuses([after]) == {after.pk: EmbeddingStatus.EMBEDDED}


def test_a_file_pillow_refuses_does_not_hold_up_later_uploads(worker, broker, sample_paths):
    from .conftest import dds_pillow_cannot_decode

    odd = upload(dds_pillow_cannot_decode(), "odd.dds")  # each upload its own task; every top-up sees this row
    later = [upload(sample_paths[stem]) for stem in ("chelsea", "rocket", "coffee")]
    wait_for(lambda: settled([odd, *later]), 60, "the uploads after the odd file", worker)
    assert set(statuses(later).values()) == {EmbeddingStatus.EMBEDDED}
    row = Photo.objects.get(pk=odd.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED and "Unknown pixel format" in row.embedding_error


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


def test_stale_rows_reindex_sends_are_not_sent_again_by_the_next_sweep(broker, make_photo, sample_paths, settings):
    from .conftest import run_command

    idle = f"{QUEUE}-stale"  # no worker consumes it: count the messages
    settings.SEMANTIC_IMAGES = {"QUEUE": idle, "LEASE": LEASE}
    photo = make_photo(sample_paths["chelsea"])
    Photo.objects.filter(pk=photo.pk).update(
        embedding_status=EmbeddingStatus.EMBEDDED, embedding_encoder="old-encoder:1"
    )
    try:
        run_command("semantic_images_reindex", "--stale", "--queue", "--no-progress")
        assert queue_length(idle) == 1
        row = Photo.objects.get(pk=photo.pk)
        assert row.embedding_status == EmbeddingStatus.PENDING and row.embedding_lease_until is not None
        assert sweep().total == 0  # sent: the sweep leaves the row to that task
        assert queue_length(idle) == 1
    finally:
        drop_queued_messages(idle)


def test_the_reembed_action_then_the_sweep_send_one_task(broker, make_photo, sample_paths, settings):
    from django.utils import timezone

    from django_semantic_images.admin.actions import reembed_selected

    idle = f"{QUEUE}-reembed"  # no worker consumes it: count the messages
    settings.SEMANTIC_IMAGES = {"QUEUE": idle}
    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "coffee")]
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Photo.objects.update(embedding_status=EmbeddingStatus.EMBEDDED, embedding_updated_at=an_hour_ago)

    class PhotoAdmin:  # what the action asks of a ModelAdmin whose user may change every row
        embedding_field = None

        def has_change_permission(self, request, obj=None) -> bool:
            return True

        def message_user(self, *args, **kwargs) -> None:
            pass

    with transaction.atomic():
        reembed_selected(PhotoAdmin(), None, Photo.objects.filter(pk__in=[p.pk for p in photos]))
    assert queue_length(idle) == 1
    assert set(statuses(photos).values()) == {EmbeddingStatus.PENDING}
    sweep()  # the task is in the queue: nothing is due
    assert queue_length(idle) == 1


def test_rows_saved_with_the_broker_unreachable_are_embedded_once_at_the_next_sweep(
    worker, broker, sample_paths, writes
):
    broker.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        with transaction.atomic():
            photos = [upload(sample_paths[s], title="saved while the broker was down") for s in ("chelsea", "horse")]
    finally:
        broker.conf.broker_url = REDIS_URL
    rows = Photo.objects.filter(pk__in=[p.pk for p in photos])
    assert set(rows.values_list("embedding_status", "embedding_lease_until")) == {(EmbeddingStatus.PENDING, None)}
    back = time.monotonic()  # the broker is reachable again; the worker's beat sends the sweep every BEAT s
    wait_for(lambda: settled(photos), 10 * BEAT + 30, "the rows saved while the broker was down", worker)
    print(f"broker down at upload: embedded {time.monotonic() - back:.1f} s after it was back")
    embedded_once(photos, writes)


def test_a_save_with_redis_down_as_broker_and_result_backend_returns_at_once(broker, sample_paths):
    """Redis is often the result backend too: sending the task subscribed to its result there
    first, and Celery's result consumer retried the connection for about 20 s before it gave up,
    so a save made while Redis was down waited that long (work sent by dispatch never reads a result)."""
    down = "redis://127.0.0.1:1/0"  # nothing listens there
    with configured_app(broker, broker_url=down, result_backend=down):
        started = time.monotonic()
        photo = upload(sample_paths["chelsea"], title="saved while Redis was down")
        took = time.monotonic() - started
    row = Photo.objects.get(pk=photo.pk)
    assert (row.embedding_status, row.embedding_lease_until) == (EmbeddingStatus.PENDING, None)  # for the sweep
    assert took < 10, f"the save took {took:.1f} s"


def test_a_save_with_redis_not_answering_returns_in_seconds(broker, sample_paths, tmp_path):
    """A Redis that takes the connection and never answers (stopped, or its host cut off by the
    network): the publish waited for an answer without a timeout, and the request that had saved
    the row hung for good."""
    import signal
    import threading

    from .celery_worker import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    saved: list[Photo] = []

    def save() -> None:  # a request of its own: its thread is left waiting if the save hangs
        try:
            saved.append(upload(sample_paths["chelsea"], title="saved while Redis did not answer"))
        finally:
            connection.close()

    thread = threading.Thread(target=save)
    try:
        with configured_app(broker, broker_url=server.url, result_backend=server.url):
            started = time.monotonic()
            thread.start()
            thread.join(30)
            took, hung = time.monotonic() - started, thread.is_alive()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
        thread.join(30)
    assert not hung, f"the save still waited for Redis after {took:.0f} s"
    row = Photo.objects.get(pk=saved[0].pk)
    assert (row.embedding_status, row.embedding_lease_until) == (EmbeddingStatus.PENDING, None)  # for the sweep


def test_two_workers_given_the_same_rows_embed_each_once(
    worker, second_worker, broker, make_photo, sample_paths, writes
):
    names = sorted(sample_paths)
    photos = [make_photo(sample_paths[names[i % len(names)]], f"twice-{i}.jpg") for i in range(8)]
    pks = [str(p.pk) for p in photos]
    results = [
        broker.send_task("semantic_images.embed_rows", args=["photos.Photo", pks], queue=proc.queue)
        for proc in (worker, second_worker)
    ]
    reports = [r.get(timeout=180) for r in results]
    embedded = [set(r["embedded"]) for r in reports]
    assert not embedded[0] & embedded[1]
    assert embedded[0] | embedded[1] == set(pks)
    embedded_once(photos, writes)


def test_killing_a_worker_mid_batch_its_rows_are_embedded_once_within_a_lease(
    worker, second_worker, broker, sample_paths, settings, writes
):
    settings.SEMANTIC_IMAGES = {"QUEUE": second_worker.queue, "BATCH_SIZE": 32, "LEASE": LEASE}  # one task
    names = sorted(sample_paths)
    with transaction.atomic():
        photos = [upload(sample_paths[names[i % len(names)]], f"kill-{i}.jpg") for i in range(12)]

    def done() -> int:
        return Photo.objects.filter(pk__in=[p.pk for p in photos], embedding_status="embedded").count()

    wait_for(done, 180, "the first rows of the batch", second_worker)
    second_worker.kill()  # it embeds two rows per batch and holds the rest
    killed = time.monotonic()
    done_at_kill = done()
    assert done_at_kill < len(photos), "the worker finished before it was killed"
    # the other worker's sweep takes the rows back when their lease runs out
    wait_for(lambda: settled(photos), 2 * LEASE + 10 * BEAT + 30, "the killed worker's rows", worker)
    print(f"killed worker: its {len(photos) - done_at_kill} rows embedded {time.monotonic() - killed:.1f} s later")
    embedded_once(photos, writes)


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
    assert f"queue '{QUEUE}'" in status.getvalue()


def test_a_worker_that_does_not_consume_the_queue_loads_no_models(broker, test_database, tmp_path):
    other = Worker(QUEUE, test_database, WORKER_SETTINGS, tmp_path, concurrency=2, consume=f"{QUEUE}-other")
    try:
        other.wait_ready()
        info = worker_info(broker, queue=f"{QUEUE}-other")
    finally:
        other.stop()
    assert info["concurrency"] == 2 and info["embeds"] is False
    assert info["loaded_at"] is None and info["threads"] is None
