"""The sweep against a real Redis queue that no worker consumes (no worker's own sweep in the way):
what it counts as due while messages wait, and how it reads the queue's depth."""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import transaction

from django_semantic_images.sweep import sweep

from .celery_worker import (
    drop_queued_messages,
    on_redis,
    queue_length,
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
