"""``semantic_images_reindex`` in-process (no broker), against real PostgreSQL + pgvector and the real models."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from django_semantic_images import EmbeddingStatus
from django_semantic_images.encoders import get_encoder
from django_semantic_images.management.commands.semantic_images_reindex import Command
from django_semantic_images.pipeline import embed_instances
from photos.models import Photo
from tests.conftest import Terminal, ctrl_c_as_in_a_terminal, press_ctrl_c
from tests.conftest import run_command as run
from tests.conftest import status_of as status

pytestmark = pytest.mark.django_db(transaction=True)


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
    # Each row once: a proxy of Photo (multifield.PhotoProxy) is not a second table to embed again.
    assert out.count(" embedded, ") == 1 and "PhotoProxy" not in out
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


def test_bad_arguments_are_clear_errors(db):
    with pytest.raises(CommandError, match="No Celery broker"):
        run("semantic_images_reindex", "--queue")
    with pytest.raises(CommandError, match="Unknown model"):
        run("semantic_images_reindex", "--model", "photos.Nope")
    with pytest.raises(CommandError, match="at least 1"):
        run("semantic_images_reindex", "--batch-size", "0")
    with pytest.raises(CommandError, match="No ImageEmbeddingField named 'nope'"):
        run("semantic_images_reindex", "--field", "nope")


def test_a_settings_typo_is_the_system_check_error_not_a_traceback_from_the_options(settings):
    """The --batch-size help read SEMANTIC_IMAGES as the parser was built, before the checks: an unknown key
    ended the command (and its --help) with ImproperlyConfigured's traceback instead of the check's error."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SERACH": 100}
    with pytest.raises(SystemCheckError, match="HNSW_EF_SERACH"):
        call_command("semantic_images_reindex", skip_checks=False, stdout=io.StringIO(), stderr=io.StringIO())
    settings.SEMANTIC_IMAGES = {"BATCH_SIZE": 8}
    assert "BATCH_SIZE'] = 8" in Command().create_parser("manage.py", "semantic_images_reindex").format_help()


