"""Text-search latency through the REST endpoint and the bare queryset, HNSW recall@10
against an exact scan, and the speed-up over that scan, from 10k to 1M rows.

    PYTHONPATH=.:example_project OMP_NUM_THREADS=1 python benchmarks/search.py [--sizes 10000 100000]
    ... --sizes 1000000 --halfvec --filter-fraction 0.1 --shared-buffers 3GB --plot docs/img/search-latency.png

Runs the example site's ``PhotoSearchViewSet`` (anonymous caller: published photos
only) on its own embedded PostgreSQL (a throwaway data folder in the temp folder,
``SEMANTIC_IMAGES_PGDATA``) (or ``DATABASE_URL``), with Django's test client, ``DEBUG``
off and persistent database connections, as a production site would have. The table
is emptied and refilled for each size, and its index is loaded into shared buffers
(``pg_prewarm``; the table into the OS cache), as on a server that has been answering
searches for a while.

The rows are synthetic but shaped like real ConSE vectors: each is the
probability-weighted mix of 10 of the encoder's 1,000 ImageNet label embeddings
(Dirichlet weights) plus a little noise, 90% of them published. Only the columns a
search reads are filled: the 1280-d visual vector stays NULL (its index is empty), which
keeps a million rows at about 2 GB; each row's image is one of the 12 sample photos, whose
thumbnails are made before the timing, so the endpoint reads each result's thumbnail name
from Django's cache, as a live site does once its thumbnails exist. Rows go in with binary COPY; the HNSW index is built
afterwards with ``--maintenance-work-mem`` and ``--parallel-workers``. Queries are real
sentences, encoded by MiniLM on every request (the query cache is emptied first), through
the query runtime the settings choose (``--query-runtime``, ``--query-precision``);
``--compare-precision`` also times the endpoint with the other precision (int8 or
float32 weights), interleaved with the first, so that both see the same machine.

``--filter-fraction 0.1`` gives 10% of the rows (all published) an owner and also times
``?owner=`` searches, which pgvector's iterative index scan serves
(``HNSW_ITERATIVE_SCAN``). ``--halfvec`` then converts the column to ``halfvec`` (what
``ImageEmbeddingField(halfvec=True)`` stores), rebuilds the index and measures again;
its recall is counted against the exact top 10 of the float32 vectors. Above 100k rows
an exact scan takes a second or more, so it is timed on ``--exact-queries`` (10) of
the 40 queries, once each; recall still uses all 40.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
EF_SEARCH_SWEEP = [40, 100, 200, 400]  # --ef-search-sweep; the ef_search in force is added
EF_SEARCH_IN_FORCE: list[Any] = [200]  # set in main(): the setting's ("auto": per size), or the connection's
AUTO_EF_SEARCH = [False]  # the setting is "auto": resolved per size
CONNECTION_OPTIONS: dict[str, str] = {}  # the HNSW parameters given per connection, if so
SEM_INDEX = "photos_photo_sem_0cdd5aa8"
LARGE = 100_000  # above this many rows the exact scan is timed on a subset of the queries
STARTED = time.perf_counter()


@dataclass
class Options:
    repeats: int = 5
    compare_precision: bool = False  # also time the endpoint with QUERY_INT8 flipped, interleaved
    filter_fraction: float = 0.0  # share of the rows an ``?owner=`` search selects (0: not measured)
    halfvec: bool = False  # also measure with the column and index as halfvec
    exact_queries: int | None = None  # queries the exact scan is timed on (None: all up to LARGE rows, else 10)
    maintenance_work_mem: str = "2GB"
    parallel_workers: int = 1
    m: int = 16  # the HNSW build parameters (the field's defaults, SEMANTIC_IMAGES["HNSW_M"] ...)
    ef_construction: int = 64


def log(message: str) -> None:
    elapsed = time.perf_counter() - STARTED
    load = os.getloadavg()[0]
    print(f"[{elapsed / 60:5.1f} min, load {load:4.1f}] {message}", file=sys.stderr, flush=True)


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


def quoted(name: str) -> str:
    from django.db import connection

    return connection.ops.quote_name(name)


def bench_owner() -> int:
    """The user who owns the filtered share of the rows."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get_or_create(username="search-benchmark-owner")[0].pk


