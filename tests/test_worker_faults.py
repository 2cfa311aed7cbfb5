"""Faults beyond a killed worker: PostgreSQL restarted under a working worker, Redis restarted
with uploads queued. Real servers, a real Celery worker process, the real models.

Neither server is the session's own: PostgreSQL is a copy of the test server (``pg_basebackup``,
tests/pg_cluster.py) that this process's ``default`` connection is pointed at for the test, and
Redis a ``redis-server`` without persistence on a port of its own (tests/celery_worker.py). The
worker keeps its database connection between tasks (``CONN_MAX_AGE``), as production workers do.
Afterwards every row must be embedded or failed with a reason, none still held by a worker, the
worker must still embed new uploads, and no row may wait longer than a lease and a few sweep periods.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connections, transaction
from django.test import override_settings

from django_semantic_images import EmbeddingStatus
from photos.models import Photo

from .celery_worker import (
    BROKER_OPTIONS,
    REDIS_URL,
    RESULT_OPTIONS,
    RedisServer,
    Worker,
    cleanup_keys,
    configured_app,
    database_url,
    queue_length,
    wait_for,
)
from .conftest import statuses, upload
from .pg_cluster import Cluster

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

QUEUE = f"faults-{uuid.uuid4().hex[:8]}"
LEASE = 5
BEAT = 1.0
WORKER_SETTINGS = {"WORKER_THREADS": 1, "DECODE_THREADS": 2, "DEVICE": "cpu", "LEASE": LEASE}
#: The worker keeps its connection across tasks, like a production worker with persistent connections.
WORKER_ENV = {"SEMANTIC_IMAGES_TEST_CONN_MAX_AGE": "600"}
#: The longest a row may wait once the fault is over: its lease, the sweep, and an embedding.
RECOVERY = 2 * LEASE + 10 * BEAT + 30


@contextmanager
def celery_app(broker: str) -> Iterator:
    """This process's Celery app on ``broker`` (and back to no broker afterwards)."""
    from example_project.celery import app

    with (
        configured_app(
            app,
            broker_url=broker,
            result_backend=broker,
            broker_transport_options=BROKER_OPTIONS,
            result_backend_transport_options=RESULT_OPTIONS,
        ),
        override_settings(SEMANTIC_IMAGES={"QUEUE": QUEUE, "LEASE": LEASE}),
    ):
        yield app


@contextmanager
def default_database_on(cluster: Cluster) -> Iterator[None]:
    """Point this process's ``default`` connection at ``cluster`` (the same database, another server)."""
    conn = connections["default"]
    saved = dict(conn.settings_dict)
    conn.close()
    conn.settings_dict.update(HOST=str(cluster.pgdata), PORT=str(cluster.port))
    try:
        yield
    finally:
        conn.close()
        conn.settings_dict.clear()
        conn.settings_dict.update(saved)


def settled(photos: list[Photo]) -> bool:
    """No row pending, and none held by a task (a late retry may still hold rows that it will skip)."""
    rows = Photo.objects.filter(pk__in=[p.pk for p in photos])
    found = dict(rows.values_list("pk", "embedding_status"))
    held = rows.exclude(embedding_claimed_by="").exists()
    return len(found) == len(photos) and EmbeddingStatus.PENDING not in found.values() and not held


def assert_all_done(photos: list[Photo]) -> None:
    """Every row embedded, or failed with a reason."""
    rows = Photo.objects.filter(pk__in=[p.pk for p in photos])
    for status, error in rows.values_list("embedding_status", "embedding_error"):
        assert status == EmbeddingStatus.EMBEDDED or (status == EmbeddingStatus.FAILED and error), (status, error)
    assert rows.count() == len(photos)


