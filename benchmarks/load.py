"""The example site under load: gunicorn with its shipped config, a Celery worker, 32 clients.

    PYTHONPATH=.:example_project python benchmarks/load.py [--json benchmarks/results/load.json]

Starts everything itself:

* PostgreSQL: the example's embedded server, data in ``--pgdata`` (kept for the next run),
  or ``DATABASE_URL``; ``manage.py demo --no-serve`` migrates, loads and embeds the sample
  photos, fills the model cache and creates the ``admin`` user; ``--rows N`` adds N
  synthetic embedded rows (the sample photos' vectors, jittered);
* gunicorn with ``example_project/gunicorn.conf.py`` (preload, models loaded once in the
  master, gthread workers), ``DEBUG`` off, persistent database connections, throttling off
  (``API_THROTTLING=0``);
* a Celery worker with beat (``-B``: the sweep every 10 s) on ``--redis`` (a Redis database
  of its own, 13 by default, so no other worker takes its tasks).

Then ``--clients`` threads (keep-alive ``requests`` sessions, one request after another, no
pause) send for ``--duration`` seconds a mix of word searches (varied words, so the query
cache seldom answers), "similar to" a random photo and searches by photo (multipart POSTs
of 640x480 JPEGs); alongside, ``--uploads-per-s`` photos are uploaded through the admin's
add form (a signed-in editor) and embedded by the worker. Afterwards it waits up to
``--settle`` seconds (the lease, 30 s, plus a sweep period, 10 s, plus a margin) for every
upload to be embedded: an upload not embedded by then is lost. It prints a table: requests,
errors by kind, p50/p95/p99 per kind, throughput, the uploads' embedding lag, and the
machine's load average (``/proc/loadavg``) before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_project"
sys.path[:0] = [str(ROOT), str(EXAMPLE)]

KINDS = ("text", "similar", "photo")
ADJECTIVES = ["red", "small", "old", "white", "wooden", "blue", "bright", "dark", "green", "shiny", "tall", "striped"]
NOUNS = [
    "cat",
    "cup of coffee",
    "rocket",
    "motorcycle",
    "astronaut",
    "horse",
    "camera",
    "flower",
    "temple",
    "bicycle",
    "dog",
    "boat",
    "bridge",
    "car",
    "chair",
    "tree",
    "bird",
    "house",
    "train",
    "guitar",
    "coins",
    "galaxy",
    "mountain",
    "lamp",
]
PLACES = ["", "on a table", "in a garden", "at night", "in the snow", "by the sea", "in a city street", "indoors"]


def query_words(rng: random.Random) -> str:
    """A search like an editor's: 12 x 24 x 8 combinations, so few repeat within a run."""
    return " ".join(filter(None, ["a", rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(PLACES)]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, round(q * (len(sorted_ms) - 1)))], 1)


# -- set-up ---------------------------------------------------------------------------------


def setup(rows: int, seed: int) -> dict[str, Any]:
    """Django in this process, the database ready: sample photos, admin user, model cache."""
    import django
    from django.core.management import call_command

    django.setup()
    from photos.models import Photo

    call_command("demo", no_serve=True, verbosity=0)
    Photo.objects.filter(title__startswith="load upload").delete()  # an earlier run's uploads
    synthetic = add_synthetic_rows(rows, seed)
    return {"rows": Photo.objects.count(), "synthetic_rows": synthetic}