def sample_images() -> list[str]:
    """The example's sample photos, copied into the media folder: every synthetic row points at
    one of them, so that the endpoint's thumbnails exist (made once here) as on a live site."""
    import shutil

    from django.conf import settings

    from django_semantic_images.thumbnails import thumbnail_url
    from photos.models import Photo
    from photos.samples import sample_photo_paths

    names = []
    for i, path in enumerate(sample_photo_paths()):
        name = f"photos/sample-{i}{path.suffix}"
        target = Path(settings.MEDIA_ROOT) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        assert thumbnail_url(Photo(image=name).image), name
        names.append(name)
    return names


def fill_table(
    n: int, vectors: np.ndarray, rng: np.random.Generator, opts: Options, build: bool = True
) -> dict[str, Any]:
    """Empty the photo table, COPY ``n`` rows in, build the HNSW index (unless not ``build``);
    timings in seconds."""
    from django.db import connection
    from django.utils import timezone
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from photos.models import Photo

    table = quoted(Photo._meta.db_table)
    published = rng.random(n) < PUBLISHED_SHARE
    owner = bench_owner() if opts.filter_fraction else None
    # Owned rows are drawn from the published ones: an anonymous ?owner= search sees them all.
    owned = published & (rng.random(n) < opts.filter_fraction / PUBLISHED_SHARE)
    dims = vectors.shape[1]
    images = sample_images()
    connection.ensure_connection()
    register_vector(connection.connection)
    timings: dict[str, Any] = {}
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} RESTART IDENTITY")
        cursor.execute(f"DROP INDEX IF EXISTS {quoted(SEM_INDEX)}")
        # An earlier --halfvec run (or one cut short) leaves a halfvec column: empty, this is instant.
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN embedding_semantic TYPE vector({dims})")
        now = timezone.now()
        columns = {
            "image": "varchar",
            "title": "varchar",
            "alt_text": "text",
            "published": "bool",
            "owner_id": Photo._meta.get_field("owner").target_field.rel_db_type(connection),
            "created_at": "timestamptz",
            "embedding_semantic": "vector",
            "embedding_encoder": "varchar",
            "embedding_hash": "varchar",
            "embedding_status": "varchar",
            "embedding_error": "text",
            "embedding_labels": "jsonb",
            "embedding_claimed_by": "varchar",
        }
        names = ", ".join(quoted(c) for c in columns)
        labels = Jsonb([])
        start = time.perf_counter()
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(list(columns.values()))
            for i in range(n):
                copy.write_row(
                    (
                        images[i % len(images)],
                        "",
                        "",
                        bool(published[i]),
                        owner if owned[i] else None,
                        now,
                        vectors[i],
                        "synthetic",
                        "",
                        "embedded",
                        "",
                        labels,
                        "",
                    )
                )
        timings["copy_s"] = round(time.perf_counter() - start, 2)
        timings["owned_rows"] = int(owned.sum())
        log(f"COPY {n:,} rows: {timings['copy_s']} s")
        cursor.execute(f"ANALYZE {table}")
    if build:
        timings.update(build_index("vector", opts))
    return timings


