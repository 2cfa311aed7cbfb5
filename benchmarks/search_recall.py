"""Recall@10 and SQL latency against ``hnsw.ef_search``, per query, to find the queries an
index walk misses; optionally on a table it loads and an index it builds itself.

    SEMANTIC_IMAGES_PGDATA=<the run's data folder> PYTHONPATH=.:example_project \\
        python benchmarks/search_recall.py --ef-search 200 400 800 1000 --json out.json

On the table a ``search.py`` run left behind (no reload, no index build), or with
``--rows N``: the table emptied and refilled with ``search.py``'s N synthetic rows (the
same vectors, the same seed; binary COPY), ``--storage halfvec`` converting the column, and
the index built with ``--m`` and ``--ef-construction`` (also given alone: the index rebuilt
on the table as it is). ``--measure-at EF`` then runs ``search.py``'s whole measurement
(the endpoint for new and repeated words, the exact scan, the ``--filter-fraction``
search) with ``HNSW_EF_SEARCH`` at EF.

The index is loaded into shared buffers first. The exact top 10s come from an exact
scan of the column as it is now (a halfvec column's: its exact top 10s matched the
float32 ones in every ``search.py --halfvec`` run so far).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import search  # noqa: E402 - sets up the paths and environment first


def column_type() -> tuple[int, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), format_type(atttypid, atttypmod) FROM photos_photo, pg_attribute "
            "WHERE attrelid = 'photos_photo'::regclass AND attname = 'embedding_semantic' GROUP BY 2"
        )
        rows, column = cursor.fetchone()
    return rows, column


def prepare(args: argparse.Namespace, opts: search.Options) -> dict[str, Any]:
    """Load ``--rows``, convert to ``--storage``, build the index: what each took."""
    from django.db import connection

    from photos.models import Photo

    table = search.quoted(Photo._meta.db_table)
    done: dict[str, Any] = {}
    if args.rows:
        from django_semantic_images.encoders import get_encoder

        encoder = get_encoder()
        encoder.ensure_loaded()
        label_vectors = encoder.label_vectors  # the default encoder's (ConSE)
        rng = np.random.default_rng(args.rows)  # search.run_size's seed: the same rows
        start = time.perf_counter()
        vectors = search.synthetic_vectors(args.rows, label_vectors, rng)
        done["generate_s"] = round(time.perf_counter() - start, 2)
        done.update(search.fill_table(args.rows, vectors, rng, opts, build=False))
        del vectors
        # COPY registered pgvector's types on the connection: a halfvec column would then reach
        # the model's VectorField as a HalfVector object, which it cannot read (a new connection
        # reads the text form).
        connection.close()
    rows, column = column_type()
    dims = int(column.split("(")[1].rstrip(")"))
    if args.storage and not column.startswith(args.storage):
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {search.quoted(search.SEM_INDEX)}")
            search.log(f"converting the column to {args.storage}")
            start = time.perf_counter()
            cursor.execute(f"ALTER TABLE {table} ALTER COLUMN embedding_semantic TYPE {args.storage}({dims})")
            done["convert_s"] = round(time.perf_counter() - start, 2)
    if args.rows or args.m is not None or args.ef_construction is not None:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {search.quoted(search.SEM_INDEX)}")
        storage = column_type()[1].split("(")[0]
        done.update(search.build_index(storage, opts))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[200, 400, 800, 1000])
    parser.add_argument("--shared-buffers", help="as the run that loaded the table had it (no restart)")
    parser.add_argument("--rows", type=int, help="empty the table and load this many synthetic rows first")
    parser.add_argument("--storage", choices=["vector", "halfvec"], help="convert the column to this first")
    parser.add_argument("--m", type=int, help="rebuild the index with this m (default with --rows: 16)")
    parser.add_argument("--ef-construction", type=int, help="... and this ef_construction (default: 64)")
    parser.add_argument("--maintenance-work-mem", default="3GB", help="for the index build")
    parser.add_argument("--parallel-workers", type=int, default=1, help="max_parallel_maintenance_workers")
    parser.add_argument("--filter-fraction", type=float, default=0.0, help="with --rows: rows an owner gets")
    parser.add_argument("--repeats", type=int, default=1, help="passes over the queries per ef_search timing")
    parser.add_argument("--measure-at", type=int, help="then search.py's whole measurement at this ef_search")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.shared_buffers:
        os.environ["SEMANTIC_IMAGES_PG_SHARED_BUFFERS"] = args.shared_buffers
    opts = search.Options(
        repeats=3,
        filter_fraction=args.filter_fraction,
        maintenance_work_mem=args.maintenance_work_mem,
        parallel_workers=args.parallel_workers,
        m=16 if args.m is None else args.m,
        ef_construction=64 if args.ef_construction is None else args.ef_construction,
    )
    search.setup_django()
    from django.core.management import call_command
    from django.db import connection

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import get_encoder
    from photos.models import Photo

    call_command("migrate", verbosity=0)
    from benchmarks.machine import describe as describe_machine

    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/search_recall.py", *sys.argv[1:]]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "uptime_load_before": [round(x, 2) for x in os.getloadavg()],
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    report["prepared"] = prepare(args, opts)
    save()
    encoder = get_encoder()
    vectors = {q: encoder.encode_text(q) for q in search.QUERIES}
    rows, column = column_type()
    with connection.cursor() as cursor:
        # A restarted server starts with empty shared buffers: load the index, as search.py does.
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        cursor.execute("SELECT pg_prewarm(%s)", [search.SEM_INDEX])
        cursor.execute("SELECT pg_relation_size(%s), pg_get_indexdef(%s::regclass)", [search.SEM_INDEX] * 2)
        index_bytes, indexdef = cursor.fetchone()
    search.log(f"{rows:,} rows, {column}: exact top 10s")
    exact = {q: set(search.top_ids(vectors[q], True)) for q in search.QUERIES}
    report.update(
        {
            "rows": rows,
            "column": column,
            "index": indexdef,
            "index_mib": round(index_bytes / 2**20, 1),
            "published": Photo.objects.filter(published=True).count(),
            "sweep": [],
        }
    )
    in_force = semantic_settings.HNSW_EF_SEARCH
    for ef in args.ef_search:
        semantic_settings.HNSW_EF_SEARCH = ef  # what the queryset sets with SET LOCAL
        per_query: dict[str, float] = {}
        samples = []
        for _ in range(args.repeats):
            for q in search.QUERIES:
                start = time.perf_counter()
                found = search.top_ids(vectors[q], False)
                samples.append(time.perf_counter() - start)
                per_query[q] = len(set(found) & exact[q]) / 10
        db_ms = [search.execution_ms(vectors[q], False) for q in search.QUERIES]
        report["sweep"].append(
            {
                "ef_search": ef,
                "recall_at_10": round(float(np.mean(list(per_query.values()))), 3),
                "recall_at_10_min": min(per_query.values()),
                "queryset_vector": search.percentiles(samples),
                "db_execution": search.summary(db_ms),
                "below_0_9": {q: r for q, r in per_query.items() if r < 0.9},
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
        search.log(f"ef_search {ef}: recall@10 {report['sweep'][-1]['recall_at_10']}")
        save()
    semantic_settings.HNSW_EF_SEARCH = in_force
    if args.measure_at:
        search.override_settings({"HNSW_EF_SEARCH": args.measure_at})
        search.EF_SEARCH_IN_FORCE[0] = args.measure_at
        search.EF_SEARCH_SWEEP[:] = [args.measure_at]
        owner = search.bench_owner() if args.filter_fraction else None
        measured = search.measure(rows, vectors, opts, owner)
        measured.pop("_exact_ids")
        report["measured_at_ef_search"] = {"ef_search": args.measure_at, **measured}
    report["uptime_load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))
    save()


if __name__ == "__main__":
    main()