def add_synthetic_rows(n: int, seed: int) -> int:
    """``n`` embedded rows whose vectors are the sample photos' with noise (COPY), each showing
    its sample's file (so thumbnails work); the rows of an earlier run go first."""
    import numpy as np
    from django.db import connection
    from django.utils import timezone
    from pgvector.psycopg import register_vector

    from django_semantic_images.encoders.base import l2_normalize
    from photos.models import Photo

    Photo.objects.filter(title__startswith="synthetic ").delete()
    if n <= 0:
        return 0
    samples = list(
        Photo.objects.filter(embedding_status="embedded", title__gt="")
        .exclude(embedding_visual=None)
        .exclude(title__startswith="load upload")
    )
    rng = np.random.default_rng(seed)
    visual = np.stack([np.asarray(p.embedding_visual, np.float32) for p in samples])
    semantic = np.stack([np.asarray(p.embedding_semantic, np.float32) for p in samples])
    table = connection.ops.quote_name(Photo._meta.db_table)
    columns = ["image", "title", "alt_text", "published", "created_at", "embedding_visual", "embedding_semantic"]
    columns += ["embedding_encoder", "embedding_hash", "embedding_status", "embedding_error", "embedding_labels"]
    columns += ["embedding_claimed_by", "embedding_updated_at"]
    types = ["varchar", "varchar", "text", "bool", "timestamptz", "vector", "vector"]
    types += ["varchar", "varchar", "varchar", "text", "jsonb", "varchar", "timestamptz"]
    connection.ensure_connection()
    register_vector(connection.connection)
    now = timezone.now()
    from psycopg.types.json import Jsonb

    with connection.cursor() as cursor:
        names = ", ".join(connection.ops.quote_name(c) for c in columns)
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for i in range(n):
                k = i % len(samples)
                v = l2_normalize(visual[k] + rng.normal(scale=0.02, size=visual.shape[1]).astype(np.float32))
                s = l2_normalize(semantic[k] + rng.normal(scale=0.02, size=semantic.shape[1]).astype(np.float32))
                row = samples[k]
                copy.write_row(
                    (row.image.name, f"synthetic {i}: {row.title}", row.alt_text, True, now, v, s)
                    + (row.embedding_encoder, "", "embedded", "", Jsonb([]), "", now)
                )
        cursor.execute(f"ANALYZE {table}")
    return n


