"""Text-search latency through the REST endpoint and the bare queryset, HNSW recall@10
against an exact scan, and the speed-up over that scan, at 10k and 100k rows.

    PYTHONPATH=.:example_project OMP_NUM_THREADS=1 python benchmarks/search.py [--sizes 10000 100000]

Runs the example site's ``PhotoSearchViewSet`` (anonymous caller: published photos
only) on its own embedded PostgreSQL (data in the temp folder) (or ``DATABASE_URL``),
with Django's test client, ``DEBUG`` off and persistent database connections, as a
production site would have. The table is emptied and refilled for each size, and
its index and rows are loaded into shared buffers (``pg_prewarm``), as on a server
that has been answering searches for a while.

The rows are synthetic but shaped like real ConSE vectors: each is the
probability-weighted mix of 10 of the encoder's 1,000 ImageNet label embeddings
(Dirichlet weights) plus a little noise, 90% of them published. Rows go in with
binary COPY; the HNSW index is built afterwards. Queries are real sentences,
encoded by MiniLM on every request (the query cache is emptied first), through the
query runtime the settings choose (``--query-runtime``, ``--query-precision``);
``--compare-precision`` also times the endpoint with the other precision (int8 or
float32 weights), interleaved with the first, so that both see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", str(Path(tempfile.gettempdir()) / "semantic-images-bench-pgdata"))
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="semantic-images-bench-"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DJANGO_DEBUG", "0")

QUERIES = [
    "a red bicycle leaning against a wall",
    "a cat sleeping on a sofa",
    "a cup of coffee on a table",
    "a rocket launching into the sky",
    "an astronaut in a space suit",
    "a dog catching a frisbee",
    "a bowl of fruit",
    "a sailing boat on the sea",
    "a snowy mountain at sunrise",
    "a plate of pasta",
    "children playing football in a park",
    "an old steam train",
    "a violin on a chair",
    "a field of sunflowers",
    "a lighthouse on a cliff",
    "a horse running in a meadow",
    "a close-up of a butterfly",
    "a city street at night",
    "a bridge over a river",
    "a laptop on a desk",
    "a pizza fresh from the oven",
    "a motorcycle parked outside",
    "a bird sitting on a branch",
    "a wooden cabin in the forest",
    "a glass of red wine",
    "a tiger in the jungle",
    "a tennis racket",
    "a hot air balloon",
    "a plate of sushi",
    "a church with a tall tower",
    "a teddy bear on a bed",
    "a tractor in a field",
    "a jellyfish in the ocean",
    "a pair of running shoes",
    "a chess board",
    "an umbrella in the rain",
    "a castle on a hill",
    "a vase of tulips",
    "a fire truck",
    "a coral reef",
]
PUBLISHED_SHARE = 0.9
EF_SEARCH_SWEEP = (40, 100, 200, 400)
EF_SEARCH_IN_FORCE = [200]  # set in main(): the setting's, or the connection's
CONNECTION_OPTIONS: dict[str, str] = {}  # the HNSW parameters given per connection, if so
COMPARE_PRECISION = [False]  # set in main(): also time the endpoint with QUERY_INT8 flipped, interleaved
SEM_INDEX = "photos_photo_sem_0cdd5aa8"


def setup_django() -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    # Persistent connections, as on a production site (the example settings close them per request).
    connections["default"].settings_dict["CONN_MAX_AGE"] = None
    # Throttling stays on, with a rate the benchmark never reaches.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"semantic_search": "1000000/min", "semantic_image_search": "1000/min"},
    }


def synthetic_vectors(n: int, label_vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ConSE-shaped unit vectors: Dirichlet mixes of 10 label embeddings plus noise."""
    from django_semantic_images.encoders.base import l2_normalize

    out = np.empty((n, label_vectors.shape[1]), np.float32)
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        classes = rng.integers(0, len(label_vectors), size=(m, 10))
        weights = rng.dirichlet(np.full(10, 0.3), size=m).astype(np.float32)
        mixed = np.einsum("nk,nkd->nd", weights, label_vectors[classes])
        mixed += rng.normal(scale=0.02, size=mixed.shape).astype(np.float32)
        out[start : start + m] = l2_normalize(mixed)
    return out


