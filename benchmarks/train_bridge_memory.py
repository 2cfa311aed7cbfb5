"""Peak memory of collecting the bridge's training data: streamed in chunks vs. all rows at once.

``semantic_images_train_bridge`` first reads every embedded row's visual vector and words
(``training.collect_captioned``). This benchmark fills a table of synthetic rows (random
1280-d visual vectors, one or two caption lines each, COPY in binary), then runs, each in
a fresh process so that its peak RSS is that step's alone:

* ``streamed``: ``collect_captioned(..., chunk_size=2000)``: keyset chunks into one
  preallocated float32 array;
* ``old``: the previous code: one numpy array per row kept in a list, then ``np.stack``.

Usage (from the repository root; uses ``DATABASE_URL`` or the example site's embedded server)::

    PYTHONPATH=.:example_project python benchmarks/train_bridge_memory.py --rows 200000

The table (about 1.1 GB at 200k rows) is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = "bench_train_bridge_memory"
VISUAL, SEMANTIC = 1280, 384


def setup() -> Any:
    """Django with the example site's settings; the benchmark's model (no HNSW index)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    from django.db import models

    from django_semantic_images import ImageEmbeddingField

    class Row(models.Model):
        image = models.CharField(max_length=100)
        title = models.CharField(max_length=200, blank=True)
        alt_text = models.TextField(blank=True)
        embedding = ImageEmbeddingField(
            text_fields=["title", "alt_text"], visual_dimensions=VISUAL, semantic_dimensions=SEMANTIC, index=False
        )

        class Meta:
            app_label = "photos"
            db_table = TABLE

        def __str__(self) -> str:
            return self.image

    return Row


def fill(model: Any, rows: int, seed: int = 0) -> float:
    """Create the table and COPY ``rows`` synthetic rows in; seconds taken."""
    import numpy as np
    from django.db import connection
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from django_semantic_images.extension import create_vector_extension

    start = time.perf_counter()
    create_vector_extension(connection)
    with connection.schema_editor() as editor:
        editor.create_model(model)
    connection.ensure_connection()
    register_vector(connection.connection)
    rng = np.random.default_rng(seed)
    columns = ["image", "title", "alt_text", "embedding_visual", "embedding_encoder", "embedding_hash"]
    columns += ["embedding_status", "embedding_error", "embedding_labels"]
    types = ["varchar", "varchar", "text", "vector", "varchar", "varchar", "varchar", "text", "jsonb"]
    quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        sql = f"COPY {connection.ops.quote_name(TABLE)} ({quoted}) FROM STDIN WITH (FORMAT BINARY)"
        with cursor.cursor.copy(sql) as copy:
            copy.set_types(types)
            for first in range(0, rows, 10_000):
                block = rng.normal(size=(min(10_000, rows - first), VISUAL)).astype(np.float32)
                for j, vector in enumerate(block):
                    i = first + j
                    alt = f"synthetic photo number {i} of a quiet street\nsecond description {i}" if i % 2 else ""
                    copy.write_row(
                        (f"bench/{i}.jpg", f"Photo {i}", alt, vector, "bench", "", "embedded", "", Jsonb([]))
                    )
        cursor.execute(f"ANALYZE {connection.ops.quote_name(TABLE)}")
    return time.perf_counter() - start


def collect_old(queryset: Any, field: Any) -> Any:
    """The collector as it was before chunking (per-row arrays, then one stack)."""
    import numpy as np

    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.fields import EmbeddingStatus
    from django_semantic_images.training import CaptionedImages, descriptions

    rows = queryset.filter(
        **{field.column("status"): EmbeddingStatus.EMBEDDED, f"{field.visual_field}__isnull": False}
    ).order_by("pk")
    keys, vectors, texts, owner = [], [], [], []
    for row in rows.values("pk", field.visual_field, *field.text_fields).iterator(chunk_size=2000):
        lines = descriptions([row[f] or "" for f in field.text_fields])
        if not lines:
            continue
        owner += [len(keys)] * len(lines)
        texts += lines
        keys.append(row["pk"])
        vectors.append(np.asarray(row[field.visual_field], dtype=np.float32))
    visual = l2_normalize(np.stack(vectors)) if vectors else np.zeros((0, 0), np.float32)
    return CaptionedImages(keys, visual, texts, np.array(owner, dtype=np.int64))


def rss_now_kib() -> int:
    """This process's resident set size now, in KiB (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int:
    """This process's peak resident set size since the last reset, in KiB (Linux: VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(mode: str, chunk_size: int) -> dict[str, Any]:
    """One collection in this process: peak RSS before and after, seconds."""
    model = setup()
    import numpy as np  # noqa: F401  (loaded before the baseline)
    from django.db import connection

    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.training import collect_captioned

    connection.ensure_connection()
    field = get_embedding_field(model)
    gc.collect()
    before = rss_now_kib()
    # Reset the peak (VmHWM) to the RSS now, so that the peak read afterwards is the step's own and
    # not one reached while importing (Linux: /proc/self/clear_refs, "5").
    Path("/proc/self/clear_refs").write_text("5")
    start = time.perf_counter()
    if mode == "streamed":
        data = collect_captioned(model.objects.all(), field, chunk_size=chunk_size)
    else:
        data = collect_old(model.objects.all(), field)
    seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    return {
        "mode": mode,
        "images": len(data),
        "descriptions": len(data.texts),
        "visual_array_mib": round(data.visual.nbytes / 2**20),
        "seconds": round(seconds, 1),
        "rss_before_mib": round(before / 1024),
        "peak_rss_mib": round(peak / 1024),
        "collection_peak_mib": round((peak - before) / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="Keep the table (and reuse it next time).")
    parser.add_argument("--measure", choices=["streamed", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="Write the results as JSON here.")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.chunk_size)))
        return

    model = setup()
    from django.db import connection

    sys.path.insert(0, str(ROOT))
    from benchmarks.machine import describe

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_class WHERE relname = %s", [TABLE])
        exists = cursor.fetchone()[0] > 0
    fill_s = None
    if exists and model.objects.count() != args.rows:
        with connection.schema_editor() as editor:
            editor.delete_model(model)
        exists = False
    if not exists:
        fill_s = round(fill(model, args.rows), 1)
    results = {"rows": args.rows, "chunk_size": args.chunk_size, "fill_seconds": fill_s, "machine": describe()}
    try:
        for mode in ("streamed", "old"):
            command = [sys.executable, __file__, "--measure", mode, "--chunk-size", str(args.chunk_size)]
            out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results[mode]), flush=True)
    finally:
        if not args.keep:
            with connection.schema_editor() as editor:
                editor.delete_model(model)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
