"""Real Celery workers for the integration tests: subprocesses on a private Redis key space."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("SEMANTIC_IMAGES_TEST_REDIS", "redis://127.0.0.1:6379/0")
#: Every key of a test session (queues, unacked messages, results) starts with this prefix,
#: so parallel sessions on one Redis never see each other's messages.
KEY_PREFIX = f"semantic-images-test-{uuid.uuid4().hex[:10]}:"
#: How quickly an unacknowledged message of a dead worker goes back to its queue (seconds).
#: Longer than any task of the tests once a worker's models are loaded (a task running longer
#: would be delivered a second time: harmless, the rows are skipped, but confusing).
VISIBILITY_TIMEOUT = 25
BROKER_OPTIONS = {
    "global_keyprefix": KEY_PREFIX,
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
RESULT_OPTIONS = {"global_keyprefix": KEY_PREFIX}


def database_url(settings_dict: dict[str, Any]) -> str:
    """A DATABASE_URL for the test database (the embedded server's socket folder as host)."""
    d = settings_dict
    query = f"?host={quote(d['HOST'])}" if d["HOST"].startswith("/") else ""
    host = "" if query else d["HOST"]
    port = f":{d['PORT']}" if d["PORT"] else ""
    return f"postgresql://{quote(d['USER'])}:{quote(d['PASSWORD'] or '')}@{host}{port}/{quote(d['NAME'])}{query}"


def reset_app_connections(app: Any) -> None:
    """Forget the Celery app's cached broker pools and result backend (after a conf change).

    Also kombu's process-wide pools, which the app's producer pool comes from: one closed by an
    earlier test (or connected to a server a test stopped) must not be handed out again.
    """
    from kombu import pools

    pools.reset()
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)


@contextmanager
def configured_app(app: Any, **conf: Any) -> Iterator[Any]:
    """The app with ``conf`` applied and fresh connections; the old conf comes back afterwards."""
    saved = {key: app.conf[key] for key in conf}
    app.conf.update(conf)
    reset_app_connections(app)
    try:
        yield app
    finally:
        app.conf.update(saved)
        reset_app_connections(app)


@contextmanager
def on_redis(app: Any, **semantic_images: Any) -> Iterator[Any]:
    """The app on the tests' Redis, under their key prefix, with ``SEMANTIC_IMAGES`` set to
    ``semantic_images``; both back afterwards, and the tests' keys deleted."""
    from django.test import override_settings

    with (
        configured_app(
            app,
            broker_url=REDIS_URL,
            result_backend=REDIS_URL,
            broker_transport_options=BROKER_OPTIONS,
            result_backend_transport_options=RESULT_OPTIONS,
        ),
        override_settings(SEMANTIC_IMAGES=semantic_images),
    ):
        yield app
    cleanup_keys()


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def queue_length(queue: str, url: str = REDIS_URL) -> int:
    return int(redis.Redis.from_url(url).llen(f"{KEY_PREFIX}{queue}"))


def drop_queued_messages(queue: str) -> int:
    """Delete the messages waiting in ``queue``: what restarting a Redis without persistence does to them.

    (Only the list of waiting messages: the exchange bindings stay, so this process's cached
    declarations remain valid, as they would be after its connection was re-established.)
    """
    return int(redis_client().delete(f"{KEY_PREFIX}{queue}"))


def cleanup_keys() -> None:
    client = redis_client()
    keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
    if keys:
        client.delete(*keys)


class RedisServer:
    """A Redis of its own for a test (never the shared one): no persistence, like a cache-only broker,
    so a restart loses every queued message."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        log = (self.folder / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 30, f"redis-server on port {self.port}")

    def stop(self) -> None:
        """SIGKILL: what is in memory is gone, as after a crash or a restart without persistence."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.stop()
        self.start()


class Worker:
    """``celery -A example_project worker -Q <queue> -c 1 --pool prefork`` as a subprocess."""

    def __init__(
        self,
        queue: str,
        database: str,
        semantic_images: dict[str, Any],
        log_dir: Path,
        concurrency: int = 1,
        consume: str | None = None,
        beat: float | None = None,
        broker: str = REDIS_URL,
        env: dict[str, str] | None = None,
    ) -> None:
        """A worker with ``SEMANTIC_IMAGES["QUEUE"] = queue``, consuming ``consume`` (default: that queue).

        ``beat``: also run Celery beat in it (``-B``), sending the sweep to its queue every ``beat`` seconds.
        ``broker``: the Redis it uses as broker and result backend; ``env``: more environment variables.
        """
        self.queue = consume or queue
        self.name = f"{queue}-{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"{self.name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
            "DATABASE_URL": database,
            "CELERY_BROKER_URL": broker,
            "CELERY_RESULT_BACKEND": broker,
            "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps(BROKER_OPTIONS),
            "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS": json.dumps(RESULT_OPTIONS),
            "SEMANTIC_IMAGES_JSON": json.dumps({**semantic_images, "QUEUE": queue}),
            **(env or {}),
        }
        if beat is not None:
            sweep = {"task": "semantic_images.sweep", "schedule": beat, "options": {"queue": self.queue}}
            env["CELERY_BEAT_SCHEDULE_JSON"] = json.dumps({"semantic-images-sweep": sweep})
        command = [sys.executable, "-m", "celery", "-A", "example_project", "worker", "-Q", self.queue]
        command += ["-c", str(concurrency), "--pool", "prefork", "-n", f"{self.name}@%h", "-l", "info"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        if beat is not None:
            command += ["-B", "-s", str(log_dir / f"{self.name}-beat-schedule")]
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT / "example_project",
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: SIGKILL reaches the pool child too
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(lambda: " ready." in self.output(), timeout, f"worker {self.name} to start", self)

    def wait_loaded(self, app: Any, timeout: float = 180) -> dict[str, Any]:
        """Wait until the worker has started and its pool process has loaded the encoder."""
        self.wait_ready(timeout)

        def loaded() -> dict[str, Any] | None:
            info = app.send_task("semantic_images.worker_info", queue=self.queue).get(timeout=timeout)
            return info if info["loaded_at"] else None

        return wait_for(loaded, timeout, f"worker {self.name} to load its models", self, interval=0.5)

    def pause(self) -> None:
        """SIGSTOP the whole worker: it neither consumes nor answers (a stalled machine)."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool child), as a crash or OOM kill would."""
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive:
            self.resume()
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, worker: Worker | None = None, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it is truthy; fail with the worker's log after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if worker is not None and not worker.alive:
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.output()[-4000:]}")
        time.sleep(interval)
    log = f"\nworker log:\n{worker.output()[-4000:]}" if worker is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")
