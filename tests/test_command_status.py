"""``semantic_images_status``: counts, the encoder of each field, the oldest pending row, index sizes."""

from __future__ import annotations

import json

import pytest

from django_semantic_images.encoders import get_encoder
from tests.conftest import run_command as run

pytestmark = pytest.mark.django_db(transaction=True)


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


def test_a_row_never_sent_is_the_oldest_pending(rows):
    """``bulk_create()`` sends no signal: its rows are pending with no "pending since" (NULL),
    which PostgreSQL sorted after every date, so the oldest row shown was a later one."""
    from photos.models import Photo

    (loaded,) = Photo.objects.bulk_create([Photo(image="photos/imported.jpg")])
    info = json.loads(run("semantic_images_status", "--json"))["fields"][0]
    assert info["oldest_pending"] == {"pk": str(loaded.pk), "since": None, "age_seconds": None}
    assert f"oldest pending: pk={loaded.pk}, since None (unknown time)" in run("semantic_images_status")


def test_due_counts_what_the_sweep_would_send(make_photo, sample_paths):
    """With a broker, a row whose upload could not be sent (no lease) is due: the sweep sends it.
    The status counted due rows as in-process mode would, and said 0."""
    from django_semantic_images.sweep import sweep
    from example_project.celery import app
    from photos.models import Photo
    from tests.celery_worker import configured_app

    unsent = make_photo(sample_paths["coffee"])
    Photo.objects.filter(pk=unsent.pk).update(embedding_lease_until=None)  # the broker was down at upload
    with configured_app(app, broker_url="redis://127.0.0.1:1/0"):  # a broker nobody answers on
        info = json.loads(run("semantic_images_status", "--json"))["fields"][0]
        report = sweep()
    assert report.unsent == {"photos.Photo.embedding": 1}  # the sweep tried to send it
    assert info["due"] == 1


def test_status_names_an_unreadable_bridge_instead_of_failing(rows, tmp_path, settings):
    """The command one runs to see why nothing gets embedded: with a bridge file cut short it says
    so (and what it cannot count without the encoder's identity) rather than end in a traceback."""
    import numpy as np

    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge

    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path)}
    rng = np.random.default_rng(0)
    path = BridgeStore(tmp_path).install(LearnedBridge(rng.normal(size=(1280, 384)), np.zeros(384)))
    path.write_bytes(path.read_bytes()[:300])
    info = json.loads(run("semantic_images_status", "--json"))["fields"][0]
    assert info["encoder"] is None and path.name in info["encoder_error"]
    from photos.models import Photo

    counts = {s: Photo.objects.filter(embedding_status=s).count() for s in ("embedded", "pending", "failed")}
    assert info["counts"] == counts and info["total"] == Photo.objects.count()
    assert info["other_encoder"] is None and info["due"] is None
    text = run("semantic_images_status")
    assert f"the encoder cannot embed: The learned bridge installed in {tmp_path}" in text
    assert f"{info['total']} rows: {counts['embedded']} embedded" in text
    assert "unknown from another encoder; unknown due for the sweep" in text


def test_status_counts_the_rows_a_default_manager_hides(draft_model):
    """The sweep embeds rows that the model's default manager hides (the unpublished ones); the
    status counted through that manager, so it showed none of them, pending or due."""
    from django_semantic_images import EmbeddingStatus
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.management.commands.semantic_images_status import field_status

    Draft = draft_model
    Draft._base_manager.bulk_create([Draft(image="drafts/a.jpg"), Draft(image="drafts/b.jpg", published=True)])
    status = field_status(Draft, get_embedding_field(Draft), {"unsent": True, "queue_empty": True})
    assert status["total"] == 2 and status["counts"][EmbeddingStatus.PENDING] == 2
    assert status["due"] == 2 and status["oldest_pending"] is not None


@pytest.fixture
def database_down():
    """The default database's server gone (nothing listens on its port), for one test."""
    from django.db import connections

    connection = connections["default"]
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=1)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.mark.parametrize(
    "command",
    [
        ("semantic_images_status",),
        ("semantic_images_status", "--json"),
        ("semantic_images_reindex", "--no-progress"),
        ("semantic_images_duplicates", "--model", "photos.Photo"),
        ("semantic_search", "a cat", "--model", "photos.Photo"),
        ("semantic_images_train_bridge", "--model", "photos.Photo", "--dry-run"),
    ],
)
def test_a_database_that_cannot_be_reached_is_a_command_error(database_down, command):
    """The commands one runs to see what is wrong ended in psycopg's traceback."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=r"^The database failed: .*127\.0\.0\.1.*Is the server running"):
        run(*command)


def test_ctrl_c_in_any_command_is_a_command_error(rows, monkeypatch):
    """Ctrl-C in a long query of status (or duplicates, search) ended in KeyboardInterrupt's traceback."""
    from django.core.management.base import CommandError

    from django_semantic_images.management.commands import semantic_images_status as command
    from tests.conftest import ctrl_c_as_in_a_terminal, press_ctrl_c

    real = command.shared_buffers

    def ctrl_c_meanwhile(*args, **kwargs):
        press_ctrl_c()
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "shared_buffers", ctrl_c_meanwhile)
    with ctrl_c_as_in_a_terminal(), pytest.raises(CommandError, match="^Interrupted") as stop:
        run("semantic_images_status")
    assert stop.value.returncode == 130


def test_a_field_declared_without_indexes_is_not_said_to_miss_them(db):
    """A field with index=False was reported as "HNSW indexes: semantic missing, visual missing", as
    if they had been dropped."""
    text = run("semantic_images_status", "--model", "multifield.TwoImagePhoto")
    assert "missing" not in text
    assert text.count("  no HNSW indexes (index=False);") == 2, text
    data = json.loads(run("semantic_images_status", "--model", "multifield.TwoImagePhoto", "--json"))
    assert [info["indexed"] for info in data["fields"]] == [False, False]
    photo = json.loads(run("semantic_images_status", "--model", "photos.Photo", "--json"))["fields"][0]
    assert photo["indexed"] is True


@pytest.mark.django_db
@pytest.mark.parametrize(
    "command",
    [
        ("semantic_images_status",),
        ("semantic_images_reindex", "--no-progress"),
        ("semantic_search", "a cat", "--model", "photos.Photo"),
    ],
)
def test_a_database_not_migrated_yet_is_a_command_error(command):
    """Run before `migrate` (a new deploy), the commands ended in ProgrammingError's traceback
    ('relation "photos_photo" does not exist') instead of saying what to do."""
    from django.core.management.base import CommandError
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("ALTER TABLE photos_photo RENAME TO photos_photo_away")
    with pytest.raises(CommandError, match=r'^The database has no table "photos_photo".*manage\.py migrate'):
        run(*command)


@pytest.mark.django_db
def test_a_column_not_migrated_yet_is_a_command_error():
    """A new release's migration not applied yet (a column missing) ended in ProgrammingError's
    traceback ('column ... does not exist') instead of saying what to do."""
    from django.core.management.base import CommandError
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("ALTER TABLE photos_photo RENAME COLUMN embedding_status TO embedding_status_away")
    with pytest.raises(CommandError, match=r"^The database has no column .*embedding_status.*manage\.py migrate"):
        run("semantic_images_status")