def build_index(storage: str, opts: Options) -> dict[str, Any]:
    """CREATE INDEX on the semantic column with the build settings; time, size, pgvector's notices."""
    from django.db import connection

    from photos.models import Photo

    table = quoted(Photo._meta.db_table)
    notices: list[str] = []

    def handler(diag: Any) -> None:
        notices.append(diag.message_primary or "")

    connection.connection.add_notice_handler(handler)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('maintenance_work_mem', %s, false)", [opts.maintenance_work_mem])
            cursor.execute(
                "SELECT set_config('max_parallel_maintenance_workers', %s, false)", [str(opts.parallel_workers)]
            )
            log(f"building the {storage} HNSW index (m {opts.m}, ef_construction {opts.ef_construction})")
            start = time.perf_counter()
            cursor.execute(
                f"CREATE INDEX {quoted(SEM_INDEX)} ON {table} USING hnsw (embedding_semantic {storage}_cosine_ops) "
                f"WITH (m = {int(opts.m)}, ef_construction = {int(opts.ef_construction)})"
            )
            build_s = time.perf_counter() - start
            build_notices = list(notices)
            cursor.execute("RESET maintenance_work_mem")
            cursor.execute("RESET max_parallel_maintenance_workers")
            cursor.execute(f"ANALYZE {table}")
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            # The table into the OS cache, then the index into shared buffers (what a search walks).
            cursor.execute("SELECT pg_prewarm(%s, 'read'), pg_prewarm(%s)", [table, quoted(SEM_INDEX)])
            cursor.execute(
                "SELECT pg_relation_size(%s), pg_total_relation_size(%s), "
                "pg_size_bytes(current_setting('shared_buffers'))",
                [quoted(SEM_INDEX), table],
            )
            index_bytes, table_bytes, shared_buffers = cursor.fetchone()
    finally:
        connection.connection.remove_notice_handler(handler)
    log(f"{storage} index: {build_s:.1f} s, {index_bytes / 2**20:.0f} MiB")
    return {
        "index_build_s": round(build_s, 2),
        "index_mib": round(index_bytes / 2**20, 1),
        "table_with_indexes_mib": round(table_bytes / 2**20, 1),
        "shared_buffers_mib": round(shared_buffers / 2**20),
        "maintenance_work_mem": opts.maintenance_work_mem,
        "max_parallel_maintenance_workers": opts.parallel_workers,
        "m": opts.m,
        "ef_construction": opts.ef_construction,
        "build_notices": build_notices,
    }


def to_halfvec(dims: int, opts: Options) -> dict[str, Any]:
    """The semantic column as ``halfvec`` (the table is rewritten), and its index rebuilt."""
    from django.db import connection

    from photos.models import Photo

    table = quoted(Photo._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {quoted(SEM_INDEX)}")
        log("converting the column to halfvec")
        start = time.perf_counter()
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN embedding_semantic TYPE halfvec({dims})")
        convert_s = time.perf_counter() - start
    return {"convert_s": round(convert_s, 2), **build_index("halfvec", opts)}


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)

    def at(q: float) -> float:
        return round(ms[int(q * (len(ms) - 1))], 2)

    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": at(0.95), "p99_ms": at(0.99), "n": len(ms)}


