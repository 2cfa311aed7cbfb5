"""Shared fixtures: real PostgreSQL + pgvector (embedded server), the real models, sample photos."""

from __future__ import annotations

import io
import os
import signal
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadhandler import FileUploadHandler
from django.core.management import call_command
from PIL import Image

from photos.samples import sample_photo_paths


@pytest.fixture(autouse=True)
def fresh_calibration():
    """Each test draws its own reference sample: a cached one holds an earlier test's rows."""
    from django_semantic_images import calibration

    calibration.reset()
    yield
    calibration.reset()


@pytest.fixture(scope="session")
def sample_paths() -> dict[str, Path]:
    """Sample photos by stem: ``chelsea`` (a cat), ``coffee``, ``rocket``, ``astronaut`` ..."""
    paths = {p.stem: p for p in sample_photo_paths()}
    assert {"chelsea", "coffee", "rocket", "astronaut"} <= set(paths), paths
    return paths


def upload(source: Path | bytes, name: str | None = None, **fields):
    """Save a Photo as a site would (the on-commit hook sends the work)."""
    from photos.models import Photo

    data = source.read_bytes() if isinstance(source, Path) else source
    photo = Photo(**fields)
    photo.image.save(name or (source.name if isinstance(source, Path) else "upload.jpg"), ContentFile(data), save=False)
    photo.save()
    return photo


def statuses(photos: list) -> dict[int, str]:
    """Each photo's embedding status, read from the database."""
    from photos.models import Photo

    return dict(Photo.objects.filter(pk__in=[p.pk for p in photos]).values_list("pk", "embedding_status"))


@contextmanager
def unreadable(paths: list[Path]) -> Iterator[None]:
    """The files at ``paths`` read with an I/O error (EISDIR: each made a folder) inside the block,
    a fault that may pass (not "no such file"); put back as they were after it."""
    saved = [path.read_bytes() for path in paths]
    for path in paths:
        path.unlink()
        path.mkdir()
    try:
        yield
    finally:
        for path, data in zip(paths, saved, strict=True):
            path.rmdir()
            path.write_bytes(data)


def dds_pillow_cannot_decode() -> bytes:
    """A DDS file with pixel format flags Pillow does not know: its plugin raises NotImplementedError."""
    header = struct.pack("<7I", 124, 0x100F, 48, 64, 0xC0, 0, 0) + bytes(44)
    pixel_format = struct.pack("<2I", 32, 0x40000000) + bytes(24)
    return b"DDS " + header + pixel_format + struct.pack("<I", 0x1000) + bytes(16) + bytes(64)


