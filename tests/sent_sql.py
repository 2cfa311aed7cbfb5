"""The SQL a connection sends to PostgreSQL, as the server gets it.

Django's ``CaptureQueriesContext`` logs, on Django 5.0 and later, the statement psycopg sent (after
every execute wrapper, such as ``hnsw_message.SettingsFirst`` putting the HNSW settings before a ranked
query); on Django 4.2 it logs the SQL the ORM wrote, before the wrappers. Tests that check what
went to the server read it here, the same on every Django.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from django.db.backends.utils import CursorWrapper


class CaptureSentQueries:
    """``CaptureQueriesContext``'s interface (``len()``, ``[i]["sql"]``, ``captured_queries``) over
    the statements ``connection``'s cursors hand to psycopg inside the block, after every execute
    wrapper (Django's last step, ``CursorWrapper._execute``), parameters merged as
    ``connection.ops.compose_sql`` merges them. Named (server-side) cursors included."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.captured_queries: list[dict[str, str]] = []

    def __enter__(self) -> CaptureSentQueries:
        self.original = original = CursorWrapper._execute
        connection, captured = self.connection, self.captured_queries
        alias = connection.alias  # ``django.db.connection`` is a proxy: compare aliases

        def recording(cursor: CursorWrapper, sql: str, params: Any, *args: Any) -> Any:
            if cursor.db.alias == alias:
                captured.append({"sql": connection.ops.compose_sql(sql, params) if params else sql})
            return original(cursor, sql, params, *args)

        CursorWrapper._execute = recording  # type: ignore[method-assign]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        CursorWrapper._execute = self.original  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.captured_queries)

    def __getitem__(self, index: int) -> dict[str, str]:
        return self.captured_queries[index]
