"""The Wagtail tests need Wagtail's apps: ``pytest tests/wagtail --ds=tests.wagtail.settings``
(``make test`` runs it after the main suite, which leaves this folder out)."""

import io
from pathlib import Path

import pytest
from django.conf import settings

if "django_semantic_images.contrib.wagtail" not in settings.INSTALLED_APPS:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def make_image(db):
    """Create a Wagtail image from a path or raw bytes (its vectors are only marked pending:
    the embedding waits for a commit that a test's transaction never makes)."""
    from django.core.files.images import ImageFile
    from wagtail.images import get_image_model
    from wagtail.models import Collection

    def make(source, title: str, *, collection=None, tags=(), description: str = ""):
        data, name = (source.read_bytes(), source.name) if isinstance(source, Path) else (source, "upload.jpg")
        image = get_image_model()(
            title=title,
            description=description,
            file=ImageFile(io.BytesIO(data), name=name),
            collection=collection or Collection.get_first_root_node(),
        )
        image.save()
        if tags:
            image.tags.add(*tags)
        return image

    return make


@pytest.fixture
def embed():
    """Embed these images' vectors now, in this process."""
    from django_semantic_images.contrib.wagtail.models import ImageVectors
    from django_semantic_images.pipeline import embed_pks

    def run(*images):
        report = embed_pks(ImageVectors, [image.pk for image in images])
        assert not report.failed, report.failed
        return report

    return run


@pytest.fixture
def sample_images(make_image, embed, sample_paths):
    """Every sample photo as an embedded Wagtail image titled by a camera-style file name
    (no words of meaning), by stem."""
    images = {stem: make_image(path, f"IMG_{i:04d}") for i, (stem, path) in enumerate(sorted(sample_paths.items()))}
    embed(*images.values())
    return images


@pytest.fixture
def superuser_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "password")
    client.force_login(user)
    return client
