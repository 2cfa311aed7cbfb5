"""Shared fixtures: real PostgreSQL + pgvector (embedded server), the real models, sample photos."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from photos.samples import sample_photo_paths


@pytest.fixture(scope="session")
def sample_paths() -> dict[str, Path]:
    """Sample photos by stem: ``chelsea`` (a cat), ``coffee``, ``rocket``, ``astronaut`` ..."""
    paths = {p.stem: p for p in sample_photo_paths()}
    assert {"chelsea", "coffee", "rocket", "astronaut"} <= set(paths), paths
    return paths


def image_bytes(image: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, fmt, **kwargs)
    return buf.getvalue()


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
    """Every sample photo as an embedded Photo, by stem."""
    from django_semantic_images.pipeline import embed_instances

    photos = {stem: make_photo(path) for stem, path in sample_paths.items()}
    report = embed_instances(list(photos.values()))
    assert not report.failed, report.failed
    for photo in photos.values():
        photo.refresh_from_db()
    return photos
