"""Uploads embedded through Django's tasks framework: the database backend and its real ``db_worker``.

No Celery broker is configured and ``TASKS["default"]`` is ``django_tasks_db``'s database
backend, so a save enqueues a task row after the commit; ``manage.py db_worker --batch``,
started as a subprocess against the test database, runs the queued tasks and exits.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from django_semantic_images import EmbeddingStatus, dispatch
from django_semantic_images.dispatch import CELERY, DJANGO_TASKS, INLINE, engine
from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX
from django_semantic_images.sweep import sweep
from django_semantic_images.task_framework import embed_rows
from photos.models import Photo

from ..celery_worker import REDIS_URL, configured_app, database_url
from ..conftest import statuses, unreadable, upload

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent.parent
QUEUE = "semantic_images"
#: Gentle on a shared 2-core machine: one torch thread, on the CPU even where a GPU is.
WORKER_SETTINGS = {"WORKER_THREADS": 1, "DECODE_THREADS": 2, "DEVICE": "cpu"}
DATABASE_BACKEND = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}}
IMMEDIATE = "django.tasks.backends.immediate.ImmediateBackend"


def immediate_backend() -> dict:
    import django

    path = IMMEDIATE if django.VERSION >= (6, 0) else IMMEDIATE.replace("django.tasks", "django_tasks")
    return {"default": {"BACKEND": path}}


def task_rows() -> list:
    from django_tasks_db.models import DBTaskResult

    return list(DBTaskResult.objects.order_by("enqueued_at"))


def run_db_worker(tmp_path: Path, timeout: float = 300) -> str:
    """``manage.py db_worker --batch``: runs every queued task, then exits; its output."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.tasks_framework.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
        "DATABASE_URL": database_url(connection.settings_dict),
        "SEMANTIC_IMAGES_JSON": json.dumps(WORKER_SETTINGS),
    }
    command = [sys.executable, "manage.py", "db_worker", "--batch", "--no-startup-delay", "--no-reload"]
    command += ["--queue-name", "*", "-v", "3"]
    done = subprocess.run(
        command, cwd=ROOT / "example_project", env=env, capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    (tmp_path / "db_worker.log").write_text(output)
    assert done.returncode == 0, output[-4000:]
    return output


def test_without_a_broker_auto_picks_the_background_task_backend():
    assert engine() == DJANGO_TASKS
    assert dispatch.describe_engine() == "Django's tasks framework (TASKS['default'])"


def test_with_a_broker_auto_picks_celery():
    from example_project.celery import app

    with configured_app(app, broker_url=REDIS_URL):
        assert engine() == CELERY


@pytest.mark.parametrize("backend", ["immediate", "dummy"])
def test_with_a_foreground_task_backend_auto_embeds_inline(backend):
    tasks = immediate_backend()
    tasks["default"]["BACKEND"] = tasks["default"]["BACKEND"].replace(
        "immediate.Immediate", f"{backend}.{backend.title()}"
    )
    with override_settings(TASKS=tasks):
        assert engine() == INLINE


def test_async_chooses_an_engine_explicitly():
    from example_project.celery import app

    with configured_app(app, broker_url=REDIS_URL):
        for mode, expected in [("django_tasks", DJANGO_TASKS), ("inline", INLINE), (False, INLINE)]:
            with override_settings(SEMANTIC_IMAGES={"ASYNC": mode}):
                assert engine() == expected
    for mode in ("celery", True):  # as before: True is Celery, even without a broker
        with override_settings(SEMANTIC_IMAGES={"ASYNC": mode}):
            assert engine() == CELERY


def test_an_unknown_engine_is_a_configuration_error_and_a_failed_check():
    with override_settings(SEMANTIC_IMAGES={"ASYNC": "rq"}):
        with pytest.raises(ImproperlyConfigured, match="ASYNC"):
            engine()
        errors = [m for m in checks.run_checks(tags=["semantic_images"]) if m.id == "semantic_images.E006"]
        assert len(errors) == 1 and "'rq'" in errors[0].msg


def test_django_tasks_without_the_framework_is_a_configuration_error():
    sender = dispatch.unregister_sender(DJANGO_TASKS)
    try:
        assert engine() == INLINE  # "auto": nothing else to choose
        with override_settings(SEMANTIC_IMAGES={"ASYNC": "django_tasks"}):
            with pytest.raises(ImproperlyConfigured, match="tasks framework is not available"):
                engine()
    finally:
        assert sender is not None
        dispatch.register_sender(DJANGO_TASKS, sender)


def test_django_tasks_installed_but_unable_names_its_own_reason():
    """A framework that is installed but cannot take the embedding tasks (its backend refuses their
    queue, say) is refused with that reason, not with "needs Django 6"."""
    sender = dispatch.unregister_sender(DJANGO_TASKS)
    dispatch.engine_unavailable(DJANGO_TASKS, "InvalidTask: Queue 'semantic_images' is not valid for backend")
    try:
        with override_settings(SEMANTIC_IMAGES={"ASYNC": "django_tasks"}):
            with pytest.raises(ImproperlyConfigured) as raised:
                engine()
            assert "Queue 'semantic_images' is not valid" in str(raised.value)
            assert "needs Django 6" not in str(raised.value)
            (error,) = [m for m in checks.run_checks(tags=["semantic_images"]) if m.id == "semantic_images.E006"]
            assert "Queue 'semantic_images' is not valid" in error.msg
    finally:
        assert sender is not None
        dispatch.register_sender(DJANGO_TASKS, sender)


def test_an_upload_is_enqueued_after_commit_and_the_db_worker_embeds_it(sample_paths, tmp_path):
    with transaction.atomic():
        cat = upload(sample_paths["chelsea"], title="a cat")
        coffee = upload(sample_paths["coffee"])
        assert task_rows() == []  # nothing is sent before the commit
    rocket = upload(sample_paths["rocket"])  # its own transaction: its own task
    rows = task_rows()
    assert [(r.task_path, r.queue_name, r.status) for r in rows] == [
        ("django_semantic_images.task_framework.embed_rows", QUEUE, "READY")
    ] * 2
    assert rows[0].args_kwargs["args"] == ["photos.Photo", [str(cat.pk), str(coffee.pk)]]
    assert rows[1].args_kwargs["args"] == ["photos.Photo", [str(rocket.pk)]]
    photos = [cat, coffee, rocket]
    assert set(statuses(photos).values()) == {EmbeddingStatus.PENDING}  # nothing embedded in this process

    run_db_worker(tmp_path)

    assert statuses(photos) == {p.pk: EmbeddingStatus.EMBEDDED for p in photos}
    done = task_rows()
    assert {r.status for r in done} == {"SUCCESSFUL"}
    # the first task topped its batch up with the third row; the second found it done
    assert sorted(done[0].return_value["embedded"]) == sorted(str(p.pk) for p in photos)
    assert done[1].return_value == {"embedded": [], "skipped": [str(rocket.pk)], "failed": {}}
    assert list(Photo.objects.semantic_search("a cat")[:1])[0].pk == cat.pk
    row = Photo.objects.get(pk=cat.pk)
    assert (row.embedding_claimed_by, row.embedding_lease_until) == ("", None)  # the claim was released


def test_a_corrupt_image_fails_with_its_reason_and_the_rest_of_the_batch_is_embedded(sample_paths, tmp_path):
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")  # 100 megapixels in a few kilobytes
    with transaction.atomic():
        good1 = upload(sample_paths["chelsea"])
        truncated = upload(sample_paths["rocket"].read_bytes()[:3000], "truncated.jpg")
        text = upload(b"Dear editor, this is not a picture.\n", "letter.jpg")
        bombed = upload(bomb.getvalue(), "bomb.png")
        good2 = upload(sample_paths["coffee"])
    assert len(task_rows()) == 1

    run_db_worker(tmp_path)

    assert statuses([good1, good2]) == {good1.pk: EmbeddingStatus.EMBEDDED, good2.pk: EmbeddingStatus.EMBEDDED}
    for bad in (truncated, text, bombed):
        row = Photo.objects.get(pk=bad.pk)
        assert row.embedding_status == EmbeddingStatus.FAILED, bad
        assert row.embedding_error and not row.embedding_error.startswith(TRANSIENT_PREFIX)
    assert "pixels" in Photo.objects.get(pk=bombed.pk).embedding_error
    (result,) = task_rows()
    assert result.status == "SUCCESSFUL"
    assert set(result.return_value["failed"]) == {str(truncated.pk), str(text.pk), str(bombed.pk)}
    assert sweep(pending_timeout=0).total == 0  # a bad image is never sent again


def test_a_refused_enqueue_leaves_the_row_pending_unsent_and_the_sweep_sends_it(sample_paths, tmp_path):
    # A backend that takes no task of the embedding queue (nor the default one): enqueue raises.
    with override_settings(TASKS={"default": {**DATABASE_BACKEND["default"], "QUEUES": ["emails"]}}):
        assert engine() == DJANGO_TASKS
        photo = upload(sample_paths["chelsea"])  # the save itself succeeds
        assert task_rows() == []
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.PENDING and row.embedding_lease_until is None  # not sent
    report = sweep()  # the backend takes it now: the sweep sends it at once (no lease = never sent)
    assert report.queued == {"photos.Photo.embedding": 1}
    assert [r.args_kwargs["args"] for r in task_rows()] == [["photos.Photo", [str(photo.pk)]]]

    run_db_worker(tmp_path)

    assert statuses([photo]) == {photo.pk: EmbeddingStatus.EMBEDDED}


def test_a_storage_fault_marks_the_rows_for_the_sweep(make_photo, sample_paths):
    # Run the task function in this process through the immediate backend: no retries in the framework.
    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "rocket")]
    paths = [Path(photo.image.path) for photo in photos]
    with unreadable(paths), override_settings(TASKS=immediate_backend()):  # every file: the storage looks gone
        result = embed_rows.using(backend="default").enqueue("photos.Photo", [str(p.pk) for p in photos])
        assert result.status == "FAILED"
    for photo in photos:
        row = Photo.objects.get(pk=photo.pk)
        assert row.embedding_status == EmbeddingStatus.FAILED and row.embedding_error.startswith(TRANSIENT_PREFIX)
        assert row.embedding_claimed_by == ""
    assert sweep().total == 0  # the framework has no retries: the sweep waits out the rows' backoff first
    Photo.objects.filter(pk__in=[p.pk for p in photos]).update(embedding_lease_until=timezone.now())  # later
    assert sweep().queued == {"photos.Photo.embedding": 2}  # sent again through the tasks framework
    assert len(task_rows()) == 1


