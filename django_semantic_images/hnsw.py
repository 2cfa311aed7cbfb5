"""pgvector's HNSW search parameters, set with ``SET LOCAL`` around a ranked query.

Every query that walks an HNSW index (searches, similar images, near-duplicates) runs in a
transaction that first sets ``SEMANTIC_IMAGES["HNSW_*"]`` (docs/settings.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

from .conf import semantic_settings


def hnsw_session_settings(ef_search: int | None = None) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs set with SET LOCAL before a ranked query.

    A setting of None is left to the server (a site can set it once per connection
    instead, in ``DATABASES[...]["OPTIONS"]["options"]``; docs/settings.md). ``ef_search``
    replaces ``HNSW_EF_SEARCH`` for one kind of query (near-duplicates).
    """
    values = [("hnsw.ef_search", semantic_settings.HNSW_EF_SEARCH if ef_search is None else ef_search)]
    if semantic_settings.HNSW_ITERATIVE_SCAN:
        values += [
            ("hnsw.iterative_scan", semantic_settings.HNSW_ITERATIVE_SCAN),
            ("hnsw.max_scan_tuples", semantic_settings.HNSW_MAX_SCAN_TUPLES),
            ("hnsw.scan_mem_multiplier", semantic_settings.HNSW_SCAN_MEM_MULTIPLIER),
        ]
    return [(name, str(value)) for name, value in values if value is not None]


def apply_hnsw_settings(using: str, pairs: list[tuple[str, str]] | None = None) -> None:
    """``SET LOCAL`` the HNSW parameters on ``using``'s current transaction (one round trip)."""
    pairs = hnsw_session_settings() if pairs is None else pairs
    if not pairs:
        return
    sql = "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in pairs)
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [v for pair in pairs for v in pair])


@contextmanager
def hnsw_settings(using: str, ef_search: int | None = None) -> Iterator[None]:
    """A transaction with the HNSW parameters set, for a ranked query run inside it.

    Nothing is opened when every parameter is left to the connection. Inside a caller's
    transaction no savepoint is needed: SET LOCAL lasts until that transaction ends.
    """
    pairs = hnsw_session_settings(ef_search)
    if not pairs:
        yield
        return
    with transaction.atomic(using=using, savepoint=False):
        apply_hnsw_settings(using, pairs)
        yield
