"""The table a ``search.py`` / ``search_recall.py --rows N --filter-fraction 0.1`` run left:
ORDER BY distance against ORDER BY distance, id, LIMIT 11 and 21, without a filter and with the
owner filter, at ``EF`` (150); interleaved, each query in its own transaction with its settings.

    SEMANTIC_IMAGES_PGDATA=<that run's data folder> ROUNDS=4 python benchmarks/ties_1m.py
"""

import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", "/tmp/million-bench-pgdata")

import django  # noqa: E402
import numpy as np  # noqa: E402

django.setup()
from django.db import connection  # noqa: E402

c = connection.cursor()
c.execute("SELECT count(*), count(owner_id) FROM photos_photo")
print("rows, owned:", c.fetchone())
c.execute("SELECT owner_id FROM photos_photo WHERE owner_id IS NOT NULL LIMIT 1")
owner = c.fetchone()[0]
c.execute(
    "SELECT embedding_semantic::text FROM photos_photo TABLESAMPLE SYSTEM (0.05)"
    " WHERE embedding_semantic IS NOT NULL LIMIT 80"
)
rng = np.random.default_rng(3)
qs = []
for (text,) in c.fetchall():
    v = np.array([float(x) for x in text.strip("[]").split(",")])
    v += rng.normal(0, 0.3 / np.sqrt(len(v)), len(v))
    v /= np.linalg.norm(v)
    qs.append("[" + ",".join(f"{x:.6f}" for x in v) + "]")
EF = os.environ.get("EF", "150")
SETTINGS = (
    f"SELECT set_config('hnsw.ef_search','{EF}',true), set_config('hnsw.iterative_scan','strict_order',true),"
    " set_config('hnsw.max_scan_tuples','20000',true)"
)
base = "SELECT id, embedding_semantic <=> %s::vector AS d FROM photos_photo WHERE published {w} ORDER BY d{k} LIMIT {n}"
cases = [(w, n) for w in ("", f"AND owner_id = {owner}") for n in (11, 21)]
times = {}
for rnd in range(int(os.environ.get("ROUNDS", "3"))):
    for q in qs:
        for w, n in cases:
            order = [("distance", ""), ("distance, id", ", id")]
            if rnd % 2:
                order.reverse()
            for name, k in order:
                c.execute("BEGIN")
                c.execute(SETTINGS)
                t = time.perf_counter()
                c.execute(base.format(w=w, k=k, n=n), [q])
                c.fetchall()
                times.setdefault((bool(w), n, name), []).append((time.perf_counter() - t) * 1000)
                c.execute("COMMIT")
for (filt, n, name), v in sorted(times.items()):
    print(
        f"filter={filt!s:5} LIMIT {n:2} {name:13} p50 {statistics.median(v):6.2f} ms"
        f"  p90 {np.percentile(v, 90):6.2f} ms  n={len(v)}"
    )
c.execute("BEGIN")
c.execute(SETTINGS)
c.execute("EXPLAIN (COSTS OFF) " + base.format(w=cases[-1][0], k=", id", n=21), [qs[0]])
print("\n".join(re.sub(r"'\[[^]]*\]'", "q", r[0]) for r in c.fetchall()))
c.execute("COMMIT")
print("load", os.getloadavg())