def jpeg_variants(count: int, seed: int, size: tuple[int, int] = (640, 480)) -> list[bytes]:
    """``count`` different JPEGs made from the sample photos (a crop, a brightness, a mark)."""
    from PIL import Image, ImageDraw, ImageEnhance

    from photos.samples import sample_photo_paths

    rng = random.Random(seed)
    paths = sample_photo_paths()
    out = []
    for i in range(count):
        image = Image.open(paths[i % len(paths)]).convert("RGB")
        w, h = image.size
        dx, dy = rng.randint(0, w // 8), rng.randint(0, h // 8)
        image = image.crop((dx, dy, w - rng.randint(0, w // 8), h - rng.randint(0, h // 8))).resize(size)
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        x, y = rng.randint(0, size[0] - 20), rng.randint(0, size[1] - 20)
        ImageDraw.Draw(image).rectangle((x, y, x + 12, y + 12), fill=tuple(rng.randint(0, 255) for _ in range(3)))
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


# -- servers --------------------------------------------------------------------------------


def start_worker(env: dict[str, str], logs: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "celery", "-A", "example_project", "worker", "-Q", "semantic_images,celery"]
    command += ["-c", "1", "--pool", "prefork", "-B", "-s", str(logs / "beat-schedule"), "-n", f"load{os.getpid()}@%h"]
    command += ["--loglevel", "INFO", "-f", str(logs / "worker.log")]
    return subprocess.Popen(command, cwd=EXAMPLE, env=env, start_new_session=True)


def start_gunicorn(env: dict[str, str], port: int, logs: Path, workers: int | None, threads: int | None):
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}"]
    command += ["--error-logfile", str(logs / "gunicorn.log")]
    if workers:
        command += ["--workers", str(workers)]
    if threads:
        command += ["--threads", str(threads)]
    out = (logs / "gunicorn.out").open("w")  # the site's own log lines (Django's loggers: stderr)
    return subprocess.Popen(command, cwd=EXAMPLE, env=env, start_new_session=True, stdout=out, stderr=out)


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process ended (status {proc.returncode})")
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not ready within {timeout} s")


def stop(proc: subprocess.Popen, timeout: float = 40) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# -- the load ---------------------------------------------------------------------------------


@dataclass
class Record:
    """Every request of the run: (kind, seconds from the start, latency in s, outcome)."""

    samples: list[tuple[str, float, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, at: float, seconds: float, outcome: str) -> None:
        with self.lock:
            self.samples.append((kind, at, seconds, outcome))


def outcome_of(response: Any, kind: str) -> str:
    """ "ok", or why not: an HTTP status, or a body that is not the expected ranked list."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return "no results list"
    return "ok"


def client(
    base: str,
    mix: dict[str, float],
    ids: list[int],
    photos: list[bytes],
    start: float,
    end: float,
    record: Record,
    seed: int,
) -> None:
    import requests

    rng = random.Random(seed)
    session = requests.Session()
    kinds, weights = list(mix), list(mix.values())
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        kind = rng.choices(kinds, weights)[0]
        try:
            if kind == "text":
                response = session.get(f"{base}/api/photos/search/", params={"q": query_words(rng)}, timeout=60)
            elif kind == "similar":
                response = session.get(f"{base}/api/photos/{rng.choice(ids)}/similar/", timeout=60)
            else:
                files = {"image": ("photo.jpg", rng.choice(photos), "image/jpeg")}
                response = session.post(f"{base}/api/photos/search/", files=files, timeout=60)
            outcome = outcome_of(response, kind)
        except Exception as exc:  # noqa: BLE001 - counted by kind
            outcome = type(exc).__name__
        record.add(kind, now - start, time.perf_counter() - now, outcome)
    session.close()


def admin_session(base: str) -> Any:
    import requests

    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=60)
    token = session.cookies["csrftoken"]
    response = session.post(
        f"{base}/admin/login/",
        data={"username": "admin", "password": "admin", "csrfmiddlewaretoken": token, "next": "/admin/"},
        headers={"Referer": f"{base}/admin/login/"},
        timeout=60,
        allow_redirects=False,
    )
    if response.status_code != 302:
        raise RuntimeError(f"admin login failed: HTTP {response.status_code}")
    return session


def uploader(
    base: str, per_s: float, photos: list[bytes], start: float, end: float, record: Record, uploaded: dict[int, float]
) -> None:
    """The admin's add form, ``per_s`` times a second: each upload's pk and when it was saved."""
    session = admin_session(base)
    url = f"{base}/admin/photos/photo/add/"
    i = 0
    while True:
        due = start + i / per_s
        now = time.perf_counter()
        if due >= end:
            break
        if due > now:
            time.sleep(due - now)
        sent = time.perf_counter()
        data = {
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "title": f"load upload {i}",
            "alt_text": "A photo uploaded during the load test.",
            "published": "on",
            "_continue": "Save and continue editing",
        }
        files = {"image": (f"load-{i}.jpg", photos[i % len(photos)], "image/jpeg")}
        try:
            response = session.post(
                url, data=data, files=files, headers={"Referer": url}, timeout=60, allow_redirects=False
            )
            location = response.headers.get("Location", "")
            if response.status_code == 302 and "/change/" in location:
                uploaded[int(location.rstrip("/").split("/")[-2])] = time.perf_counter()
                outcome = "ok"
            else:
                outcome = f"HTTP {response.status_code}"
        except Exception as exc:  # noqa: BLE001 - counted
            outcome = type(exc).__name__
        record.add("upload", sent - start, time.perf_counter() - sent, outcome)
        i += 1


def watch_embedding(uploaded: dict[int, float], embedded: dict[int, float], stop_event: threading.Event) -> None:
    """Once a second: which uploads are embedded now (their lag is measured to that poll)."""
    from django.db import connection

    from photos.models import Photo

    try:
        while not stop_event.is_set():
            waiting = [pk for pk in list(uploaded) if pk not in embedded]
            if waiting:
                done = Photo.objects.filter(pk__in=waiting, embedding_status="embedded").values_list("pk", flat=True)
                seen = time.perf_counter()
                for pk in done:
                    embedded[pk] = seen
            stop_event.wait(1.0)
    finally:
        connection.close()


# -- report -----------------------------------------------------------------------------------


def summarise(record: Record, duration: float) -> dict[str, Any]:
    by_kind: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for kind, _at, seconds, outcome in record.samples:
        by_kind[kind].append((seconds, outcome))
    out: dict[str, Any] = {}
    for kind in (*KINDS, "upload"):
        rows = by_kind.get(kind, [])
        ok_ms = sorted(s * 1000 for s, o in rows if o == "ok")
        errors = Counter(o for _, o in rows if o != "ok")
        out[kind] = {
            "requests": len(rows),
            "errors": sum(errors.values()),
            "error_kinds": dict(errors),
            "per_s": round(len(rows) / duration, 2),
            "p50_ms": percentile(ok_ms, 0.50),
            "p95_ms": percentile(ok_ms, 0.95),
            "p99_ms": percentile(ok_ms, 0.99),
            "max_ms": round(ok_ms[-1], 1) if ok_ms else None,
        }
    searches = [(s, o) for kind in KINDS for s, o in by_kind.get(kind, [])]
    ok_ms = sorted(s * 1000 for s, o in searches if o == "ok")
    out["all searches"] = {
        "requests": len(searches),
        "errors": sum(1 for _, o in searches if o != "ok"),
        "error_kinds": dict(Counter(o for _, o in searches if o != "ok")),
        "per_s": round(len(searches) / duration, 2),
        "p50_ms": percentile(ok_ms, 0.50),
        "p95_ms": percentile(ok_ms, 0.95),
        "p99_ms": percentile(ok_ms, 0.99),
        "max_ms": round(ok_ms[-1], 1) if ok_ms else None,
    }
    return out


def table(summary: dict[str, Any]) -> str:
    head = f"{'kind':<13}{'requests':>9}{'per s':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    lines = [head, "-" * len(head)]
    for kind, row in summary.items():
        cells = [row[k] if row[k] is not None else "-" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
        lines.append(
            f"{kind:<13}{row['requests']:>9}{row['per_s']:>8}{row['errors']:>8}"
            + "".join(f"{c:>9}" for c in cells)
            + (f"   {row['error_kinds']}" if row["error_kinds"] else "")
        )
    return "\n".join(lines)


def server_log_counts(logs: Path) -> dict[str, int]:
    """What gunicorn's log and the site's stderr say: tracebacks, timeouts, workers started or killed."""
    text = "".join(p.read_text(errors="replace") for p in (logs / "gunicorn.log", logs / "gunicorn.out") if p.exists())
    return {
        "tracebacks": text.count("Traceback"),
        "no_thumbnail_warnings": text.count("No thumbnail for"),
        "worker_timeouts": text.count("WORKER TIMEOUT"),
        "workers_booted": text.count("Booting worker"),
        "workers_killed_by_signal": text.count("was sent SIG"),
    }


def parse_mix(value: str) -> dict[str, float]:
    mix = {}
    for part in value.split(","):
        name, _, share = part.partition("=")
        if name not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {name!r}: one of {', '.join(KINDS)}")
        mix[name] = float(share)
    return mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--mix", type=parse_mix, default=parse_mix("text=0.6,similar=0.25,photo=0.15"))
    parser.add_argument("--uploads-per-s", type=float, default=1.0, help="admin uploads a second (0: none)")
    parser.add_argument("--settle", type=float, default=90.0, help="seconds to wait for the uploads' embedding")
    parser.add_argument("--rows", type=int, default=0, help="synthetic embedded rows besides the samples")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default: the config's)")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker (default: the config's)")
    parser.add_argument(
        "--redis", default="redis://127.0.0.1:6379/13", help="the Celery broker (a database of its own)"
    )
    parser.add_argument("--pgdata", type=Path, default=Path(tempfile.gettempdir()) / "semantic-images-load-pgdata")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="semantic-images-load-"))
    # Next to the database, kept with it: the sample photos' files must stay where their rows say.
    media = args.pgdata.with_name(args.pgdata.name + "-media")
    for old in (media / "photos").glob("load-*"):  # an earlier run's uploads (their rows go in setup)
        old.unlink()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        SEMANTIC_IMAGES_PGDATA=str(args.pgdata),
        MEDIA_ROOT=str(media),
        CELERY_BROKER_URL=args.redis,
        API_THROTTLING="0",
        DJANGO_DEBUG="0",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    # Absolute, so that the servers (started in example_project/) import this checkout's package.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(EXAMPLE), os.environ.get("PYTHONPATH")]))
    print(f"Setting up (logs in {logs})...", flush=True)
    database = setup(args.rows, args.seed)  # sets DATABASE_URL when it starts the embedded server
    env = dict(os.environ)

    from photos.models import Photo

    ids = list(Photo.objects.filter(published=True).exclude(embedding_visual=None).values_list("pk", flat=True))
    photos = jpeg_variants(24, args.seed)
    uploads = jpeg_variants(max(1, int(args.duration * args.uploads_per_s) + 1), args.seed + 1)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = start_worker(env, logs)
    server = start_gunicorn(env, port, logs, args.workers, args.threads)
    import requests

    try:
        ready_s = wait_until(
            lambda: requests.get(f"{base}/api/photos/search/?q=warm", timeout=10).status_code == 200,
            300,
            "gunicorn",
            server,
        )
        wait_until(lambda: "ready." in (logs / "worker.log").read_text(), 300, "the Celery worker", worker)
        # One of each kind from every worker thread before the clock starts (not counted).
        warm = Record()
        end = time.perf_counter() + 5
        threads = [
            threading.Thread(target=client, args=(base, args.mix, ids, photos, time.perf_counter(), end, warm, -i))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        load_before = loadavg()
        record = Record()
        uploaded: dict[int, float] = {}
        embedded: dict[int, float] = {}
        stop_watch = threading.Event()
        watcher = threading.Thread(target=watch_embedding, args=(uploaded, embedded, stop_watch))
        watcher.start()
        print(f"Load: {args.clients} clients for {args.duration:.0f} s, {args.uploads_per_s}/s uploads...", flush=True)
        start = time.perf_counter()
        end = start + args.duration
        threads = [
            threading.Thread(target=client, args=(base, args.mix, ids, photos, start, end, record, args.seed + i))
            for i in range(args.clients)
        ]
        if args.uploads_per_s > 0:
            threads.append(
                threading.Thread(
                    target=uploader, args=(base, args.uploads_per_s, uploads, start, end, record, uploaded)
                )
            )
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ran = time.perf_counter() - start
        load_after = loadavg()

        settle_start = time.perf_counter()
        while time.perf_counter() - settle_start < args.settle and len(embedded) < len(uploaded):
            time.sleep(1)
        stop_watch.set()
        watcher.join()
        settled_s = time.perf_counter() - settle_start
        states = Counter(Photo.objects.filter(pk__in=list(uploaded)).values_list("embedding_status", flat=True))
    finally:
        server_status = stop(server)
        worker_status = stop(worker)

    lags = sorted((embedded[pk] - at) for pk, at in uploaded.items() if pk in embedded)
    summary = summarise(record, ran)
    lost = len(uploaded) - states.get("embedded", 0)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "config": {
            "clients": args.clients,
            "duration_s": round(ran, 1),
            "mix": args.mix,
            "uploads_per_s": args.uploads_per_s,
            "gunicorn": gunicorn_settings(logs / "gunicorn.log", args.workers, args.threads),
            "database": database,
            "gunicorn_ready_s": round(ready_s, 1),
        },
        "requests": summary,
        "uploads": {
            "saved": len(uploaded),
            "embedded": states.get("embedded", 0),
            "states": dict(states),
            "lost": lost,
            "settle_s": round(settled_s, 1),
            "embedded_within_s": {
                "p50": round(lags[len(lags) // 2], 1) if lags else None,
                "p95": round(lags[min(len(lags) - 1, round(0.95 * (len(lags) - 1)))], 1) if lags else None,
                "max": round(lags[-1], 1) if lags else None,
            },
        },
        "server_log": server_log_counts(logs),
        "exit_status": {"gunicorn": server_status, "worker": worker_status},
        "logs": str(logs),
    }
    print()
    print(table(summary))
    u = result["uploads"]
    print(
        f"\nUploads: {u['saved']} saved, {u['embedded']} embedded, {lost} lost "
        f"(states {u['states']}); embedded within p50 {u['embedded_within_s']['p50']} s, "
        f"p95 {u['embedded_within_s']['p95']} s, max {u['embedded_within_s']['max']} s (1 s polls)"
    )
    print(f"Server log: {result['server_log']}; exit status {result['exit_status']}")
    print(f"Load average before {load_before}, after {load_after}; {result['machine']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {args.json}")


def gunicorn_settings(log: Path, workers: int | None, threads: int | None) -> dict[str, Any]:
    """The config's workers and threads as the server ran them (read back from its config file)."""
    namespace: dict[str, Any] = {}
    exec((EXAMPLE / "gunicorn.conf.py").read_text(), namespace)  # noqa: S102 - our own config file
    return {
        "config": "example_project/gunicorn.conf.py",
        "workers": workers or namespace["workers"],
        "threads": threads or namespace["threads"],
        "worker_class": namespace["worker_class"],
        "preload_app": namespace["preload_app"],
    }


def machine() -> str:
    try:
        from benchmarks.machine import describe

        return describe()
    except Exception:  # noqa: BLE001
        return f"{platform.processor()} {os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
