"""The field's columns and indexes come from ordinary migrations."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection


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
