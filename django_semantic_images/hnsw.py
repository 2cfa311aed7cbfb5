"""pgvector's HNSW search parameters, set with ``SET LOCAL`` around a ranked query.

Every query that walks an HNSW index (searches, similar images, near-duplicates) runs in a
transaction that first sets ``SEMANTIC_IMAGES["HNSW_*"]`` (docs/settings.md).

``HNSW_EF_SEARCH = "auto"`` (the default) sizes ``hnsw.ef_search`` to the table and its index:
an HNSW walk that finds the true top 10 at 100,000 rows with 200 candidates misses more of them
at a million, fewer in a better-connected graph
(docs/performance.md#a-better-connected-graph-and-an-ef_search-that-grows-with-the-table), so
above 100,000 rows the candidates grow with the table's estimated size (``pg_class.reltuples``,
read once per table and process every ``ROW_ESTIMATE_TTL`` seconds), less for a graph built
with more links.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import connections, transaction

from .conf import semantic_settings

if TYPE_CHECKING:
    from .fields import ImageEmbeddingField

#: ``"auto"``: ``AUTO_EF_SEARCH`` candidates up to ``AUTO_EF_SEARCH_ROWS`` rows, then
#: ``AUTO_EF_SEARCH * (rows / AUTO_EF_SEARCH_ROWS) ** AUTO_EF_SEARCH_EXPONENT``, at most
#: ``AUTO_EF_SEARCH_MAX`` (pgvector's limit); for a better-connected graph half that (m >= 24
#: and ef_construction >= 128) or a quarter (m >= 32 and ef_construction >= 200), never under
#: ``AUTO_EF_SEARCH``. Measured at 1M rows (synthetic, 384-d): the default build (m 16,
#: ef_construction 64) found 0.945-0.960 of the true top 10 at 800 over three builds (200 does
#: at 100k: 0.993); m 24 / ef_construction 128 0.955-0.980 at 400 over four builds (0.918-0.963
#: at 200); m 32 / ef_construction 200 0.988 at 150 and 200 (one build).
AUTO_EF_SEARCH = 200
AUTO_EF_SEARCH_ROWS = 100_000
AUTO_EF_SEARCH_EXPONENT = math.log10(4)  # 4x the candidates for 10x the rows
AUTO_EF_SEARCH_MAX = 1000
#: Seconds a process keeps a table's estimated row count.
ROW_ESTIMATE_TTL = 600.0

_row_estimates: dict[tuple[str, str], tuple[float, float]] = {}


def candidates_divisor(m: int, ef_construction: int) -> int:
    """How many times fewer candidates than the default build an index built so needs."""
    if m >= 32 and ef_construction >= 200:
        return 4
    if m >= 24 and ef_construction >= 128:
        return 2
    return 1


def auto_ef_search(rows: float, m: int = 16, ef_construction: int = 64) -> int:
    """The ``hnsw.ef_search`` that ``"auto"`` gives a table of ``rows`` rows and its index."""
    if rows <= AUTO_EF_SEARCH_ROWS:
        return AUTO_EF_SEARCH
    scaled = min(AUTO_EF_SEARCH_MAX, AUTO_EF_SEARCH * (rows / AUTO_EF_SEARCH_ROWS) ** AUTO_EF_SEARCH_EXPONENT)
    divisor = candidates_divisor(m, ef_construction)
    if divisor > 1:
        scaled = max(AUTO_EF_SEARCH, scaled / divisor)
    return round(scaled)


def estimated_rows(using: str, table: str) -> float:
    """PostgreSQL's estimate of ``table``'s rows (``pg_class.reltuples``; 0 before its first
    ANALYZE), kept ``ROW_ESTIMATE_TTL`` seconds per process."""
    key = (using, table)
    now = time.monotonic()
    cached = _row_estimates.get(key)
    if cached is not None and now - cached[0] < ROW_ESTIMATE_TTL:
        return cached[1]
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", [connection.ops.quote_name(table)])
        row = cursor.fetchone()
    rows = max(0.0, float(row[0])) if row is not None else 0.0
    _row_estimates[key] = (now, rows)
    return rows


def hnsw_session_settings(
    ef_search: int | None = None, using: str | None = None, field: ImageEmbeddingField | None = None
) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs set with SET LOCAL before a ranked query.

    A setting of None is left to the server (a site can set it once per connection
    instead, in ``DATABASES[...]["OPTIONS"]["options"]``; docs/settings.md). ``ef_search``
    replaces ``HNSW_EF_SEARCH`` for one kind of query (near-duplicates). ``"auto"`` sizes it
    to ``field``'s table on ``using`` and its index's build (without them: 200).
    """
    chosen = semantic_settings.HNSW_EF_SEARCH if ef_search is None else ef_search
    if chosen == "auto":
        if using and field is not None and field.model is not None:
            rows = estimated_rows(using, field.model._meta.db_table)
            chosen = auto_ef_search(rows, field.hnsw_m, field.hnsw_ef_construction)
        else:
            chosen = AUTO_EF_SEARCH
    values = [("hnsw.ef_search", chosen)]
    if semantic_settings.HNSW_ITERATIVE_SCAN:
        values += [
            ("hnsw.iterative_scan", semantic_settings.HNSW_ITERATIVE_SCAN),
            ("hnsw.max_scan_tuples", semantic_settings.HNSW_MAX_SCAN_TUPLES),
            ("hnsw.scan_mem_multiplier", semantic_settings.HNSW_SCAN_MEM_MULTIPLIER),
        ]
    return [(name, str(value)) for name, value in values if value is not None]