def test_postgresql_restarted_while_a_worker_is_mid_batch(transactional_db, sample_paths, tmp_path):
    cluster = Cluster(connections["default"].settings_dict, port=5434)
    try:
        cluster.start()
        with default_database_on(cluster), celery_app(REDIS_URL) as app:
            url = database_url(connections["default"].settings_dict)
            settings = {**WORKER_SETTINGS, "BATCH_SIZE": 2}
            worker = Worker(QUEUE, url, settings, tmp_path, beat=BEAT, env=WORKER_ENV)
            try:
                worker.wait_loaded(app)
                names = sorted(sample_paths)
                with transaction.atomic():
                    photos = [upload(sample_paths[names[i % len(names)]], f"pg-{i}.jpg") for i in range(10)]

                def embedded() -> int:
                    return Photo.objects.filter(pk__in=[p.pk for p in photos], embedding_status="embedded").count()

                wait_for(embedded, 180, "the first batch", worker)
                cluster.restart()  # every session ends at once, the worker's among them, mid-batch
                connections["default"].close()
                back = time.monotonic()
                assert embedded() < len(photos), "the worker finished before the restart"
                wait_for(lambda: settled(photos), RECOVERY, "the rows after the restart", worker)
                print(f"PostgreSQL restarted mid-batch: all rows settled {time.monotonic() - back:.1f} s later")
                assert_all_done(photos)

                # Restarted again while the worker is idle, holding its (now dead) persistent connection.
                cluster.restart()
                connections["default"].close()
                after = upload(sample_paths["chelsea"], "pg-after.jpg")
                back = time.monotonic()
                wait_for(lambda: settled([after]), RECOVERY, "an upload after an idle restart", worker)
                print(f"PostgreSQL restarted while idle: the next upload embedded in {time.monotonic() - back:.1f} s")
                assert statuses([after]) == {after.pk: EmbeddingStatus.EMBEDDED}

                # Down for longer than a lease (a failover): the task's retries back off meanwhile.
                with transaction.atomic():
                    more = [upload(sample_paths[names[i % len(names)]], f"pg-down-{i}.jpg") for i in range(6)]
                wait_for(
                    lambda: Photo.objects.filter(pk__in=[p.pk for p in more], embedding_status="embedded").count(),
                    180,
                    "the first batch",
                    worker,
                )
                cluster.stop()
                time.sleep(2 * LEASE)
                cluster.start()
                connections["default"].close()
                back = time.monotonic()
                wait_for(lambda: settled(more), RECOVERY, "the rows after the outage", worker)
                print(
                    f"PostgreSQL down {2 * LEASE} s mid-batch: all rows settled {time.monotonic() - back:.1f} s later"
                )
                assert_all_done(more)
                # A retry that was backing off when the sweep sent the rows again comes late: it
                # claims them, finds them embedded and unchanged, and lets go.
                wait_for(lambda: not Photo.objects.exclude(embedding_claimed_by="").exists(), 60, "no row held", worker)
                assert_all_done(more)
                assert worker.alive
            finally:
                worker.stop()
    finally:
        cluster.remove()
        cleanup_keys()


def fill_a_stopped_workers_wait(app, url: str) -> int:
    """How many messages wait in the queue of a worker just stopped, once none can go to it.

    A worker stopped while idle may have a ``BRPOP`` waiting in Redis, which takes the next
    message of the queue as it comes, into the stopped process's socket: sweeps (harmless) are
    sent until one stays in the queue, so the uploads' message does too.
    """
    deadline = time.monotonic() + 30
    while queue_length(QUEUE, url) == 0:
        assert time.monotonic() < deadline, "no message stays in the stopped worker's queue"
        app.send_task("semantic_images.sweep", queue=QUEUE)
        time.sleep(0.2)
    return queue_length(QUEUE, url)


