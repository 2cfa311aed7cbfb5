"""The HNSW settings sent in the same message as the query they are for: one round trip, not four
(BEGIN, the settings, the query, COMMIT), where the connection binds parameters on the client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connections
from psycopg import ClientCursor

from .fields import ImageEmbeddingField
from .hnsw import hnsw_session_settings, hnsw_settings, settings_sql, stash_and_set_sql, unstash_sql


@contextmanager
def settings_in_force(alias: str, field: ImageEmbeddingField | None, *, one_message: bool = True) -> Iterator[None]:
    """The HNSW settings for the next query on ``alias``: sent in its message (``SettingsFirst``)
    when the connection binds on the client and ``one_message``, else with ``hnsw_settings``."""
    pairs = hnsw_session_settings(using=alias, field=field)
    connection = connections[alias]
    if not pairs or not one_message or not binds_on_client(connection):
        with hnsw_settings(alias, field=field):
            yield
        return
    # One round trip instead of four (BEGIN, the settings, the query, COMMIT).
    with connection.execute_wrapper(SettingsFirst(pairs)):
        yield


def binds_on_client(connection: Any) -> bool:
    """Whether ``connection``'s cursors bind parameters in the client (psycopg's ``ClientCursor``,
    Django's default), so that one message can carry two statements."""
    connection.ensure_connection()
    factory = getattr(connection.connection, "cursor_factory", None)  # what Django's backend set
    if isinstance(factory, type):
        return issubclass(factory, ClientCursor)
    with connection.cursor() as cursor:
        return isinstance(getattr(cursor, "cursor", None), ClientCursor)


def settings_first(
    pairs: list[tuple[str, str]], sql: str, params: Sequence[Any], *, restore: bool = False
) -> tuple[str, list[Any]]:
    """``sql`` preceded by one statement that sets the HNSW ``pairs`` for its transaction.

    ``restore`` (inside a caller's transaction, which outlives the query): that statement first
    keeps the parameters' values, and a third statement after ``sql`` gives them back, in the
    same message; the cursor is left on ``sql``'s rows all the same.
    """
    if not restore:
        set_sql, set_params = settings_sql(pairs)
        return f"{set_sql}; {sql}", [*set_params, *params]
    set_sql, set_params = stash_and_set_sql(pairs)
    back_sql, back_params = unstash_sql(pairs)
    return f"{set_sql}; {sql}; {back_sql}", [*set_params, *params, *back_params]


class SettingsFirst:
    """An execute wrapper (``connection.execute_wrapper``) that sends the HNSW settings in the
    same message as the next query, and leaves the cursor on that query's rows.

    PostgreSQL runs the statements of one message as one transaction, so SET LOCAL lasts until
    the query is done. Inside a caller's transaction they are part of it, and the message ends
    with a statement that gives the parameters back their previous values (a site's own SET
    LOCAL included). Only the first query is changed, and the same SQL again (a wrapper of the
    site's that retries it): what runs after it (``prefetch_related``) goes as it is.
    """

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.sql: str | None = None  # the query it changes

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if many or (self.sql is not None and sql != self.sql):
            return execute(sql, params, many, context)
        self.sql = sql
        restore = not context["connection"].get_autocommit()  # a transaction that outlives the query
        result = execute(*settings_first(self.pairs, sql, params or (), restore=restore), many, context)
        context["cursor"].nextset()
        return result