def image_bytes(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A randomly initialised two-layer BERT with a small WordPiece vocabulary, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = ["a", "cup", "of", "coffee", "red", "bicycle", "cat", "wall", "the", "in", "sun", "query", "passage"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", *words, *sorted({c for w in words for c in w})]
    # transformers 5 ignores vocab_file here (every word became [UNK]): the vocabulary as a dict.
    BertTokenizerFast(vocab={token: i for i, token in enumerate(dict.fromkeys(vocab))}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A randomly initialised CLIP with a 40-word tokenizer, saved like a hub model."""
    import json

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny-clip")
    words = ["a", "photo", "of", "cat", "dog", "coffee", "cup", "rocket", "red", "bicycle"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w + "</w>", len(vocab))
    for ch in sorted({c for w in words for c in w}):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "bos_token_id": 0,
            "eos_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture
def make_photo(db):
    """Create a Photo from a path, a PIL image or raw bytes, without embedding it yet."""
    from django_semantic_images.signals import embedding_deferred
    from photos.models import Photo

    def make(source, name: str | None = None, **fields) -> Photo:
        if isinstance(source, Path):
            data, name = source.read_bytes(), name or source.name
        elif isinstance(source, Image.Image):
            data, name = image_bytes(source), name or "image.jpg"
        else:
            data, name = source, name or "upload.jpg"
        photo = Photo(**fields)
        photo.image.save(name, ContentFile(data), save=False)
        with embedding_deferred():
            photo.save()
        return photo

    return make


@pytest.fixture
def sample_photos(make_photo, sample_paths):
    """Every sample photo as an embedded Photo, by stem, in indexes rebuilt from the live rows
    (``without_dead_index_entries``): the rows of every earlier test that used this fixture, rolled
    back, have the same vectors, and a search through the HNSW graph then came back empty
    (``similar_to(...).first()`` was None in a full run)."""
    from django_semantic_images.pipeline import embed_instances
    from photos.models import Photo

    without_dead_index_entries(Photo)
    photos = {stem: make_photo(path) for stem, path in sample_paths.items()}
    report = embed_instances(list(photos.values()))
    assert not report.failed, report.failed
    for photo in photos.values():
        photo.refresh_from_db()
    return photos


@pytest.fixture
def random_rows(db, make_photo, sample_paths) -> np.ndarray:
    """2,000 embedded rows with random unit vectors, every tenth published, in a freshly
    built HNSW index; returns their semantic vectors (row i has ``random_rows[i]``)."""
    from django.db import connection

    from django_semantic_images.encoders.base import l2_normalize
    from photos.models import Photo

    template = make_photo(sample_paths["coffee"], published=False)
    rng = np.random.default_rng(0)
    sem = l2_normalize(rng.normal(size=(2000, 384)).astype(np.float32))
    vis = l2_normalize(rng.normal(size=(2000, 1280)).astype(np.float32))
    rows = [
        Photo(
            image=template.image.name,
            published=(i % 10 == 0),
            embedding_status="embedded",
            embedding_semantic=sem[i],
            embedding_visual=vis[i],
        )
        for i in range(2000)
    ]
    Photo.objects.bulk_create(rows, batch_size=500)
    with connection.cursor() as cursor:
        # Rows of earlier tests were rolled back but stay in the HNSW graph as dead tuples
        # until a VACUUM; rebuild it (inside this test's transaction) so the graph is clean.
        table = connection.ops.quote_name(Photo._meta.db_table)
        cursor.execute(f"REINDEX TABLE {table}")
        cursor.execute(f"ANALYZE {table}")
    return sem


@pytest.fixture
def index_forced(random_rows) -> np.ndarray:
    """At 2,000 rows the planner scans a 10% filter exactly; at a site's size it takes the
    index. Turn sequential scans off for this test's transaction to see the index's behaviour."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    return random_rows


def run_command(*args: str) -> str:
    """Call a management command; its standard output."""
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


class Terminal(io.StringIO):
    """A stream that says it is a terminal (progress bars show only on one)."""

    def isatty(self) -> bool:
        return True


@contextmanager
def ctrl_c_as_in_a_terminal() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt meanwhile, as in a terminal (a suite started in the background
    inherits it ignored); ``press_ctrl_c()`` then sends it to this process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def press_ctrl_c() -> None:
    """The user's Ctrl-C: a real SIGINT to this process (KeyboardInterrupt at the next bytecode)."""
    os.kill(os.getpid(), signal.SIGINT)


#: The message of ``embedding_refused_for_a_while``: several lines, far longer than a row's reason.
LONG_DATABASE_MESSAGE = "could not serialize access to the row " + "x" * 2000 + "\nit was changed meanwhile"


@contextmanager
def embedding_refused_for_a_while() -> Iterator[None]:
    """PostgreSQL refuses every write of an embedded row meanwhile with a serialization failure (a
    fault that may pass: ``OperationalError``) whose message is ``LONG_DATABASE_MESSAGE``, as a
    database's DETAIL may quote a whole row; marking rows failed is still written."""
    from django.db import connection

    from photos.models import Photo

    table = connection.ops.quote_name(Photo._meta.db_table)
    first, rest = LONG_DATABASE_MESSAGE.split("\n")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_embedded() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
            f"USING ERRCODE = '40001', MESSAGE = '{first}' || chr(10) || '{rest}'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER refuse_embedded BEFORE UPDATE ON {table} FOR EACH ROW "
            "WHEN (NEW.embedding_status = 'embedded') EXECUTE FUNCTION refuse_embedded()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER refuse_embedded ON {table}")
            cursor.execute("DROP FUNCTION refuse_embedded()")


def status_of(photo) -> str:
    """The row's embedding status, read from the database."""
    from photos.models import Photo

    return Photo.objects.get(pk=photo.pk).embedding_status


@pytest.fixture
def rows(make_photo, sample_paths):
    """Embedded, pending, failed-for-good and failed-for-a-passing-reason rows."""
    from django_semantic_images import EmbeddingStatus
    from django_semantic_images.pipeline import embed_instances
    from django_semantic_images.pipeline.failures import TRANSIENT_PREFIX
    from photos.models import Photo

    embedded = make_photo(sample_paths["chelsea"], title="a cat")
    embed_instances([embedded])
    pending = make_photo(sample_paths["coffee"])
    broken = make_photo(b"not a picture", name="notes.jpg")
    embed_instances([broken])
    transient = make_photo(sample_paths["rocket"])
    Photo.objects.filter(pk=transient.pk).update(  # its backoff over (no lease)
        embedding_status=EmbeddingStatus.FAILED,
        embedding_error=f"{TRANSIENT_PREFIX}storage timed out",
        embedding_lease_until=None,
    )
    return {"embedded": embedded, "pending": pending, "broken": broken, "transient": transient}


#: The near-duplicates library: titles by name; ``*-copy`` rows are edited copies (made below).
DUPLICATE_TITLES = {
    "chelsea": "Chelsea",
    "chelsea-jpeg": "Chelsea, low quality",
    "chelsea-flip": "Chelsea, mirrored",
    "coffee": "Morning coffee",
    "coffee-crop": "Morning coffee, cropped",
    "rocket": "Launch day",
    "astronaut": "Portrait",
    "horse": "Horse",
}


def without_dead_index_entries(model) -> None:
    """Rebuild ``model``'s indexes from its live rows. The rows earlier tests rolled back or deleted
    stay in the HNSW graphs until a vacuum (in a full run, hundreds of copies of the same sample
    pictures, beside the rows a test adds); once they have grown the table past a sequential scan,
    a probe through the index walks them and comes back short of the nearest live rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"REINDEX TABLE {connection.ops.quote_name(model._meta.db_table)}")


def duplicate_library(sample_paths: dict[str, Path]) -> dict:
    """Distinct photos and edited copies of two of them (JPEG quality 30, mirrored, resized and
    cropped 10%), embedded; the cropped coffee is unpublished. The table's indexes are rebuilt first
    (``without_dead_index_entries``), so its probes see no row of an earlier test."""
    from PIL import ImageOps

    from django_semantic_images.pipeline import embed_instances
    from django_semantic_images.signals import embedding_deferred
    from photos.models import Photo

    without_dead_index_entries(Photo)
    cat = Image.open(sample_paths["chelsea"]).convert("RGB")
    coffee = Image.open(sample_paths["coffee"]).convert("RGB")
    w, h = coffee.size
    sources = {stem: (path.read_bytes(), path.name) for stem, path in sample_paths.items() if stem in DUPLICATE_TITLES}
    sources["chelsea-jpeg"] = (image_bytes(cat, quality=30), "chelsea-q30.jpg")
    small = ImageOps.mirror(cat).resize((cat.width // 2, cat.height // 2))
    sources["chelsea-flip"] = (image_bytes(small), "chelsea-flip.jpg")
    crop = coffee.crop((w // 20, h // 20, w - w // 20, h - h // 20))
    sources["coffee-crop"] = (image_bytes(crop, quality=85), "coffee-crop.jpg")
    rows = {}
    with embedding_deferred():
        for stem, (data, name) in sources.items():
            photo = Photo(title=DUPLICATE_TITLES[stem], published=stem != "coffee-crop")
            photo.image.save(name, ContentFile(data), save=False)
            photo.save()
            rows[stem] = photo
    report = embed_instances(list(rows.values()))
    assert not report.failed, report.failed
    return rows


@pytest.fixture(scope="module")
def duplicate_photos(django_db_setup, django_db_blocker, sample_paths):
    """``duplicate_library`` once per module; each test's transaction is rolled back."""
    from photos.models import Photo

    with django_db_blocker.unblock():
        rows = duplicate_library(sample_paths)
        yield rows
        Photo.objects.all().delete()


def hub_cache_with(folder, tmp_path, monkeypatch, repo: str = "someorg/tiny-bert") -> None:
    """``folder`` as the hub's download of ``repo`` in a local hub cache (the layout huggingface_hub
    writes: a snapshot per revision, ``refs/main`` naming it); the hub itself is never called."""
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo_folder = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_folder / "snapshots" / "0123abcd")
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def draft_model(db):
    """``Draft``, a model whose default manager hides its unpublished rows, with a table made for the
    test (inside its transaction: rolled back after it)."""
    from django.db import connection, models
    from django.test.utils import isolate_apps

    from django_semantic_images import ImageEmbeddingField

    class PublishedOnly(models.Manager):
        def get_queryset(self) -> models.QuerySet:
            return super().get_queryset().filter(published=True)

    with isolate_apps("photos"):

        class Draft(models.Model):
            image = models.ImageField(upload_to="drafts/")
            published = models.BooleanField(default=False)
            embedding = ImageEmbeddingField(image_field="image")
            objects = PublishedOnly()

            class Meta:
                app_label = "photos"

            def __str__(self) -> str:
                return self.image.name

        with connection.schema_editor() as editor:
            editor.create_model(Draft)
        yield Draft


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU gettext catalog (``.mo``) holding ``messages`` (msgid: msgstr), in UTF-8."""
    entries = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(key.encode() for key in entries)
    values = [entries[key.decode()].encode() for key in keys]
    start = 7 * 4 + 16 * len(keys)
    ids = b"".join(key + b"\0" for key in keys)
    table_ids, table_strs, at_id, at_str = [], [], start, start + len(ids)
    for key, value in zip(keys, values, strict=True):
        table_ids += [len(key), at_id]
        table_strs += [len(value), at_str]
        at_id, at_str = at_id + len(key) + 1, at_str + len(value) + 1
    header = struct.pack("<7I", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + 8 * len(keys), 0, 0)
    table = struct.pack(f"<{4 * len(keys)}I", *table_ids, *table_strs)
    path.write_bytes(header + table + ids + b"".join(value + b"\0" for value in values))


@pytest.fixture
def french(settings, tmp_path):
    """``french(messages)``: a French catalog in ``LOCALE_PATHS`` for the test (Django's own
    gettext reads it, as a site's translations); use with ``translation.override("fr")``."""

    def install(messages: dict[str, str]) -> None:
        folder = tmp_path / "locale" / "fr" / "LC_MESSAGES"
        folder.mkdir(parents=True)
        write_mo(folder / "django.mo", messages)
        settings.LOCALE_PATHS = [str(tmp_path / "locale")]

    return install


class CountingUploadHandler(FileUploadHandler):
    """Records the size of each chunk of an uploaded file that Django's multipart parser reads."""

    chunks: list[int] = []

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.chunks.append(len(raw_data))
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


@pytest.fixture
def counted_uploads(settings) -> list[int]:
    """The sizes of the chunks of uploaded files that Django's multipart parser reads in the test
    (empty: no upload was read)."""
    settings.FILE_UPLOAD_HANDLERS = [f"{__name__}.CountingUploadHandler", *settings.FILE_UPLOAD_HANDLERS]
    CountingUploadHandler.chunks = []
    return CountingUploadHandler.chunks