def test_redis_restarted_while_uploads_are_queued(transactional_db, sample_paths, tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with celery_app(redis.url) as app:
            url = database_url(connections["default"].settings_dict)
            worker = Worker(QUEUE, url, WORKER_SETTINGS, tmp_path, beat=BEAT, broker=redis.url, env=WORKER_ENV)
            try:
                worker.wait_loaded(app)
                worker.pause()  # busy elsewhere: the uploads wait in the queue
                waiting = fill_a_stopped_workers_wait(app, redis.url)
                with transaction.atomic():
                    queued = [upload(sample_paths[s], f"redis-{s}.jpg") for s in ("chelsea", "coffee", "rocket")]
                assert queue_length(QUEUE, redis.url) == waiting + 1
                redis.restart()  # the queued message is gone with it
                assert queue_length(QUEUE, redis.url) == 0
                back = time.monotonic()
                worker.resume()  # its broker connection died under it
                photos = queued
                wait_for(lambda: settled(photos), RECOVERY, "the rows queued before the restart", worker)
                print(f"Redis restarted with uploads queued: all rows settled {time.monotonic() - back:.1f} s later")
                assert_all_done(photos)
                assert set(statuses(photos).values()) == {EmbeddingStatus.EMBEDDED}

                after = upload(sample_paths["coins"], "redis-after.jpg")  # this process publishes again too
                sent = time.monotonic()
                wait_for(lambda: settled([after]), RECOVERY, "an upload after the restart", worker)
                print(f"after the Redis restart: a new upload embedded in {time.monotonic() - sent:.1f} s")
                assert statuses([after]) == {after.pk: EmbeddingStatus.EMBEDDED}
                assert worker.alive
            finally:
                worker.stop()
    finally:
        redis.stop()


#: The time limit of the worker's tasks in the next test: above its models' load (the first task of
#: a new pool process waits for it), far below how long a hung task would otherwise hold it.
TIME_LIMIT = 45


def lock_waits() -> int:
    """Sessions of the test database waiting for a row lock."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def test_a_task_that_never_returns_is_ended_and_the_worker_embeds_the_next_upload(
    transactional_db, sample_paths, tmp_path
):
    """A task that never returned (here its claim waits on a row lock nobody releases; in production a
    query on a connection whose server vanished, a decode that never ends) held the worker's pool
    process for good: no later upload was embedded. TASK_TIME_LIMIT ends it; Celery starts another."""
    with celery_app(REDIS_URL) as app:
        url = database_url(connections["default"].settings_dict)
        settings = {**WORKER_SETTINGS, "TASK_TIME_LIMIT": TIME_LIMIT}
        # A visibility timeout above the time limit (as a site's must be): not delivered again meanwhile.
        options = json.dumps({**BROKER_OPTIONS, "visibility_timeout": 10 * TIME_LIMIT})
        worker = Worker(QUEUE, url, settings, tmp_path, beat=BEAT, env={"CELERY_BROKER_TRANSPORT_OPTIONS": options})
        locked, release = threading.Event(), threading.Event()

        def hold_the_row_lock(pk: int) -> None:
            try:
                with transaction.atomic():
                    list(Photo.objects.select_for_update().filter(pk=pk))
                    locked.set()
                    release.wait(600)
            finally:
                connections["default"].close()

        holder = None
        try:
            worker.wait_loaded(app)
            worker.pause()
            stuck = upload(sample_paths["chelsea"], "stuck.jpg")
            holder = threading.Thread(target=hold_the_row_lock, args=(stuck.pk,))
            holder.start()
            assert locked.wait(30)
            worker.resume()
            wait_for(lock_waits, 60, "the worker's task to wait on the lock", worker)
            after = upload(sample_paths["coffee"], "after-the-hang.jpg")
            sent = time.monotonic()
            wait_for(lambda: settled([after]), TIME_LIMIT + 150, "the next upload", worker)
            print(f"a task that never returned: the next upload embedded {time.monotonic() - sent:.1f} s later")
            assert statuses([after]) == {after.pk: EmbeddingStatus.EMBEDDED}
            assert "Hard time limit" in worker.output()
            release.set()
            holder.join(30)
            wait_for(lambda: settled([stuck]), RECOVERY, "the row the hung task held", worker)
            assert statuses([stuck]) == {stuck.pk: EmbeddingStatus.EMBEDDED}
            assert worker.alive
        finally:
            release.set()
            if holder is not None:
                holder.join(30)
            worker.stop()