#: Where a message that sets the HNSW parameters inside a caller's transaction keeps their previous
#: values until its query is done (``semantic_images.previous_hnsw_ef_search``): placeholder
#: settings of this package's own, set with SET LOCAL like the parameters.
PREVIOUS_PREFIX = "semantic_images.previous_"


def settings_sql(pairs: Sequence[tuple[str, str | None]]) -> tuple[str, list[str | None]]:
    """The statement that sets ``pairs`` for the current transaction (SET LOCAL); a value of None
    resets the parameter (to the value it has outside any SET: the server's or the connection's)."""
    return "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in pairs), [v for pair in pairs for v in pair]


def stash_and_set_sql(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str | None]]:
    """One statement that keeps each parameter's current value in a placeholder setting
    (``PREVIOUS_PREFIX``; '' for one not defined) and then sets ``pairs``: the subquery runs first."""
    kept = ", ".join("set_config(%s, coalesce(current_setting(%s, true), ''), true)" for _ in pairs)
    sql, params = settings_sql(pairs)
    stash = [v for name, _ in pairs for v in (previous_name(name), name)]
    return f"{sql} FROM (SELECT {kept} OFFSET 0) AS previous", [*params, *stash]


def unstash_sql(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """The statement that gives each parameter of ``pairs`` back the value ``stash_and_set_sql`` kept."""
    sql = "SELECT " + ", ".join("set_config(%s, nullif(current_setting(%s), ''), true)" for _ in pairs)
    return sql, [v for name, _ in pairs for v in (name, previous_name(name))]


def previous_name(name: str) -> str:
    return PREVIOUS_PREFIX + name.replace(".", "_")


def apply_hnsw_settings(
    using: str, pairs: list[tuple[str, str]] | None = None, field: ImageEmbeddingField | None = None
) -> None:
    """``SET LOCAL`` the HNSW parameters on ``using``'s current transaction (one round trip);
    ``field``: the one whose index the query walks (``HNSW_EF_SEARCH = "auto"``). They last until
    that transaction ends: :func:`hnsw_settings` gives them back their previous values after."""
    pairs = hnsw_session_settings(using=using, field=field) if pairs is None else pairs
    if not pairs:
        return
    with connections[using].cursor() as cursor:
        cursor.execute(*settings_sql(pairs))


def swap_hnsw_settings(using: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """``SET LOCAL`` ``pairs`` on ``using``'s current transaction and return the values they
    replace (None: not defined), for :func:`restore_hnsw_settings`; one round trip."""
    current = ", ".join("current_setting(%s, true)" for _ in pairs)
    sql, params = settings_sql(pairs)
    sql = sql.replace("SELECT ", "SELECT previous.value, ", 1)
    with connections[using].cursor() as cursor:
        # The subquery (OFFSET 0 keeps it one) reads the values before the set_config calls run.
        cursor.execute(
            f"{sql} FROM (SELECT ARRAY[{current}] AS value OFFSET 0) AS previous",
            [*params, *(name for name, _ in pairs)],
        )
        row = cursor.fetchone()
    return list(zip((name for name, _ in pairs), row[0], strict=True))


def restore_hnsw_settings(using: str, previous: list[tuple[str, str | None]]) -> None:
    """Give the HNSW parameters back the values :func:`swap_hnsw_settings` returned (one round trip)."""
    with connections[using].cursor() as cursor:
        cursor.execute(*settings_sql(previous))


@contextmanager
def hnsw_settings(using: str, ef_search: int | None = None, field: ImageEmbeddingField | None = None) -> Iterator[None]:
    """The HNSW parameters in force for the queries run inside the block (SET LOCAL).

    Outside a transaction it opens one for the block (the parameters end with it). Inside a
    caller's transaction (``atomic()``, ``ATOMIC_REQUESTS``, a test's) it opens no savepoint, and
    gives the parameters back the values they had (a site's own SET LOCAL included) when the block
    ends normally: one round trip more. After an error the transaction is rolled back (to the
    caller's savepoint, if any), which undoes them as well. Nothing is sent when every parameter is
    left to the connection. ``field``: the ImageEmbeddingField whose index the queries walk
    (``HNSW_EF_SEARCH = "auto"`` sizes ``ef_search`` to its table; without it, 200).
    """
    pairs = hnsw_session_settings(ef_search, using, field)
    if not pairs:
        yield
        return
    inside = not connections[using].get_autocommit()  # a transaction that outlives the block
    with transaction.atomic(using=using, savepoint=False):
        if not inside:
            apply_hnsw_settings(using, pairs)
            yield
            return
        previous = swap_hnsw_settings(using, pairs)
        yield
        restore_hnsw_settings(using, previous)
