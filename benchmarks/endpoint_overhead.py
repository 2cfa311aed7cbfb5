"""The search endpoint's time besides encoding and PostgreSQL, two checkouts side by side.

    SEMANTIC_IMAGES_PGDATA=/tmp/endpoint-pg PYTHONPATH=.:example_project OMP_NUM_THREADS=1 \\
        python benchmarks/endpoint_overhead.py --rows 10000 --before /work/main --passes 8 --json out.json

Times ``GET /api/photos/search/?q=...&limit=10`` as ``benchmarks/search.py`` does (DRF's
test client in the process, ``DEBUG`` off, a persistent connection, an anonymous caller)
in two long-lived worker processes, one per checkout (``--before``, default this one, and
``--after``, default this one), over the same table: pass by pass in turn (ABBA), so that
both meet the same machine. Each pass asks the 40 queries of ``search.py`` as new words
(the query cache emptied first) and again as repeated words, and times the encoding alone;
one request of each kind per pass is also run with Django's query log, which gives the SQL
round trips per request (BEGIN, the HNSW settings, the query, COMMIT ...).

``--rows N`` first empties the table and loads ``search.py``'s N synthetic rows and index, with
the sample photos in ``MEDIA_ROOT`` (give the same ``MEDIA_ROOT`` to a later run without ``--rows``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def worker(root: Path) -> None:
    """Answer ``pass`` lines on stdin with one JSON line of samples, using ``root``'s package."""
    sys.path[:0] = [str(root), str(root / "example_project")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection, connections

    # As search.py: persistent connections, throttling on at a rate never reached (set before
    # DRF reads its settings).
    connections["default"].settings_dict["CONN_MAX_AGE"] = None
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"semantic_search": "1000000/min", "semantic_image_search": "1000/min"},
    }
    if os.environ.get("ENDPOINT_EF_SEARCH"):  # --ef-search
        from django_semantic_images.conf import semantic_settings

        settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "HNSW_EF_SEARCH": int(os.environ["ENDPOINT_EF_SEARCH"])}
        semantic_settings.reload()  # it may have been read while the apps loaded
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    import django_semantic_images
    from django_semantic_images.encoders import get_encoder

    queries = json.loads(os.environ["ENDPOINT_QUERIES"])
    encoder = get_encoder()
    encoder.ensure_loaded()
    client = APIClient()

    def get(q: str) -> None:
        response = client.get("/api/photos/search/", {"q": q, "limit": 10})
        assert response.status_code == 200 and len(response.json()["results"]) == 10, response.content

    def new(q: str) -> None:
        encoder.clear_query_cache()
        get(q)

    def encode(q: str) -> None:
        encoder.clear_query_cache()
        encoder.encode_text(q)

    for q in queries[:3]:  # models, the calibration sample, thumbnails, the row estimate
        new(q)
    print(json.dumps({"package": django_semantic_images.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "pass":
            break
        samples: dict[str, list[float]] = {"endpoint_new": [], "endpoint_repeated": [], "encoding": []}
        for q in queries:
            for name, fn in (("endpoint_new", new), ("endpoint_repeated", get), ("encoding", encode)):
                start = time.perf_counter()
                fn(q)
                samples[name].append(time.perf_counter() - start)
        sql = {}
        for name, fn in (("new", new), ("repeated", get)):
            with CaptureQueriesContext(connection) as captured:
                fn(queries[0])
            sql[name] = [entry["sql"][:60] for entry in captured.captured_queries]
        print(json.dumps({"samples": samples, "sql": sql, "load": os.getloadavg()[0]}), flush=True)


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2), "n": len(ms)}


def revision(root: Path) -> dict[str, Any]:
    """The checkout's commit, and whether it has changes not committed."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain"))}


def load_rows(rows: int) -> dict[str, Any]:
    """``search.py``'s ``rows`` synthetic rows and HNSW index (this checkout's code)."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    from benchmarks import search

    search.setup_django()
    from django.core.management import call_command
    from django.db import connection

    from django_semantic_images.encoders import get_encoder

    call_command("migrate", verbosity=0)
    encoder = get_encoder()
    encoder.ensure_loaded()
    rng = np.random.default_rng(rows)
    vectors = search.synthetic_vectors(rows, encoder.label_vectors, rng)
    done = search.fill_table(rows, vectors, rng, search.Options())
    connection.close()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, default=HERE, help="the checkout measured first (e.g. /work/main)")
    parser.add_argument("--after", type=Path, default=HERE, help="the checkout measured second (default: this one)")
    parser.add_argument("--rows", type=int, help="empty the table and load this many synthetic rows first")
    parser.add_argument("--ef-search", type=int, help='HNSW_EF_SEARCH for both sides (default: the setting, "auto")')
    parser.add_argument("--passes", type=int, default=8, help="passes over the 40 queries per checkout")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.rows:
        print(json.dumps(load_rows(args.rows)), file=sys.stderr)
    if args.passes < 1:
        return
    sys.path.insert(0, str(HERE))
    from benchmarks.search import QUERIES

    env = {**os.environ, "ENDPOINT_QUERIES": json.dumps(QUERIES), "ENDPOINT_EF_SEARCH": str(args.ef_search or "")}
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    procs = {}
    for name, root in sides.items():
        env_side = {**env, "PYTHONPATH": f"{root}{os.pathsep}{root / 'example_project'}"}
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(root)],
            cwd=root,
            env=env_side,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/endpoint_overhead.py", *sys.argv[1:]]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "uptime_load_before": [round(x, 2) for x in os.getloadavg()],
        "sides": {},
    }
    collected: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
    sql: dict[str, Any] = {}
    loads = []
    for name, proc in procs.items():
        assert proc.stdout is not None
        report["sides"][name] = {
            "root": str(sides[name]),
            **revision(sides[name]),
            **json.loads(proc.stdout.readline()),
        }
    order = list(sides)
    for i in range(args.passes):
        for name in order if i % 2 == 0 else order[::-1]:
            proc = procs[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("pass\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            for key, values in answer["samples"].items():
                collected[name].setdefault(key, []).extend(values)
            sql[name] = answer["sql"]
            loads.append(answer["load"])
        print(f"pass {i + 1}/{args.passes}, load {loads[-1]:.1f}", file=sys.stderr, flush=True)
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    for name in sides:
        side = report["sides"][name]
        side.update({key: summary(values) for key, values in collected[name].items()})
        side["round_trips_new"] = len(sql[name]["new"])
        side["round_trips_repeated"] = len(sql[name]["repeated"])
        side["sql_repeated"] = sql[name]["repeated"]
    report["load_1min_during"] = [min(loads), max(loads)]
    report["uptime_load_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
