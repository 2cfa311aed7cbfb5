"""The Wagtail tests need Wagtail's apps: ``pytest tests/wagtail --ds=tests.wagtail.settings``
(``make test`` runs it after the main suite, which leaves this folder out)."""

import io
from contextlib import nullcontext
from pathlib import Path

import pytest
from django.conf import settings

from tests.aliases import mirror_alias

if "django_semantic_images.contrib.wagtail" not in settings.INSTALLED_APPS:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture
def make_image(db):
    """Create a Wagtail image from a path or raw bytes; its vectors are marked pending, and
    embedded only by the ``embed`` fixture (or after commit, with ``schedule=True``)."""
    from django.core.files.images import ImageFile
    from wagtail.images import get_image_model
    from wagtail.models import Collection
    from wagtail.search import index

    from django_semantic_images.signals import embedding_deferred

    def make(source, title: str, *, collection=None, tags=(), description: str = "", schedule: bool = False):
        data, name = (source.read_bytes(), source.name) if isinstance(source, Path) else (source, "upload.jpg")
        image = get_image_model()(
            title=title,
            description=description,
            file=ImageFile(io.BytesIO(data), name=name),
            collection=collection or Collection.get_first_root_node(),
        )
        with nullcontext() if schedule else embedding_deferred():
            image.save()
            if tags:
                image.tags.add(*tags)
        # Wagtail 7.0 indexes a saved image for its keyword search in a task sent on commit, which
        # a test's transaction never reaches (later releases index it at once): index it here.
        index.insert_or_update_object(image)
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


#: The sample photos the search tests use (a few, to keep the tests short).
STEMS = ("chelsea", "coffee", "rocket", "astronaut", "horse", "motorcycle_left")


@pytest.fixture
def sample_images(make_image, embed, sample_paths):
    """Sample photos as embedded Wagtail images titled by camera-style file names (no words of
    meaning), by stem."""
    images = {stem: make_image(sample_paths[stem], f"IMG_{i:04d}") for i, stem in enumerate(STEMS)}
    embed(*images.values())
    return images


#: The alias of ``second_alias``.
OTHER = "other"


@pytest.fixture(scope="module")
def second_alias(django_db_setup, django_db_blocker):
    """``other``, a second alias of the test database (``TEST: {"MIRROR": "default"}``): a site's
    second database or read replica, with its own connection, for tests marked
    ``django_db(transaction=True, databases=["default", "other"])`` (the mirror does not see the
    rows of a test's uncommitted transaction)."""
    with mirror_alias(OTHER, django_db_blocker) as alias:
        yield alias


@pytest.fixture
def superuser_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "password")
    client.force_login(user)
    return client


@pytest.fixture
def two_collections(make_image, embed, sample_paths, django_user_model):
    """A cat in Pets, three other photos in Products (all embedded), and an editor of each
    collection: the permission tests' setup."""
    from wagtail.models import Collection

    from .editors import editor_of

    root = Collection.get_first_root_node()
    pets, products = root.add_child(name="Pets"), root.add_child(name="Products")
    cat = make_image(sample_paths["chelsea"], "IMG_0001", collection=pets)
    others = [
        make_image(sample_paths[stem], f"IMG_{i:04d}", collection=products)
        for i, stem in enumerate(("coffee", "rocket", "astronaut"), start=2)
    ]
    embed(cat, *others)
    return {
        "pets": pets,
        "products": products,
        "cat": cat,
        "others": others,
        "pets_editor": editor_of(pets, django_user_model, "pets"),
        "products_editor": editor_of(products, django_user_model, "products"),
    }


@pytest.fixture
def indexed_images(make_image, sample_paths):
    """``make(kind, collections)``: 2,000 images (spread over ``collections``, sharing one file)
    whose ``kind`` vectors ("semantic" or "visual") are random unit vectors, in a rebuilt HNSW
    index, with sorting turned off for the test's transaction: at 2,000 rows the planner would
    sort them all; from about 20,000 it takes the index by itself (docs/wagtail.md). Returns the
    images and their vectors (image i has vector i)."""
    import numpy as np
    from django.db import connection
    from wagtail.images import get_image_model

    from django_semantic_images.contrib.wagtail.models import ImageVectors
    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.fields import get_embedding_field

    def make(kind: str, collections: list):
        template = make_image(sample_paths["coffee"], "template", collection=collections[0])
        image_model = get_image_model()
        images = image_model.objects.bulk_create(
            [
                image_model(
                    title=f"IMG_{i}",
                    file=template.file.name,
                    width=1,
                    height=1,
                    collection=collections[i % len(collections)],
                )
                for i in range(2000)
            ]
        )
        column = get_embedding_field(ImageVectors).column(kind)
        dimensions = ImageVectors._meta.get_field(column).dimensions
        vectors = l2_normalize(np.random.default_rng(0).normal(size=(len(images), dimensions)).astype(np.float32))
        ImageVectors.objects.bulk_create(
            [
                ImageVectors(image=image, embedding_status="embedded", **{column: vectors[i]})
                for i, image in enumerate(images)
            ]
        )
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute(f"REINDEX TABLE {ImageVectors._meta.db_table}")
            cursor.execute(f"ANALYZE {ImageVectors._meta.db_table}")
            cursor.execute(f"ANALYZE {image_model._meta.db_table}")
        return images, vectors

    return make