def timed(fns: dict, repeats: int, subset: dict[str, tuple[int, int]] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, interleaved (query by query, each in turn) so
    that the machine's slow moments fall on all of them alike. A name in ``subset`` runs
    in that many ``(passes, first queries)`` only."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    subset = subset or {}
    for rep in range(repeats):
        for i, q in enumerate(QUERIES):
            for name, fn in fns.items():
                passes, queries = subset.get(name, (repeats, len(QUERIES)))
                if rep >= passes or i >= queries:
                    continue
                start = time.perf_counter()
                fn(q)
                samples[name].append(time.perf_counter() - start)
    return samples


def visible(owner: int | None = None):
    from photos.models import Photo

    qs = Photo.objects.filter(published=True)
    return qs.filter(owner_id=owner) if owner is not None else qs


def top_ids(
    vector: np.ndarray, exact: bool, k: int = 10, ef_search: int | None = None, owner: int | None = None
) -> list[int]:
    """The visible top-k for ``vector`` (of ``owner``'s rows, if given): through the HNSW
    index (at ``ef_search``, default the setting), or by an exact scan."""
    from django.db import connection, transaction

    from django_semantic_images.conf import semantic_settings

    # Evaluating the queryset sets the HNSW parameters from the settings (SET LOCAL): the
    # sweep's ef_search goes in there, for the call (the settings object's cached value, swapped).
    in_force = semantic_settings.HNSW_EF_SEARCH
    if ef_search and not exact:
        semantic_settings.HNSW_EF_SEARCH = ef_search
    try:
        with transaction.atomic():
            if exact:
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL enable_indexscan = off")
            return list(visible(owner).semantic_search(vector)[:k].values_list("pk", flat=True))
    finally:
        semantic_settings.HNSW_EF_SEARCH = in_force


def execution_ms(vector: np.ndarray, exact: bool, owner: int | None = None) -> float:
    """PostgreSQL's own execution time for the visible top 10 (EXPLAIN ANALYZE), in ms."""
    from django.db import connection, transaction

    with transaction.atomic():
        if exact:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_indexscan = off")
        plan = visible(owner).semantic_search(vector)[:10].explain(analyze=True, format="json")
    return float(json.loads(plan)[0]["Execution Time"])


def summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2)}


def recall_sweep(
    query_vectors: dict[str, np.ndarray], exact_ids: dict[str, set[int]], sweep: tuple[int, ...], owner: int | None
) -> list[dict[str, Any]]:
    """Recall@10 (mean and worst query) and SQL latency at each ``ef_search``."""
    rows = []
    for ef in sweep:
        recalls, samples = [], []
        for q in QUERIES:
            start = time.perf_counter()
            approx = top_ids(query_vectors[q], False, ef_search=ef, owner=owner)
            samples.append(time.perf_counter() - start)
            recalls.append(len(set(approx) & exact_ids[q]) / 10)
        rows.append(
            {
                "ef_search": ef,
                "recall_at_10": round(float(np.mean(recalls)), 3),
                "recall_at_10_min": round(float(np.min(recalls)), 3),
                **percentiles(samples),
            }
        )
    return rows