def test_a_settings_typo_is_the_system_check_error_in_a_fresh_process_too(tmp_path):
    """The command imported the Celery tasks module, which reads TASK_TIME_LIMIT as it is imported:
    in a process that had not imported it yet (every real run), a SEMANTIC_IMAGES typo ended the
    command, and its --help, with ImproperlyConfigured's traceback before any check ran."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "typo_settings.py").write_text(
        'from tests.settings import *\nSEMANTIC_IMAGES = {"HNSW_EF_SERACH": 100}\n'
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root), str(root / "example_project")]),
        "DATABASE_URL": "postgresql://localhost/unused",  # the checks fail before any connection
    }
    manage = [sys.executable, str(root / "example_project" / "manage.py"), "semantic_images_reindex"]
    for extra in ([], ["--help"]):
        done = subprocess.run(
            [*manage, *extra, "--settings", "typo_settings"], env=env, cwd=root, capture_output=True, text=True
        )
        assert "Traceback" not in done.stderr, (extra, done.stderr)
        if extra:
            assert done.returncode == 0 and "--batch-size" in done.stdout, done.stdout
        else:
            assert done.returncode == 1 and "(semantic_images.E012)" in done.stderr, done.stderr
            assert "HNSW_EF_SERACH" in done.stderr


def test_the_sweep_through_an_unreachable_queue_fails_the_command(make_photo, sample_paths):
    """--due --queue printed "1 not sent (queue unreachable)" and exited 0, so a job running it never
    failed (--queue alone was a CommandError)."""
    from example_project.celery import app
    from tests.celery_worker import configured_app

    unsent = make_photo(sample_paths["coffee"])
    Photo.objects.filter(pk=unsent.pk).update(embedding_lease_until=None)  # the broker was down at upload
    with configured_app(app, broker_url="redis://127.0.0.1:1/0"), pytest.raises(CommandError, match="1 not sent"):
        run("semantic_images_reindex", "--due", "--queue")
    assert status(unsent) == EmbeddingStatus.PENDING


def test_an_empty_table_says_so_and_verbosity_0_is_quiet(db):
    said = "photos.Photo.embedding: nothing to do.\n"
    assert run("semantic_images_reindex", "--model", "photos.Photo", "--no-progress") == said
    assert run("semantic_images_reindex", "--no-progress", "--verbosity", "0") == ""  # printed it all the same


@pytest.mark.parametrize("selection", ["--stale", "--force", "--missing"])
def test_an_unreadable_bridge_is_a_command_error_naming_it(rows, tmp_path, settings, selection):
    """A bridge file cut short (system check E016): the command stops before any row, with the
    reason and what to do, not a traceback; no row changes."""
    import numpy as np

    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge

    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path)}
    rng = np.random.default_rng(0)
    path = BridgeStore(tmp_path).install(LearnedBridge(rng.normal(size=(1280, 384)), np.zeros(384)))
    path.write_bytes(path.read_bytes()[:300])
    before = list(Photo.objects.order_by("pk").values_list("embedding_status", "embedding_encoder"))
    with pytest.raises(CommandError, match=f"photos.Photo.embedding: .*{path.name}.*semantic_images_train_bridge"):
        run("semantic_images_reindex", selection)
    assert list(Photo.objects.order_by("pk").values_list("embedding_status", "embedding_encoder")) == before


def test_a_row_failed_for_good_is_not_stale_after_an_encoder_change(rows):
    """An encoder change (a new bridge, recipe, text model) leaves the identity of every row behind,
    a row whose file could not be read too; but that row holds no vectors from the old encoder:
    `--stale` must not read its file again, nor the status and W001 count it as stale."""
    from django_semantic_images.checks import check_database

    Photo.objects.update(embedding_encoder="old-encoder:1")  # what a change of encoder leaves
    broken = Photo.objects.get(pk=rows["broken"].pk)
    assert broken.embedding_status == EmbeddingStatus.FAILED and broken.embedding_visual is None
    unreadable = Photo.objects.filter(embedding_status=EmbeddingStatus.FAILED, embedding_visual__isnull=True)
    assert broken in unreadable
    stale = Photo.objects.count() - unreadable.count()
    report = json.loads(run("semantic_images_status", "--json"))["fields"][0]
    assert report["other_encoder"] == stale
    (warning,) = [m for m in check_database(databases=["default"]) if m.id == "semantic_images.W001"]
    out = run("semantic_images_reindex", "--stale", "--no-progress")
    assert f"{stale} embedded, 0 unchanged, 0 failed" in out, out
    assert Photo.objects.get(pk=broken.pk).embedding_updated_at == broken.embedding_updated_at
    assert not [m for m in check_database(databases=["default"]) if m.id == "semantic_images.W001"]


def test_a_stop_on_a_storage_fault_counts_the_rows_it_wrote_and_a_rerun_goes_on(make_photo, sample_paths):
    """Rows are written batch by batch: a fault in a chunk's second batch left two written, but the
    message counted only whole chunks ("stopped after 0 of 4 rows")."""
    from pathlib import Path

    first, second = make_photo(sample_paths["coffee"]), make_photo(sample_paths["rocket"])
    gone = [make_photo(sample_paths["horse"]), make_photo(sample_paths["chelsea"])]
    paths = [Path(photo.image.path) for photo in gone]
    for path in paths:
        path.unlink()
        path.mkdir()  # the storage answers "Is a directory" for every file of the batch: it looks gone
    try:
        with pytest.raises(CommandError, match=r"stopped after 2 of 4 rows: .*Run the command again"):
            run("semantic_images_reindex", "--model", "photos.Photo", "--batch-size", "2", "--no-progress")
        assert status(first) == status(second) == EmbeddingStatus.EMBEDDED
        # With --force a new run recomputes the finished rows too: the message said they were skipped.
        with pytest.raises(CommandError) as forced:
            run("semantic_images_reindex", "--force", "--batch-size", "2", "--no-progress")
        assert "stopped after 2 of 4 rows" in str(forced.value) and "finished rows are skipped" not in str(forced.value)
        assert "with --force it recomputes every row again" in str(forced.value)
    finally:
        for path in paths:
            path.rmdir()
    for path, stem in zip(paths, ("horse", "chelsea"), strict=True):
        path.write_bytes(sample_paths[stem].read_bytes())
    out = run("semantic_images_reindex", "--model", "photos.Photo", "--batch-size", "2", "--no-progress")
    assert "2 embedded, 2 unchanged, 0 failed" in out


def test_one_unreadable_file_in_a_batch_of_one_fails_its_row_and_the_run_goes_on(make_photo, sample_paths):
    """With ``--batch-size 1`` one file the storage could not read (EISDIR) stopped the run as if the
    storage were gone ("stopped after 1 of 3 rows"); among others it fails its row alone."""
    from pathlib import Path

    first, unreadable, last = (make_photo(sample_paths[s]) for s in ("coffee", "horse", "rocket"))
    path = Path(unreadable.image.path)
    path.unlink()
    path.mkdir()
    try:
        out = run("semantic_images_reindex", "--model", "photos.Photo", "--batch-size", "1", "--no-progress")
    finally:
        path.rmdir()
    assert "2 embedded, 0 unchanged, 1 failed" in out, out
    assert f"pk={unreadable.pk}: Temporary failure, will be retried: (attempt 1 of 5) Storage error" in out, out
    assert status(first) == status(last) == EmbeddingStatus.EMBEDDED
    assert status(unreadable) == EmbeddingStatus.FAILED


def test_ctrl_c_is_a_command_error_counting_the_rows_written_and_a_rerun_goes_on(rows, monkeypatch):
    """Ctrl-C ended the run with KeyboardInterrupt's traceback and no word of what was done."""
    from django_semantic_images.management.commands import semantic_images_reindex as command

    real = command.embed_pks

    def embed_then_ctrl_c(*args, **kwargs):
        report = real(*args, **kwargs)
        press_ctrl_c()  # once the first chunk is written
        return report

    monkeypatch.setattr(command, "CHUNK_BATCHES", 1)
    monkeypatch.setattr(command, "embed_pks", embed_then_ctrl_c)
    with (
        ctrl_c_as_in_a_terminal(),
        pytest.raises(CommandError, match=r"interrupted after 1 of 4 rows\. Run the command again") as stop,
    ):
        run("semantic_images_reindex", "--batch-size", "1", "--no-progress")
    assert stop.value.returncode == 130  # the shell's code for a command ended by Ctrl-C
    assert status(rows["pending"]) == EmbeddingStatus.PENDING
    monkeypatch.setattr(command, "embed_pks", real)
    out = run("semantic_images_reindex", "--batch-size", "1", "--no-progress")
    assert "2 embedded, 1 unchanged, 1 failed" in out


