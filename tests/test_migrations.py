"""The field's columns and indexes come from ordinary migrations."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import isolate_apps


@pytest.mark.django_db
def test_makemigrations_finds_nothing_to_add():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero on changes


@pytest.mark.django_db
def test_the_database_has_pgvector_and_hnsw_cosine_indexes():
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        (version,) = cursor.fetchone()
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'photos_photo' AND indexdef LIKE '%hnsw%'")
        indexes = sorted(row[0] for row in cursor.fetchall())
    assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 8)
    assert len(indexes) == 2
    assert all("vector_cosine_ops" in d for d in indexes)
    assert any("embedding_visual" in d for d in indexes) and any("embedding_semantic" in d for d in indexes)


@pytest.mark.django_db
@isolate_apps("photos")
def test_a_new_vector_size_needs_the_stored_vectors_set_to_null_first():
    """docs/encoders.md#changing-the-vector-sizes-in-place: the AlterField that a new
    ``semantic_dimensions`` makes casts the stored vectors, which fails at another size (it does
    not drop them); with the vectors set to NULL first (the migration's RunSQL) it goes through."""
    from django.db import DataError, models, transaction

    from django_semantic_images import ImageEmbeddingField

    class Resized(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    with connection.schema_editor() as editor:
        editor.create_model(Resized)
    Resized.objects.create(
        image="x.jpg", embedding_status="embedded", embedding_semantic=[1, 0, 0, 0], embedding_visual=[1] * 8
    )
    old = Resized._meta.get_field("embedding_semantic")
    _name, _path, args, kwargs = old.deconstruct()
    new = type(old)(*args, **{**kwargs, "dimensions": 5})
    new.set_attributes_from_name(old.name)
    new.model = Resized
    with pytest.raises(DataError, match="expected 5 dimensions, not 4"), transaction.atomic():
        with connection.schema_editor() as editor:
            editor.alter_field(Resized, old, new)
    Resized.objects.update(embedding_semantic=None, embedding_status="pending")
    with connection.schema_editor() as editor:
        editor.alter_field(Resized, old, new)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
            [Resized._meta.db_table, old.column],
        )
        assert cursor.fetchone()[0] == 5
