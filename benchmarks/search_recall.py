"""Recall@10 and SQL latency against ``hnsw.ef_search`` on the table a ``search.py`` run left
behind (no reload, no index build): per query, to find the queries an index walk misses.

    SEMANTIC_IMAGES_PGDATA=<the run's data folder> PYTHONPATH=.:example_project \\
        python benchmarks/search_recall.py --ef-search 200 400 800 1000 --json out.json

The index is loaded into shared buffers first. The exact top 10s come from an exact
scan of the column as it is now (after ``search.py --halfvec``: the halfvec column, whose
exact top 10s matched the float32 ones in every run so far).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import search  # noqa: E402 - sets up the paths and environment first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[200, 400, 800, 1000])
    parser.add_argument("--shared-buffers", help="as the run that loaded the table had it (no restart)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.shared_buffers:
        os.environ["SEMANTIC_IMAGES_PG_SHARED_BUFFERS"] = args.shared_buffers
    search.setup_django()
    from django.db import connection

    from django_semantic_images.encoders import get_encoder
    from photos.models import Photo

    encoder = get_encoder()
    vectors = {q: encoder.encode_text(q) for q in search.QUERIES}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), format_type(atttypid, atttypmod) FROM photos_photo, pg_attribute "
            "WHERE attrelid = 'photos_photo'::regclass AND attname = 'embedding_semantic' GROUP BY 2"
        )
        rows, column = cursor.fetchone()
        # A restarted server starts with empty shared buffers: load the index, as search.py does.
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        cursor.execute("SELECT pg_prewarm(%s)", [search.SEM_INDEX])
    search.log(f"{rows:,} rows, {column}: exact top 10s")
    exact = {q: set(search.top_ids(vectors[q], True)) for q in search.QUERIES}
    report = {"rows": rows, "column": column, "published": Photo.objects.filter(published=True).count(), "sweep": []}
    from django_semantic_images.conf import semantic_settings

    in_force = semantic_settings.HNSW_EF_SEARCH
    for ef in args.ef_search:
        semantic_settings.HNSW_EF_SEARCH = ef  # what the queryset sets with SET LOCAL
        per_query, samples = {}, []
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
            }
        )
        search.log(f"ef_search {ef}: recall@10 {report['sweep'][-1]['recall_at_10']}")
    semantic_settings.HNSW_EF_SEARCH = in_force
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
