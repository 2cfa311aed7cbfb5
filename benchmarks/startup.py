"""Seconds from process start to the first answers, and peak memory, with a cold and a warm model cache.

Three kinds of process, each started fresh:

* web: the example site's WSGI application (``example_project.wsgi``) called with a word
  search (``GET /api/photos/search/?q=...``), then a search by photo (``POST`` of an image);
* worker: ``celery -A example_project worker -c 1`` on Redis, until its pool process has
  loaded the models (then it embeds, or answers, at once);
* CLI: ``manage.py semantic_search "words"`` and ``manage.py semantic_search --image PATH``.

"cold": ``MODEL_CACHE_DIR`` empty (class vectors encoded and the query model exported in
the process); "warm": filled first by ``manage.py semantic_images_prepare`` (timed too).
The database is a throwaway one on the test server, with no rows (the query still runs).

    python benchmarks/startup.py [--json benchmarks/results/startup.json]

Needs Redis on 127.0.0.1:6379 for the worker (``--kinds web,cli`` leaves it out). Peak RSS is
read in each process (``VmHWM``); the web process also reports it right after the word search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# The web process: times are reported against the process's own start (``/proc/self/stat``).
WEB = r"""
import io, json, os, resource, sys, time
def since_start():
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")
def cpu_s():  # user + system seconds of this process: what the start costs, whatever the load
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 2)
def peak_mib():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
def call(app, method, path, query="", body=b"", content_type=""):
    from wsgiref.util import setup_testing_defaults
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
               "HTTP_HOST": "127.0.0.1", "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type,
               "wsgi.input": io.BytesIO(body)}
    setup_testing_defaults(environ)
    status = []
    out = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), (status, out[:500])
from example_project.wsgi import application
report = {"import_s": round(since_start(), 2)}
call(application, "GET", "/api/photos/search/", "q=a+cup+of+coffee")
report.update(text_s=round(since_start(), 2), text_cpu_s=cpu_s(), text_peak_mib=peak_mib())
report["torch_after_text"] = "torch" in sys.modules
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
with open(sys.argv[1], "rb") as fh:
    body = encode_multipart(BOUNDARY, {"image": fh})
call(application, "POST", "/api/photos/search/", body=body, content_type=MULTIPART_CONTENT)
report.update(image_s=round(since_start(), 2), image_cpu_s=cpu_s(), image_peak_mib=peak_mib())
print(json.dumps(report))
"""


# Runs a command's Python entry point in this process, then reports its own peak RSS: ``wait4``'s
# ru_maxrss would include the benchmark process itself, whose pages the child had before ``exec``.
PEAK = r"""
import atexit, runpy, sys
def report():
    peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
    print(f"PEAK_MIB {peak}", file=sys.stderr)
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def peak_of(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of ``python SCRIPT ARGS...`` run fresh."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK, *command], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"{command} failed:\n{proc.stderr[-3000:]}")
    peak = int(proc.stderr.rsplit("PEAK_MIB", 1)[1].split()[0])
    return seconds, peak, proc.stdout


def web(env: dict[str, str], image: Path) -> dict:
    script = Path(env["XDG_CACHE_HOME"]).parent / "web.py"
    script.write_text(WEB)
    _, peak, out = peak_of([str(script), str(image)], env, ROOT / "example_project")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_mib": peak}


def cli(env: dict[str, str], image: Path, cold: bool) -> dict:
    """Two calls; on a cold cache each gets an empty one (the image call would find the text call's files)."""
    manage = ["manage.py", "semantic_search", "--model", "photos.Photo"]
    home = Path(env["XDG_CACHE_HOME"])
    text_env = {**env, "XDG_CACHE_HOME": str(home / "text")} if cold else env
    image_env = {**env, "XDG_CACHE_HOME": str(home / "image")} if cold else env
    text_s, text_peak, _ = peak_of([*manage, "a cup of coffee"], text_env, ROOT / "example_project")
    image_s, image_peak, _ = peak_of([*manage, "--image", str(image)], image_env, ROOT / "example_project")
    return {
        "text_s": round(text_s, 2),
        "text_peak_mib": text_peak,
        "image_s": round(image_s, 2),
        "image_peak_mib": image_peak,
    }


def pool_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return found


def worker(app: Any, database: str, cache_home: str, log_dir: Path) -> dict:
    """A real Celery worker: seconds to ready and to models loaded, peak RSS of its pool process."""
    from tests.celery_worker import Worker, cleanup_keys

    os.environ["XDG_CACHE_HOME"] = cache_home  # the Worker helper copies this process's environment
    started = time.time()
    proc = Worker("startup-bench", database, {"DEVICE": "cpu"}, log_dir)
    try:
        proc.wait_ready(300)
        ready = time.time() - started
        info = proc.wait_loaded(app, 600)
        peaks = []
        for child in pool_children(proc.process.pid):
            status = Path(f"/proc/{child}/status").read_text()
            peaks.append(int(status.split("VmHWM:")[1].split()[0]) // 1024)
    finally:
        proc.stop()
        cleanup_keys()
    return {"ready_s": round(ready, 2), "loaded_s": round(info["loaded_at"] - started, 2), "pool_peak_mib": max(peaks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--kinds", default="web,cli,worker", help="which processes (the worker needs Redis)")
    parser.add_argument("--states", default="cold,warm", help="which cache states")
    parser.add_argument("--warm-home", type=Path, help="XDG_CACHE_HOME whose cache to reuse as the warm one")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    from benchmarks.machine import describe
    from photos.samples import sample_photo_paths
    from tests.celery_worker import database_url

    connection.settings_dict["TEST"]["NAME"] = "startup_bench"
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    database = database_url(connection.settings_dict)
    image = next(p for p in sample_photo_paths() if p.stem == "coffee")
    report: dict = {"machine": describe(), "nproc": os.cpu_count(), "runs": {}}
    from example_project.celery import app
    from tests.celery_worker import BROKER_OPTIONS, REDIS_URL, RESULT_OPTIONS, configured_app

    broker = {"broker_url": REDIS_URL, "result_backend": REDIS_URL}
    broker.update(broker_transport_options=BROKER_OPTIONS, result_backend_transport_options=RESULT_OPTIONS)
    try:
        with tempfile.TemporaryDirectory(prefix="startup-bench-") as scratch, configured_app(app, **broker):
            base = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_project")]),
                "DJANGO_SETTINGS_MODULE": "tests.settings",
                "DATABASE_URL": database,
            }
            warm = args.warm_home or Path(scratch) / "warm"  # filled once by the deploy command, then only read
            for state in args.states.split(","):
                if state == "warm":
                    warm.mkdir(exist_ok=True)
                    env = {**base, "XDG_CACHE_HOME": str(warm)}
                    seconds, peak, _ = peak_of(["manage.py", "semantic_images_prepare"], env, ROOT / "example_project")
                    report["runs"]["prepare"] = {"seconds": round(seconds, 2), "peak_mib": peak}
                    print(f"prepare    {json.dumps(report['runs']['prepare'])}", flush=True)
                for kind in args.kinds.split(","):
                    home = warm if state == "warm" else Path(scratch) / f"cold-{kind}"
                    home.mkdir(exist_ok=True)
                    env = {**base, "XDG_CACHE_HOME": str(home)}
                    if kind == "web":
                        result = web(env, image)
                    elif kind == "cli":
                        result = cli(env, image, cold=state == "cold")
                    else:
                        result = worker(app, database, str(home), Path(scratch))
                    report["runs"][f"{kind} {state}"] = result
                    print(f"{kind:6} {state:4} {json.dumps(result)}", flush=True)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(report["machine"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