def fill_table(n: int, vectors: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Empty the photo table, COPY ``n`` rows in, build the HNSW index; timings in seconds."""
    from django.db import connection
    from django.utils import timezone
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from photos.models import Photo

    table = connection.ops.quote_name(Photo._meta.db_table)
    index = connection.ops.quote_name(SEM_INDEX)
    published = rng.random(n) < PUBLISHED_SHARE
    timings = {}
    connection.ensure_connection()
    register_vector(connection.connection)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} RESTART IDENTITY")
        cursor.execute(f"DROP INDEX IF EXISTS {index}")
        now = timezone.now()
        columns = (
            "image",
            "title",
            "alt_text",
            "published",
            "created_at",
            "embedding_semantic",
            "embedding_encoder",
            "embedding_hash",
            "embedding_status",
            "embedding_error",
            "embedding_labels",
        )
        types = [
            "varchar",
            "varchar",
            "text",
            "bool",
            "timestamptz",
            "vector",
            "varchar",
            "varchar",
            "varchar",
            "text",
            "jsonb",
        ]
        quoted_columns = ", ".join(connection.ops.quote_name(c) for c in columns)
        start = time.perf_counter()
        with cursor.cursor.copy(f"COPY {table} ({quoted_columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for i in range(n):
                copy.write_row(
                    (
                        f"photos/synthetic-{i}.jpg",
                        "",
                        "",
                        bool(published[i]),
                        now,
                        vectors[i],
                        "synthetic",
                        "",
                        "embedded",
                        "",
                        Jsonb([]),
                    )
                )
        timings["copy_s"] = time.perf_counter() - start
        start = time.perf_counter()
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute(
            f"CREATE INDEX {index} ON {table} USING hnsw (embedding_semantic vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        timings["index_build_s"] = time.perf_counter() - start
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        cursor.execute("SELECT pg_prewarm(%s), pg_prewarm(%s)", [index, table])
    return timings


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def timed(fns: dict, repeats: int, sparse: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, interleaved (query by query, each in turn) so
    that the machine's slow moments fall on all of them alike. A name in ``sparse`` runs
    in that many of the ``repeats`` passes only."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(repeats):
        for q in QUERIES:
            for name, fn in fns.items():
                if rep >= (sparse or {}).get(name, repeats):
                    continue
                start = time.perf_counter()
                fn(q)
                samples[name].append(time.perf_counter() - start)
    return samples


def top_ids(vector: np.ndarray, exact: bool, k: int = 10, ef_search: int | None = None) -> list[int]:
    """The visible top-k for ``vector``: through the HNSW index (at ``ef_search``, default
    the setting), or by an exact scan."""
    from django.db import connection, transaction

    from django_semantic_images.query import apply_hnsw_settings
    from photos.models import Photo

    with transaction.atomic():
        apply_hnsw_settings("default")
        with connection.cursor() as cursor:
            if exact:
                cursor.execute("SET LOCAL enable_indexscan = off")
            elif ef_search:
                cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(ef_search)])
        qs = Photo.objects.filter(published=True).semantic_search(vector)[:k]
        # iterator() keeps the SET LOCAL above (evaluating the queryset would set its own).
        return list(qs.values_list("pk", flat=True).iterator())


def execution_ms(vector: np.ndarray, exact: bool) -> float:
    """PostgreSQL's own execution time for the visible top 10 (EXPLAIN ANALYZE), in ms."""
    from django.db import connection, transaction

    from photos.models import Photo

    with transaction.atomic():
        if exact:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_indexscan = off")
        plan = Photo.objects.filter(published=True).semantic_search(vector)[:10].explain(analyze=True, format="json")
    return float(json.loads(plan)[0]["Execution Time"])


def run_size(n: int, label_vectors: np.ndarray, repeats: int) -> dict:
    from django.db import connection
    from rest_framework.test import APIClient

    from django_semantic_images.encoders import get_encoder
    from photos.models import Photo

    rng = np.random.default_rng(n)
    result: dict = {"rows": n, **fill_table(n, synthetic_vectors(n, label_vectors, rng), rng)}
    encoder = get_encoder()
    query_vectors = {q: encoder.encode_text(q) for q in QUERIES}
    client = APIClient()

    def endpoint_cached(q: str) -> None:
        response = client.get("/api/photos/search/", {"q": q, "limit": 10})
        assert response.status_code == 200 and len(response.json()["results"]) == 10, response.content

    # The encoder keeps recent query vectors; the main figures measure words never seen before.
    def endpoint(q: str) -> None:
        encoder.clear_query_cache()
        endpoint_cached(q)

    def text_encoding(q: str) -> None:
        encoder.clear_query_cache()
        assert encoder.encode_text(q).shape == (encoder.semantic_dimensions,)

    torch_text = getattr(encoder, "text", None)  # the ConSE encoder's torch MiniLM, for comparison

    from django_semantic_images.conf import semantic_settings

    int8 = bool(semantic_settings.QUERY_INT8)
    other = "float32" if int8 else "int8"

    def flipped(fn):
        """``fn`` with ``QUERY_INT8`` flipped for the call (the settings object's cached value, swapped)."""

        def run(q: str) -> None:
            semantic_settings.QUERY_INT8 = not int8
            try:
                fn(q)
            finally:
                semantic_settings.QUERY_INT8 = int8

        return run

    compare = {}
    if COMPARE_PRECISION[0]:
        compare = {f"endpoint_{other}": flipped(endpoint), f"text_encoding_{other}": flipped(text_encoding)}

    def text_encoding_torch(q: str) -> None:
        assert torch_text.encode([q]).shape == (1, encoder.semantic_dimensions)

    # The querysets return model instances without the vector columns, as the endpoint reads them.
    visible = Photo.objects.filter(published=True).defer("embedding_visual", "embedding_semantic")

    def queryset_text(q: str) -> None:
        encoder.clear_query_cache()
        assert len(list(visible.semantic_search(q)[:10])) == 10

    def queryset_vector(q: str) -> None:
        assert len(list(visible.semantic_search(query_vectors[q])[:10])) == 10

    def exact_vector(q: str) -> None:
        assert len(top_ids(query_vectors[q], exact=True)) == 10

    plan = Photo.objects.filter(published=True).semantic_search(query_vectors[QUERIES[0]])[:10].explain()
    result["plan_uses_hnsw"] = SEM_INDEX in plan
    for fn in (endpoint, queryset_text, queryset_vector, exact_vector, *compare.values()):  # warm caches, models
        fn(QUERIES[0])
    load_before = os.getloadavg()[0]
    # endpoint_repeated_query follows endpoint, which has just encoded the same words.
    fns = {
        "endpoint": endpoint,
        "endpoint_repeated_query": endpoint_cached,
        **{name: fn for name, fn in compare.items() if name.startswith("endpoint")},
        "text_encoding": text_encoding,
        **{name: fn for name, fn in compare.items() if name.startswith("text_encoding")},
        **({"text_encoding_torch": text_encoding_torch} if torch_text is not None else {}),
        "queryset_text": queryset_text,
        "queryset_vector": queryset_vector,
        "exact_scan_vector": exact_vector,
    }
    samples = timed(fns, repeats, sparse={"exact_scan_vector": max(1, repeats // 2)})
    result.update({name: percentiles(values) for name, values in samples.items()})
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    exact_p50, hnsw_p50 = result["exact_scan_vector"]["p50_ms"], result["queryset_vector"]["p50_ms"]
    result["speedup_vs_exact_p50"] = round(exact_p50 / hnsw_p50, 1)
    for name, exact in (("db_execution_hnsw", False), ("db_execution_exact", True)):
        ms = sorted(execution_ms(query_vectors[q], exact) for q in QUERIES)
        result[name] = {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}
    exact_ids = {q: set(top_ids(query_vectors[q], True)) for q in QUERIES}
    result["ef_search_sweep"] = []
    for ef in EF_SEARCH_SWEEP:
        recalls, samples = [], []
        for q in QUERIES:
            start = time.perf_counter()
            approx = top_ids(query_vectors[q], False, ef_search=ef)
            samples.append(time.perf_counter() - start)
            recalls.append(len(set(approx) & exact_ids[q]) / 10)
        result["ef_search_sweep"].append(
            {
                "ef_search": ef,
                "recall_at_10": round(float(np.mean(recalls)), 3),
                "recall_at_10_min": round(float(np.min(recalls)), 3),
                **percentiles(samples),
            }
        )
        if ef == EF_SEARCH_IN_FORCE[0]:
            result["recall_at_10"] = result["ef_search_sweep"][-1]["recall_at_10"]
            result["recall_at_10_min"] = result["ef_search_sweep"][-1]["recall_at_10_min"]
    connection.close()
    return result


def override_settings(overrides: dict) -> None:
    from django.conf import settings

    from django_semantic_images.conf import semantic_settings

    settings.SEMANTIC_IMAGES = {**getattr(settings, "SEMANTIC_IMAGES", {}), **overrides}
    semantic_settings.reload()


def per_connection() -> None:
    """Put the HNSW search parameters into the connection's startup options and turn the
    per-query SET LOCAL off (the tuning docs/settings.md describes)."""
    from django.db import connections

    from django_semantic_images.query import hnsw_session_settings

    pairs = dict(hnsw_session_settings())
    EF_SEARCH_IN_FORCE[0] = int(pairs["hnsw.ef_search"])
    CONNECTION_OPTIONS.update(pairs)
    conn = connections["default"]
    conn.close()
    options = conn.settings_dict.setdefault("OPTIONS", {})
    options["options"] = " ".join(f"-c {name}={value}" for name, value in pairs.items())
    keys = ("HNSW_EF_SEARCH", "HNSW_ITERATIVE_SCAN", "HNSW_MAX_SCAN_TUPLES", "HNSW_SCAN_MEM_MULTIPLIER")
    override_settings(dict.fromkeys(keys))


def query_runtime(encoder) -> str:
    """Which model encodes the search words: "onnxruntime", "onnxruntime int8" or "torch"."""
    from django_semantic_images.encoders.onnx_queries import OnnxQueryEncoder, configured_query_encoder

    text = getattr(encoder, "text", None)
    if text is None:
        return "torch"
    chosen = configured_query_encoder(text)
    if isinstance(chosen, OnnxQueryEncoder):
        return "onnxruntime int8" if chosen.int8 else "onnxruntime"
    return "torch"


def settings_debug() -> bool:
    from django.conf import settings

    return bool(settings.DEBUG)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5, help="passes over the 40 queries per measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--ef-search", type=int, help="override SEMANTIC_IMAGES['HNSW_EF_SEARCH'] for the run")
    parser.add_argument("--query-runtime", choices=["auto", "onnx", "torch"], help="override QUERY_RUNTIME")
    parser.add_argument(
        "--query-precision", choices=["int8", "float32"], help="override QUERY_INT8 (int8: True, float32: False)"
    )
    parser.add_argument(
        "--compare-precision",
        action="store_true",
        help="also time the endpoint and the encoding with the other QUERY_INT8, interleaved with the first",
    )
    parser.add_argument(
        "--hnsw-per-connection",
        action="store_true",
        help="set the HNSW search parameters once per connection (docs/settings.md) instead of per query",
    )
    args = parser.parse_args()
    setup_django()
    overrides = {
        "HNSW_EF_SEARCH": args.ef_search,
        "QUERY_RUNTIME": args.query_runtime,
        "QUERY_INT8": None if args.query_precision is None else args.query_precision == "int8",
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        override_settings(overrides)
    if args.hnsw_per_connection:
        per_connection()
    COMPARE_PRECISION[0] = args.compare_precision
    from django.core.management import call_command

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import get_encoder

    if not args.hnsw_per_connection:
        EF_SEARCH_IN_FORCE[0] = semantic_settings.HNSW_EF_SEARCH

    call_command("migrate", verbosity=0)
    encoder = get_encoder()
    encoder.ensure_loaded()
    label_vectors = getattr(encoder, "label_vectors", None)
    if label_vectors is None:  # another encoder: fall back to random directions
        label_vectors = np.random.default_rng(0).normal(size=(1000, encoder.semantic_dimensions)).astype(np.float32)
    from benchmarks.machine import describe as describe_machine

    report = {
        "machine": describe_machine(),
        "hnsw": {
            "m": 16,
            "ef_construction": 64,
            "ef_search": EF_SEARCH_IN_FORCE[0],
            "set": "per connection" if args.hnsw_per_connection else "per query (SET LOCAL)",
            "iterative_scan": CONNECTION_OPTIONS.get("hnsw.iterative_scan", semantic_settings.HNSW_ITERATIVE_SCAN),
        },
        "query_runtime": query_runtime(encoder),
        "debug": settings_debug(),
        "published_share": PUBLISHED_SHARE,
        "queries": len(QUERIES),
        "repeats": args.repeats,
        "sizes": [],
    }
    for n in args.sizes:
        print(f"-- {n:,} rows", file=sys.stderr, flush=True)
        report["sizes"].append(run_size(n, label_vectors, args.repeats))
        print(json.dumps(report["sizes"][-1]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