def test_ctrl_c_while_queueing_stale_rows_leaves_the_unsent_ones_to_the_sweep(make_photo, sample_paths, monkeypatch):
    """--stale --queue marks each chunk sent before sending it: Ctrl-C there was a traceback, and the
    chunk kept its lease though no task was sent for it (the sweep waited for the lease to run out)."""
    from django_semantic_images.management.commands import semantic_images_reindex as command
    from example_project.celery import app
    from tests.celery_worker import on_redis

    photos = [make_photo(sample_paths[name]) for name in ("coffee", "rocket")]
    embed_instances(photos)
    Photo.objects.update(embedding_encoder="old-encoder:1")
    real, calls = command.send, []

    def ctrl_c_before_the_second_chunk(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            press_ctrl_c()
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "CHUNK_BATCHES", 1)
    monkeypatch.setattr(command, "send", ctrl_c_before_the_second_chunk)
    with (
        ctrl_c_as_in_a_terminal(),
        on_redis(app),
        pytest.raises(CommandError, match=r"interrupted after 1 of 2 rows were sent") as stop,
    ):
        run("semantic_images_reindex", "--stale", "--queue", "--batch-size", "1", "--no-progress")
    assert stop.value.returncode == 130
    leases = dict(Photo.objects.values_list("pk", "embedding_lease_until"))
    assert leases[photos[0].pk] is not None and leases[photos[1].pk] is None  # the second: unsent, the sweep's