def test_a_fault_that_may_pass_stores_its_reason_shortened(make_photo, sample_paths):
    """The reason stored was the fault's whole message (a database's may span lines and quote a
    whole row), not its first line cut as every other reason is."""
    from django_semantic_images.pipeline.failures import REASON_CHARS

    from ..conftest import LONG_DATABASE_MESSAGE, embedding_refused_for_a_while

    photo = make_photo(sample_paths["chelsea"])
    with embedding_refused_for_a_while(), override_settings(TASKS=immediate_backend()):
        result = embed_rows.using(backend="default").enqueue("photos.Photo", [str(photo.pk)])
        assert result.status == "FAILED"
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.FAILED
    prefix = f"{TRANSIENT_PREFIX}(attempt 1 of 5) "
    assert row.embedding_error.startswith(prefix), row.embedding_error
    reason = row.embedding_error.removeprefix(prefix)
    assert reason == f"OperationalError: {LONG_DATABASE_MESSAGE.splitlines()[0]}"[:REASON_CHARS], reason[-300:]


def test_reindex_queue_sends_through_the_tasks_framework(make_photo, sample_paths):
    from ..conftest import run_command

    photos = [make_photo(sample_paths[s]) for s in ("chelsea", "coffee", "rocket")]
    out = run_command("semantic_images_reindex", "--queue", "--batch-size", "2", "--no-progress")
    assert "3 rows sent as 2 tasks to Django's tasks framework" in out
    assert [r.args_kwargs["args"][1] for r in task_rows()] == [
        [str(photos[0].pk), str(photos[1].pk)],
        [str(photos[2].pk)],
    ]