def measure(
    n: int,
    query_vectors: dict[str, np.ndarray],
    opts: Options,
    owner: int | None,
    float32_exact: dict[str, dict[str, set[int]]] | None = None,
    main: bool = True,
) -> dict[str, Any]:
    """Time the endpoint, the querysets and the exact scan, interleaved; recall@10 and the
    ef_search sweep. ``float32_exact`` (the halfvec pass): recall against these top 10s,
    those of the float32 vectors. ``main`` False leaves out the encoder comparisons."""
    from rest_framework.test import APIClient

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import get_encoder
    from photos.models import Photo

    result: dict[str, Any] = {}
    encoder = get_encoder()
    client = APIClient()

    def endpoint_cached(q: str, **params: Any) -> None:
        response = client.get("/api/photos/search/", {"q": q, "limit": 10, **params})
        assert response.status_code == 200 and len(response.json()["results"]) == 10, response.content

    # The encoder keeps recent query vectors; the main figures measure words never seen before.
    def endpoint(q: str) -> None:
        encoder.clear_query_cache()
        endpoint_cached(q)

    def endpoint_filtered(q: str) -> None:
        encoder.clear_query_cache()
        endpoint_cached(q, owner=owner)

    def endpoint_filtered_repeated(q: str) -> None:
        endpoint_cached(q, owner=owner)

    def text_encoding(q: str) -> None:
        encoder.clear_query_cache()
        assert encoder.encode_text(q).shape == (encoder.semantic_dimensions,)

    torch_text = getattr(encoder, "text", None)  # the ConSE encoder's torch MiniLM, for comparison
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
    if opts.compare_precision and main:
        compare = {f"endpoint_{other}": flipped(endpoint), f"text_encoding_{other}": flipped(text_encoding)}

    def text_encoding_torch(q: str) -> None:
        assert torch_text.encode([q]).shape == (1, encoder.semantic_dimensions)

    # The querysets return model instances without the vector columns, as the endpoint reads them.
    rows = Photo.objects.filter(published=True).defer("embedding_visual", "embedding_semantic")

    def queryset_text(q: str) -> None:
        encoder.clear_query_cache()
        assert len(list(rows.semantic_search(q)[:10])) == 10

    def queryset_vector(q: str) -> None:
        assert len(list(rows.semantic_search(query_vectors[q])[:10])) == 10

    def queryset_vector_filtered(q: str) -> None:
        assert len(list(rows.filter(owner_id=owner).semantic_search(query_vectors[q])[:10])) == 10

    def exact_vector(q: str) -> None:
        assert len(top_ids(query_vectors[q], exact=True)) == 10

    def exact_vector_filtered(q: str) -> None:
        assert len(top_ids(query_vectors[q], exact=True, owner=owner)) == 10

    first = query_vectors[QUERIES[0]]
    result["plan_uses_hnsw"] = SEM_INDEX in visible().semantic_search(first)[:10].explain()
    filtered = {}
    if owner is not None:
        result["filtered_plan_uses_hnsw"] = SEM_INDEX in visible(owner).semantic_search(first)[:10].explain()
        filtered = {
            "endpoint_filtered": endpoint_filtered,
            "endpoint_filtered_repeated_query": endpoint_filtered_repeated,
            "queryset_vector_filtered": queryset_vector_filtered,
            "exact_scan_vector_filtered": exact_vector_filtered,
        }
    fns = {
        "endpoint": endpoint,
        # follows endpoint, which has just encoded the same words
        "endpoint_repeated_query": endpoint_cached,
        **{name: fn for name, fn in compare.items() if name.startswith("endpoint")},
        "text_encoding": text_encoding,
        **{name: fn for name, fn in compare.items() if name.startswith("text_encoding")},
        **({"text_encoding_torch": text_encoding_torch} if torch_text is not None and main else {}),
        **({"queryset_text": queryset_text} if main else {}),
        "queryset_vector": queryset_vector,
        "exact_scan_vector": exact_vector,
        **filtered,
    }
    for fn in fns.values():  # warm caches, models
        fn(QUERIES[0])
    large = n > LARGE
    exact_queries = opts.exact_queries or (10 if large else len(QUERIES))
    exact_subset = (1 if large else max(1, opts.repeats // 2), exact_queries)
    result["exact_scan_timed_on"] = {"passes": exact_subset[0], "queries": exact_subset[1]}
    load_before = os.getloadavg()[0]
    log(f"timing {len(fns)} measurements, {opts.repeats} passes")
    samples = timed(
        fns, opts.repeats, subset={"exact_scan_vector": exact_subset, "exact_scan_vector_filtered": exact_subset}
    )
    result.update({name: percentiles(values) for name, values in samples.items()})
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["speedup_vs_exact_p50"] = round(
        result["exact_scan_vector"]["p50_ms"] / result["queryset_vector"]["p50_ms"], 1
    )
    if owner is not None:
        result["filtered_speedup_vs_exact_p50"] = round(
            result["exact_scan_vector_filtered"]["p50_ms"] / result["queryset_vector_filtered"]["p50_ms"], 1
        )
    log("EXPLAIN ANALYZE")
    for suffix, who in (("", None), ("_filtered", owner)) if owner is not None else (("", None),):
        result[f"db_execution_hnsw{suffix}"] = summary([execution_ms(query_vectors[q], False, who) for q in QUERIES])
        result[f"db_execution_exact{suffix}"] = summary(
            [execution_ms(query_vectors[q], True, who) for q in QUERIES[:exact_queries]]
        )
        result[f"db_speedup_vs_exact{suffix}_p50"] = round(
            result[f"db_execution_exact{suffix}"]["p50_ms"] / result[f"db_execution_hnsw{suffix}"]["p50_ms"], 1
        )
    log("exact top 10s for recall")
    exact: dict[str, dict[str, set[int]]] = {"all": {q: set(top_ids(query_vectors[q], True)) for q in QUERIES}}
    if owner is not None:
        exact["filtered"] = {q: set(top_ids(query_vectors[q], True, owner=owner)) for q in QUERIES}
    if float32_exact is not None:
        # The halfvec scan's own top 10s tell the index's loss from the rounding's.
        result["exact_halfvec_recall_at_10_vs_float32"] = round(
            float(np.mean([len(exact["all"][q] & float32_exact["all"][q]) / 10 for q in QUERIES])), 3
        )
        exact = float32_exact
    sweep = tuple(sorted(set(EF_SEARCH_SWEEP) | {EF_SEARCH_IN_FORCE[0]}))
    result["ef_search_in_force"] = EF_SEARCH_IN_FORCE[0]
    result["ef_search_sweep"] = recall_sweep(query_vectors, exact["all"], sweep, None)
    in_force = next(row for row in result["ef_search_sweep"] if row["ef_search"] == EF_SEARCH_IN_FORCE[0])
    result["recall_at_10"], result["recall_at_10_min"] = in_force["recall_at_10"], in_force["recall_at_10_min"]
    if owner is not None:
        (row,) = recall_sweep(query_vectors, exact["filtered"], (EF_SEARCH_IN_FORCE[0],), owner)
        result["filtered_recall_at_10"], result["filtered_recall_at_10_min"] = (
            row["recall_at_10"],
            row["recall_at_10_min"],
        )
    result["_exact_ids"] = exact
    return result


def resolve_auto_ef_search(opts: Options) -> None:
    """With ``HNSW_EF_SEARCH = "auto"``: the ef_search it gives the loaded table (its
    estimated rows, as a search reads them) and the index's build, fixed for this size's
    measurements so that the sweep and the recall name it."""
    from django_semantic_images import hnsw
    from django_semantic_images.conf import semantic_settings
    from photos.models import Photo

    if not AUTO_EF_SEARCH[0]:
        return
    hnsw._row_estimates.clear()
    rows = hnsw.estimated_rows("default", Photo._meta.db_table)
    ef = hnsw.auto_ef_search(rows, opts.m, opts.ef_construction)
    semantic_settings.HNSW_EF_SEARCH = ef
    EF_SEARCH_IN_FORCE[0] = ef
    log(f'HNSW_EF_SEARCH "auto": {ef} at {rows:,.0f} estimated rows')


def run_size(n: int, label_vectors: np.ndarray, opts: Options, save: Any = None) -> dict:
    """Load ``n`` rows and measure; ``save(result)`` keeps what is measured so far (before the
    halfvec pass, which at a million rows takes as long as the rest)."""
    from django.db import connection

    from django_semantic_images.encoders import get_encoder

    rng = np.random.default_rng(n)
    started = time.perf_counter()
    log(f"{n:,} rows: generating vectors")
    start = time.perf_counter()
    vectors = synthetic_vectors(n, label_vectors, rng)
    result: dict[str, Any] = {"rows": n, "generate_s": round(time.perf_counter() - start, 2)}
    result["uptime_load_before"] = [round(x, 2) for x in os.getloadavg()]
    result.update(fill_table(n, vectors, rng, opts))
    resolve_auto_ef_search(opts)
    dims = vectors.shape[1]
    del vectors
    encoder = get_encoder()
    query_vectors = {q: encoder.encode_text(q) for q in QUERIES}
    owner = bench_owner() if opts.filter_fraction else None
    if owner is not None:
        result["filter_fraction"] = round(result["owned_rows"] / n, 4)
    measured = measure(n, query_vectors, opts, owner)
    float32_exact = measured.pop("_exact_ids")
    result.update(measured)
    if opts.halfvec:
        if save is not None:
            save(result)
        half = to_halfvec(dims, opts)
        measured = measure(n, query_vectors, opts, owner, float32_exact=float32_exact, main=False)
        measured.pop("_exact_ids")
        result["halfvec"] = {**half, **measured}
    result["size_total_s"] = round(time.perf_counter() - started, 1)
    result["uptime_load_after"] = [round(x, 2) for x in os.getloadavg()]
    connection.close()
    return result


def plot(sizes: list[dict], path: Path) -> None:
    """Latency against rows (log-log): the endpoint's p50 and p95, the HNSW queryset, the
    exact scan, and the halfvec and filtered endpoints where measured, with each run's yardstick
    (torch encoding the words: CPU only, so it shows how busy the shared machine was)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(sizes, key=lambda s: s["rows"])
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    lines = [
        (("endpoint", "p50_ms"), "endpoint, new words, p50", "C0", "-", "o"),
        (("endpoint", "p95_ms"), "endpoint, new words, p95", "C0", "--", "o"),
        (("endpoint_repeated_query", "p50_ms"), "endpoint, repeated words, p50", "C1", "-", "s"),
        (("halfvec", "endpoint", "p50_ms"), "endpoint, halfvec, new words, p50", "C2", "-", "^"),
        (("endpoint_filtered", "p50_ms"), "endpoint, 10% filter, new words, p50", "C4", "-", "v"),
        (("queryset_vector", "p50_ms"), "queryset with a vector (HNSW), p50", "C5", "-", "D"),
        (("exact_scan_vector", "p50_ms"), "same query, exact scan, p50", "C3", ":", "x"),
        # A pure CPU figure of each run: how fast the shared machine was when that size ran.
        (("text_encoding_torch", "p50_ms"), "yardstick: torch encoding of the words, p50", "grey", ":", "."),
    ]
    for keys, label, colour, style, marker in lines:
        xs, ys = [], []
        for size in sizes:
            value: Any = size
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                xs.append(size["rows"])
                ys.append(value)
        if xs:
            ax.plot(xs, ys, style, color=colour, marker=marker, label=label)
    for y, text in ((15, "goal p50 15 ms"), (40, "goal p95 40 ms")):
        ax.axhline(y, color="grey", linewidth=0.7, linestyle="-.")
        ax.text(sizes[-1]["rows"], y * 1.05, text, color="grey", fontsize=8, ha="right")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows")
    ax.set_ylabel("ms per search")
    ax.set_title("Text search latency against table size (2-core VM, shared)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def override_settings(overrides: dict) -> None:
    from django.conf import settings

    from django_semantic_images.conf import semantic_settings

    settings.SEMANTIC_IMAGES = {**getattr(settings, "SEMANTIC_IMAGES", {}), **overrides}
    semantic_settings.reload()


def per_connection() -> None:
    """Put the HNSW search parameters into the connection's startup options and turn the
    per-query SET LOCAL off (the tuning docs/settings.md describes)."""
    from django.db import connections

    from django_semantic_images.hnsw import hnsw_session_settings

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
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000], help="table sizes (none: plot only)")
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
    parser.add_argument("--halfvec", action="store_true", help="also measure with halfvec storage (index rebuilt)")
    parser.add_argument(
        "--filter-fraction", type=float, default=0.0, help="also time ?owner= searches selecting this share of rows"
    )
    parser.add_argument("--exact-queries", type=int, help="queries the exact scan is timed on (default 40; 10 > 100k)")
    parser.add_argument("--maintenance-work-mem", default="2GB", help="for the index build (the graph must fit)")
    parser.add_argument(
        "--parallel-workers", type=int, default=1, help="max_parallel_maintenance_workers for the build"
    )
    parser.add_argument("--m", type=int, default=16, help="the HNSW index's m (the field's default: 16)")
    parser.add_argument(
        "--ef-construction", type=int, default=64, help="the HNSW index's ef_construction (the field's default: 64)"
    )
    parser.add_argument("--shared-buffers", help="the embedded server's shared_buffers (e.g. 3GB for 1M rows)")
    parser.add_argument(
        "--ef-search-sweep", type=int, nargs="+", default=list(EF_SEARCH_SWEEP), help="ef_search values for recall"
    )
    parser.add_argument("--plot", type=Path, help="write a latency-against-rows plot (PNG) here")
    parser.add_argument("--include", type=Path, nargs="*", default=[], help="earlier result files to add to the plot")
    args = parser.parse_args()
    if not 0 <= args.filter_fraction < PUBLISHED_SHARE:
        parser.error(f"--filter-fraction must be between 0 and {PUBLISHED_SHARE}")
    if args.shared_buffers:
        os.environ["SEMANTIC_IMAGES_PG_SHARED_BUFFERS"] = args.shared_buffers
    earlier = [size for path in args.include for size in json.loads(path.read_text())["sizes"]]
    if not args.sizes:
        if args.plot:
            plot(earlier, args.plot)
        return
    opts = Options(
        repeats=args.repeats,
        compare_precision=args.compare_precision,
        filter_fraction=args.filter_fraction,
        halfvec=args.halfvec,
        exact_queries=args.exact_queries,
        maintenance_work_mem=args.maintenance_work_mem,
        parallel_workers=args.parallel_workers,
        m=args.m,
        ef_construction=args.ef_construction,
    )
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
    from django.core.management import call_command

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import get_encoder

    if not args.hnsw_per_connection:
        EF_SEARCH_IN_FORCE[0] = semantic_settings.HNSW_EF_SEARCH
        AUTO_EF_SEARCH[0] = EF_SEARCH_IN_FORCE[0] == "auto"
    EF_SEARCH_SWEEP[:] = sorted(set(args.ef_search_sweep))

    call_command("migrate", verbosity=0)
    encoder = get_encoder()
    encoder.ensure_loaded()
    label_vectors = getattr(encoder, "label_vectors", None)
    if label_vectors is None:  # another encoder: fall back to random directions
        label_vectors = np.random.default_rng(0).normal(size=(1000, encoder.semantic_dimensions)).astype(np.float32)
    from benchmarks.machine import describe as describe_machine

    report = {
        "command": " ".join(["python", "benchmarks/search.py", *sys.argv[1:]]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "hnsw": {
            "m": args.m,
            "ef_construction": args.ef_construction,
            "ef_search": EF_SEARCH_IN_FORCE[0],
            "set": "per connection" if args.hnsw_per_connection else "per query (SET LOCAL)",
            "iterative_scan": CONNECTION_OPTIONS.get("hnsw.iterative_scan", semantic_settings.HNSW_ITERATIVE_SCAN),
            "max_scan_tuples": CONNECTION_OPTIONS.get("hnsw.max_scan_tuples", semantic_settings.HNSW_MAX_SCAN_TUPLES),
        },
        "query_runtime": query_runtime(encoder),
        "debug": settings_debug(),
        "published_share": PUBLISHED_SHARE,
        "queries": len(QUERIES),
        "repeats": args.repeats,
        "sizes": [],
    }

    def save(partial: dict | None = None) -> None:
        """Write the report so far: a run cut short keeps what it measured."""
        report["total_s"] = round(time.perf_counter() - STARTED, 1)
        if args.json:
            sizes = report["sizes"] + ([partial] if partial is not None else [])
            args.json.write_text(json.dumps({**report, "sizes": sizes}, indent=2) + "\n")

    for n in args.sizes:
        report["sizes"].append(run_size(n, label_vectors, opts, save))
        print(json.dumps(report["sizes"][-1]), file=sys.stderr, flush=True)
        save()
    print(json.dumps(report, indent=2))
    if args.plot:
        measured = {size["rows"] for size in report["sizes"]}
        plot([s for s in earlier if s["rows"] not in measured] + report["sizes"], args.plot)


if __name__ == "__main__":
    main()
