"""The sweep against a real Redis queue that no worker consumes (no worker's own sweep in the way):
what it counts as due while messages wait, and how it reads the queue's depth; and what the
messages sent to that queue carry."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from django_semantic_images import EmbeddingStatus
from django_semantic_images.pipeline.claims import claim_rows
from django_semantic_images.pipeline.failures import GAVE_UP_PREFIX, TRANSIENT_ATTEMPTS
from django_semantic_images.sweep import sweep
from photos.models import Photo

from .celery_worker import (
    KEY_PREFIX,
    drop_queued_messages,
    on_redis,
    queue_length,
    redis_client,
)
from .conftest import upload

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

QUEUE = f"sweep-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def broker():
    """This process's Celery app on Redis, under the tests' key prefix (and back afterwards)."""
    from example_project.celery import app

    with on_redis(app, QUEUE=QUEUE):
        yield app


def test_rows_waiting_in_a_busy_queue_are_not_sent_again_by_the_backstop(broker, sample_paths, settings):
    """While Celery's queue holds messages, uploads waiting their turn are not queued again when
    PENDING_TIMEOUT passes: a backlog longer than it grew by itself at every sweep. (And on Redis
    with a ``global_keyprefix`` the queue read as empty, so they were sent again once their lease ran out.)"""
    from django_semantic_images.dispatch import queue_depth

    idle = f"{QUEUE}-backlog"
    settings.SEMANTIC_IMAGES = {"QUEUE": idle, "PENDING_TIMEOUT": 1, "LEASE": 1}
    try:
        with transaction.atomic():
            for stem in ("chelsea", "coffee"):
                upload(sample_paths[stem])
        assert queue_length(idle) == 1  # one task for the transaction's rows
        time.sleep(1.5)  # past PENDING_TIMEOUT and the lease: the message still waits in the queue
        assert queue_depth() == 1  # read under the broker's key prefix (the tests' global_keyprefix)
        assert sweep().total == 0
        assert queue_length(idle) == 1
        drop_queued_messages(idle)  # the message is lost: the next sweep sends the rows again
        assert sweep().total == 2
        assert queue_length(idle) == 1
    finally:
        drop_queued_messages(idle)


def test_stale_rows_go_a_few_at_a_time_and_never_ahead_of_waiting_uploads(broker, make_photo, sample_paths, settings):
    """After an encoder or bridge change the sweep marked every stale row of the table at once (one
    transaction locking them all) and queued them all: new uploads then waited behind the whole
    re-embed, hours for a large library. Now a sweep sends at most SWEEP_STALE_ROWS of them, and
    none while the queue holds messages; lost work is sent as before."""
    queue = f"{QUEUE}-stale"
    settings.SEMANTIC_IMAGES = {"QUEUE": queue, "SWEEP_STALE_ROWS": 2}
    stale = [make_photo(sample_paths[stem]) for stem in ("chelsea", "coffee", "rocket")]
    Photo.objects.filter(pk__in=[p.pk for p in stale]).update(
        embedding_status=EmbeddingStatus.EMBEDDED,
        embedding_encoder="old-encoder:1",
        embedding_updated_at=timezone.now(),
    )
    try:
        upload(sample_paths["astronaut"])  # an upload waits in the queue
        assert queue_length(queue) == 1
        assert sweep().total == 0  # the stale rows wait for the queue to drain
        drop_queued_messages(queue)  # the upload's message taken by a worker (its lease still runs)
        assert sweep().total == 2  # two stale rows of three
        assert Photo.objects.filter(pk__in=[p.pk for p in stale], embedding_status=EmbeddingStatus.PENDING).count() == 2
        drop_queued_messages(queue)
        assert sweep().total == 1  # the last stale row
    finally:
        drop_queued_messages(queue)


def test_a_row_that_stops_every_worker_that_takes_it_ends_failed_with_the_reason(broker, sample_paths, settings):
    """A row whose worker dies with it (killed, out of memory, hung) was sent again by every sweep
    once the lease ran out, for ever, with the rows claimed beside it. Now each loss counts a try,
    the row goes in a task of its own, and after TRANSIENT_ATTEMPTS it is failed with the reason."""
    queue = f"{QUEUE}-poison"
    settings.SEMANTIC_IMAGES = {"QUEUE": queue}

    def worker_dies_with(pks: list[int], attempt: int) -> None:
        assert claim_rows(Photo, pks, f"worker-{attempt}") == sorted(pks)
        # it never writes nor renews: its lease runs out, as a killed worker's does
        Photo.objects.filter(pk__in=pks).update(embedding_lease_until=timezone.now() - timedelta(seconds=1))

    try:
        with transaction.atomic():
            poison, neighbour = (upload(sample_paths[stem]) for stem in ("chelsea", "coffee"))
        drop_queued_messages(queue)  # a worker received the task
        worker_dies_with([poison.pk, neighbour.pk], 1)
        assert claim_rows(Photo, [], "a-busy-task", top_up=5) == []  # the sweep's to take back, counting
        assert sweep().queued == {"photos.Photo.embedding": 2}
        assert queue_length(queue) == 2  # each in a task of its own: the poison row takes no other down
        drop_queued_messages(queue)
        assert claim_rows(Photo, [poison.pk, neighbour.pk], "a-task-of-both") == []  # each goes alone
        assert claim_rows(Photo, [], "a-busy-task", top_up=5) == []  # nor in another task's top-up
        assert claim_rows(Photo, [neighbour.pk], "its-own-task", top_up=5) == [neighbour.pk]  # no top-up
        for attempt in range(2, TRANSIENT_ATTEMPTS + 1):
            row = Photo.objects.get(pk=poison.pk)
            assert row.embedding_status == EmbeddingStatus.PENDING
            assert f"(attempt {attempt - 1} of {TRANSIENT_ATTEMPTS})" in row.embedding_error
            worker_dies_with([poison.pk], attempt)
            assert sweep().total == (attempt < TRANSIENT_ATTEMPTS)  # the last: failed, not sent
            drop_queued_messages(queue)
        row = Photo.objects.get(pk=poison.pk)
        assert row.embedding_status == EmbeddingStatus.FAILED, row.embedding_error
        assert row.embedding_error.startswith(GAVE_UP_PREFIX) and "worker" in row.embedding_error
        assert (row.embedding_claimed_by, row.embedding_lease_until) == ("", None)
        assert sweep().total == 0 and queue_length(queue) == 0  # never sent again
    finally:
        drop_queued_messages(queue)


def test_an_embedding_message_carries_no_time_limit_of_the_process_that_sent_it(broker, settings):
    """The worker's own TASK_TIME_LIMIT ends its tasks. Celery (5.7) copies the time limit of a task
    registered in the sending process into every message sent by name, and a worker prefers the
    message's limit to its own: a web process that had imported the tasks (and used its Celery app)
    imposed its limit, read when it imported them, on every worker; the fault test's worker, with a
    limit of 45 s, was given 900 s when the suite had imported the tasks before it."""
    import django_semantic_images.tasks  # noqa: F401  (as the suite's earlier tests, or a site's code, do)
    from django_semantic_images.dispatch import EMBED_TASK, enqueue

    queue = f"{QUEUE}-time-limit"
    settings.SEMANTIC_IMAGES = {"QUEUE": queue}
    try:
        assert broker.tasks[EMBED_TASK].time_limit == 900  # this process's, from the default setting
        assert enqueue(Photo, [1, 2]) == 1
        message = json.loads(redis_client().lpop(f"{KEY_PREFIX}{queue}"))
        assert message["headers"]["task"] == EMBED_TASK
        assert not any(message["headers"]["timelimit"] or ()), message["headers"]["timelimit"]
    finally:
        drop_queued_messages(queue)