def test_the_first_task_in_a_worker_process_sizes_torch_threads(make_photo, sample_paths):
    import torch

    from django_semantic_images import worker

    photo = make_photo(sample_paths["coffee"])
    context = SimpleNamespace(task_result=SimpleNamespace(id="test"))
    before, saved = torch.get_num_threads(), worker.state["threads"]
    worker.state["threads"] = None
    try:
        with override_settings(SEMANTIC_IMAGES={"WORKER_THREADS": 1}):
            result = embed_rows.func(context, "photos.Photo", [str(photo.pk)])
        assert result["embedded"] == [str(photo.pk)]
        assert worker.state["threads"] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        worker.state["threads"] = saved


def start_site(tmp_path: Path, queues: list[str]) -> list[str]:
    """Start a site whose task backend lists ``queues`` (a process of its own: the tasks are declared
    at startup); its engine, the tasks' queues and its system check messages, one a line."""
    tasks = {"default": {**DATABASE_BACKEND["default"], "QUEUES": queues}}
    (tmp_path / "queues_settings.py").write_text(f"from tests.tasks_framework.settings import *\nTASKS = {tasks!r}\n")
    script = (
        "import django; django.setup()\n"
        "from django.core.checks import run_checks\n"
        "from django_semantic_images.dispatch import engine\n"
        "print(engine())\n"
        "for m in run_checks(tags=['semantic_images']):\n"
        "    print(f'{m.id}: {m.msg}')\n"
        "from django_semantic_images.task_framework import embed_rows, sweep\n"
        "print(embed_rows.queue_name, sweep.queue_name)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "queues_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "example_project")]),
        "DATABASE_URL": database_url(connection.settings_dict),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    return (done.stdout + done.stderr).strip().splitlines()


def test_a_backend_that_lists_only_the_embedding_queue_runs_the_tasks(tmp_path):
    lines = start_site(tmp_path, [QUEUE])  # what docs/workers.md describes
    assert lines[0] == DJANGO_TASKS, lines
    assert lines[-1] == f"{QUEUE} {QUEUE}", lines
    assert not [line for line in lines if line.startswith("semantic_images.")], lines  # no check message


def test_a_backend_that_takes_neither_queue_is_a_failed_check(tmp_path):
    lines = start_site(tmp_path, ["emails"])
    assert lines[0] == INLINE, lines  # auto cannot use the framework: embedding falls back to in-process
    assert any(line.startswith("semantic_images.W005:") and "is not valid" in line for line in lines), lines