def test_the_progress_bar_goes_to_the_commands_stderr(rows):
    """The bar was written to sys.stderr, not to the command's stderr: call_command(stderr=...) did not
    get it, and it went to the terminal of a script that had redirected the command's output."""
    err = Terminal()
    call_command("semantic_images_reindex", "--missing", "--batch-size", "1", stdout=io.StringIO(), stderr=err)
    assert "photos.Photo.embedding: 100%" in err.getvalue() and "2/2" in err.getvalue()
    assert "\x1b[31" not in err.getvalue()  # not coloured as an error


def test_due_queue_sweeps_only_the_field_named(db):
    """--due --queue handed the sweep the model alone: --field was ignored, and every field's due rows
    were marked sent and queued."""
    from example_project.celery import app
    from tests.celery_worker import configured_app
    from tests.multifield.models import TwoImagePhoto

    TwoImagePhoto.objects.bulk_create([TwoImagePhoto(thumbnail="two-image/a.jpg", picture="two-image/b.jpg")])
    two = ("--model", "multifield.TwoImagePhoto", "--field", "thumbnail_embedding")
    with configured_app(app, broker_url="redis://127.0.0.1:1/0"), pytest.raises(CommandError) as refused:
        run("semantic_images_reindex", "--due", "--queue", *two)
    assert "multifield.TwoImagePhoto.thumbnail_embedding: 1 not sent" in str(refused.value)
    assert "multifield.TwoImagePhoto.embedding:" not in str(refused.value)


def test_ctrl_c_while_stale_rows_are_marked_sent_leaves_them_to_the_sweep(make_photo, sample_paths, monkeypatch):
    """Ctrl-C right after a chunk was marked sent, before its tasks went: a traceback, and the rows
    kept the lease of work never sent (the sweep waited for it to run out)."""
    from django_semantic_images.management.commands import semantic_images_reindex as command
    from example_project.celery import app
    from tests.celery_worker import on_redis

    photo = make_photo(sample_paths["coffee"])
    embed_instances([photo])
    Photo.objects.update(embedding_encoder="old-encoder:1")
    real = command.mark_pending

    def mark_then_ctrl_c(*args, **kwargs):
        marked = real(*args, **kwargs)
        press_ctrl_c()
        return marked

    monkeypatch.setattr(command, "mark_pending", mark_then_ctrl_c)
    with (
        ctrl_c_as_in_a_terminal(),
        on_redis(app),
        pytest.raises(CommandError, match=r"interrupted after 0 of 1 rows were sent"),
    ):
        run("semantic_images_reindex", "--stale", "--queue", "--no-progress")
    assert Photo.objects.get(pk=photo.pk).embedding_lease_until is None


def test_queue_says_why_there_is_no_queue(db, settings, monkeypatch):
    """--queue said "No Celery broker is configured ..., nor a background task backend (TASKS)" also
    where ASYNC was set to 'inline' on purpose (with a broker), or where the site has a task backend
    that cannot take the embedding tasks (W005): the operator was sent looking for what was there."""
    from django_semantic_images import dispatch

    settings.SEMANTIC_IMAGES = {"ASYNC": "inline"}
    with pytest.raises(CommandError, match=r"ASYNC'\] is 'inline'"):
        run("semantic_images_reindex", "--queue")
    settings.SEMANTIC_IMAGES = {}
    monkeypatch.setitem(dispatch._unavailable, dispatch.DJANGO_TASKS, "InvalidTask: Queue 'default' is not valid")
    with pytest.raises(CommandError, match=r"No Celery broker .*tasks framework cannot run .*'default' is not valid"):
        run("semantic_images_reindex", "--queue")
