"""In-process embedding (no broker: ``ASYNC`` inline) whose process dies mid-embedding: a real
subprocess, killed with SIGKILL (as the OOM killer or a crash in a native library ends it) while
it encodes a "poison" row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from django_semantic_images import EmbeddingStatus
from django_semantic_images.pipeline.failures import GAVE_UP_PREFIX, TRANSIENT_ATTEMPTS, TRANSIENT_PREFIX, WORKER_LOST
from photos.models import Photo

from .celery_worker import database_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent

#: The in-process run: what a save's commit (``request_embedding``) or the sweep (``sweep``) does
#: without a broker; the process kills itself when it encodes a batch holding a file named "poison".
RUN = textwrap.dedent(
    """
    import os, signal, sys
    import django
    django.setup()
    from django.test import override_settings
    override_settings(SEMANTIC_IMAGES={"ASYNC": "inline", "DEVICE": "cpu", "DECODE_THREADS": 1}).enable()
    from django_semantic_images.pipeline import embedding
    from django_semantic_images.dispatch import request_embedding
    from django_semantic_images.sweep import sweep
    from photos.models import Photo

    encode_and_write = embedding._encode_and_write

    def dies_on_the_poison_row(model, field, encoder, items, *args, **kwargs):
        if any("poison" in item.instance.image.name for item in items):
            os.kill(os.getpid(), signal.SIGKILL)
        return encode_and_write(model, field, encoder, items, *args, **kwargs)

    embedding._encode_and_write = dies_on_the_poison_row
    if sys.argv[1] == "save":
        request_embedding(Photo, [int(pk) for pk in sys.argv[2:]])
    else:
        sweep(pending_timeout=0)
    """
)


@pytest.fixture
def run_in_process(transactional_db):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
        "DATABASE_URL": database_url(connection.settings_dict),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", RUN, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )

    return run


def test_a_row_that_kills_every_in_process_run_is_given_up_after_the_workers_number_of_tries(
    run_in_process, make_photo, sample_paths
):
    """Without a broker a row whose embedding killed the process was not counted (no claim, so no
    lost claim for the sweep to count): every in-process run died on it, for ever, with the rows
    beside it. Now each run counts a try before the work: after TRANSIENT_ATTEMPTS deaths the row
    is failed with the reason, as Celery's workers give it up, and its neighbour is embedded."""
    poison = make_photo(sample_paths["chelsea"], "poison.jpg")
    neighbour = make_photo(sample_paths["coffee"], "neighbour.jpg")

    died = run_in_process("save", str(poison.pk), str(neighbour.pk))
    assert died.returncode == -signal.SIGKILL, died.stderr
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        row = Photo.objects.get(pk=poison.pk)
        assert row.embedding_status == EmbeddingStatus.PENDING
        assert row.embedding_error == f"{TRANSIENT_PREFIX}(attempt {attempt} of {TRANSIENT_ATTEMPTS}) {WORKER_LOST}"
        swept = run_in_process("sweep")
        if attempt < TRANSIENT_ATTEMPTS:
            assert swept.returncode == -signal.SIGKILL, swept.stderr
        else:  # out of tries: failed, not tried again
            assert swept.returncode == 0, swept.stderr
    row = Photo.objects.get(pk=poison.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED
    assert row.embedding_error == f"{GAVE_UP_PREFIX}{TRANSIENT_ATTEMPTS} attempts: {WORKER_LOST}"
    assert Photo.objects.get(pk=neighbour.pk).embedding_status == EmbeddingStatus.EMBEDDED
    assert run_in_process("sweep").returncode == 0  # never tried again
    assert Photo.objects.get(pk=poison.pk).embedding_error == row.embedding_error


@pytest.mark.django_db
def test_an_in_process_run_that_ends_with_an_error_counts_its_try_once(make_photo, sample_paths, monkeypatch):
    """The try counted before the work is taken back when the run ends with an error it can
    report (the process alive): the failure is counted once, as before, not twice."""
    from django.db import OperationalError

    from django_semantic_images.dispatch import request_embedding
    from django_semantic_images.fields import get_embedding_field

    photo = make_photo(sample_paths["chelsea"])
    encoder = get_embedding_field(Photo).get_encoder()

    def database_gone(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(encoder, "encode_pixels", database_gone)
    assert request_embedding(Photo, [photo.pk]) is False
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED
    assert row.embedding_error == (
        f"{TRANSIENT_PREFIX}(attempt 1 of {TRANSIENT_ATTEMPTS}) "
        "OperationalError: server closed the connection unexpectedly"
    )


def test_an_in_process_run_stores_the_reason_of_a_fault_that_may_pass_shortened(make_photo, sample_paths):
    """The reason stored was the fault's whole message (a database's may span lines and quote a
    whole row), not its first line cut as every other reason is."""
    from django_semantic_images.dispatch import request_embedding
    from django_semantic_images.pipeline.failures import REASON_CHARS

    from .conftest import LONG_DATABASE_MESSAGE, embedding_refused_for_a_while

    photo = make_photo(sample_paths["chelsea"])
    with embedding_refused_for_a_while():
        assert request_embedding(Photo, [photo.pk]) is False
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED
    reason = f"OperationalError: {LONG_DATABASE_MESSAGE.splitlines()[0]}"[:REASON_CHARS]
    assert row.embedding_error == f"{TRANSIENT_PREFIX}(attempt 1 of {TRANSIENT_ATTEMPTS}) {reason}", row.embedding_error
