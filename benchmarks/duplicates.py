"""How long ``near_duplicates()`` takes at 10k and 100k rows, and a quick check of the threshold.

    PYTHONPATH=.:example_project python benchmarks/duplicates.py --rows 10000 [100000] [--json PATH]
    PYTHONPATH=.:example_project python benchmarks/duplicates.py --check-threshold [--test-images 150]

``--rows``: the example site's photo table on its own embedded PostgreSQL (data in the temp
folder, or ``DATABASE_URL``), emptied and refilled for each size with binary COPY, the visual
HNSW index built afterwards (m=16, ef_construction=64) and loaded into shared buffers; the
probes run at ``DUPLICATE_EF_SEARCH``. The vectors are synthetic, shaped like the CNN's:
sparse non-negative vectors, each its own plus a mix of 3 of 1,000 shared prototypes,
spaced like the CNN's vectors of Flickr8k photos. 2% of the rows are "pictures with copies":
each gets 1 to 3 copies at a cosine distance drawn from 0.02 to 0.18. It times ``Photo.objects.near_duplicates()`` over
every row and over the published 90%, and reports how many planted groups came back whole
(the HNSW index is approximate).

``--check-threshold``: the quick check the provisional ``DUPLICATE_THRESHOLD`` came from, with the
real encoder: edited copies (resized to half, JPEG quality 30, cropped 10%, mirrored, rotated 5
degrees, grayscale) of the first Flickr8k test images against the nearest distinct photo among
those and the first 1,500 training images (hard negatives: many similar scenes). Needs the eval
data (``/work/shared/eval`` or ``--eval-dir``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", str(Path(tempfile.gettempdir()) / "semantic-images-dups-bench-pgdata"))
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="semantic-images-bench-"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DJANGO_DEBUG", "0")

DIMENSIONS = 1280
PUBLISHED_SHARE = 0.9
COPIED_SHARE = 0.02


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def synthetic_rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    """``n`` CNN-shaped unit vectors, and the planted groups (row indexes: a picture and its copies).

    A picture is a sparse non-negative vector of its own plus a Dirichlet mix of 3 of 1,000 shared
    sparse prototypes: its nearest distinct picture is at about 0.2 (1st percentile) to 0.35
    (median), as the CNN's vectors of Flickr8k photos are (0.21 and 0.40).
    """

    def sparse(rows: int) -> np.ndarray:
        return unit(np.maximum(rng.normal(size=(rows, DIMENSIONS)) - 1.0, 0))

    prototypes = sparse(1000)
    vectors = np.empty((n, DIMENSIONS), np.float32)
    index, groups = 0, []
    while index < n:
        block = min(10_000, n - index)
        weights = rng.dirichlet(np.full(3, 0.5), size=block)
        mixed = np.einsum("nk,nkd->nd", weights, prototypes[rng.integers(0, len(prototypes), size=(block, 3))])
        bases = unit(mixed + 0.65 * sparse(block))
        for base in bases:
            if index >= n:
                break
            vectors[index] = base
            group = [index]
            index += 1
            if rng.random() < COPIED_SHARE:
                for _ in range(min(int(rng.integers(1, 4)), n - index)):
                    # A copy at cosine distance d: noise of norm s with 1 - 1/sqrt(1 + s^2) = d.
                    d = rng.uniform(0.02, 0.18)
                    s = np.sqrt(1 / (1 - d) ** 2 - 1)
                    noise = rng.normal(size=DIMENSIONS)
                    vectors[index] = unit((base + s * noise / np.linalg.norm(noise))[None])[0]
                    group.append(index)
                    index += 1
            if len(group) > 1:
                groups.append(group)
    return vectors, groups


def fill_table(vectors: np.ndarray, published: np.ndarray) -> dict[str, float]:
    """Empty the photo table, COPY the rows in, build the visual HNSW index; timings in seconds."""
    from django.db import connection
    from django.utils import timezone
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    from photos.models import Photo

    table = connection.ops.quote_name(Photo._meta.db_table)
    index = connection.ops.quote_name(Photo.embedding.index_name(Photo, "visual"))
    connection.ensure_connection()
    register_vector(connection.connection)
    timings = {}
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table} RESTART IDENTITY CASCADE")
        cursor.execute(f"DROP INDEX IF EXISTS {index}")
        columns = ("image", "title", "alt_text", "published", "created_at", "embedding_visual", "embedding_encoder")
        columns += ("embedding_hash", "embedding_status", "embedding_error", "embedding_labels", "embedding_claimed_by")
        types = ["varchar", "varchar", "text", "bool", "timestamptz", "vector", "varchar"]
        types += ["varchar", "varchar", "text", "jsonb", "varchar"]
        now = timezone.now()
        start = time.perf_counter()
        quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
        with cursor.cursor.copy(f"COPY {table} ({quoted}) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for i, vector in enumerate(vectors):
                copy.write_row(
                    (f"photos/s-{i}.jpg", "", "", bool(published[i]), now, vector, "synthetic", "", "embedded")
                    + ("", Jsonb([]), "")
                )
        timings["copy_s"] = time.perf_counter() - start
        start = time.perf_counter()
        cursor.execute("SET maintenance_work_mem = '2GB'")
        cursor.execute(
            f"CREATE INDEX {index} ON {table} USING hnsw (embedding_visual vector_cosine_ops) "
            "WITH (m = 16, ef_construction = 64)"
        )
        timings["index_build_s"] = time.perf_counter() - start
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        cursor.execute("SELECT pg_prewarm(%s), pg_prewarm(%s)", [index.strip('"'), Photo._meta.db_table])
    return timings


def run_size(n: int, rng: np.random.Generator) -> dict:
    from photos.models import Photo

    vectors, planted = synthetic_rows(n, rng)
    published = rng.random(n) < PUBLISHED_SHARE
    report: dict = {"rows": n, "planted_groups": len(planted), **fill_table(vectors, published)}
    pks = list(Photo.objects.order_by("pk").values_list("pk", flat=True))  # row i has pks[i]
    picture = {pk: pk for pk in pks}  # each row's picture: itself, or the original it is a copy of
    for group in planted:
        for i in group:
            picture[pks[i]] = pks[group[0]]
    for name, queryset in (("all", Photo.objects.all()), ("published", Photo.objects.filter(published=True))):
        start = time.perf_counter()
        groups = queryset.near_duplicates()
        seconds = time.perf_counter() - start
        report[name] = {
            "seconds": round(seconds, 1),
            "rows_per_s": round((n if name == "all" else int(published.sum())) / seconds),
            "groups": len(groups),
            "images_in_groups": sum(len(group) for group in groups),
            # Groups holding rows of more than one picture: distinct pictures merged.
            "groups_merging_distinct_pictures": sum(len({picture[pk] for pk in group.pks}) > 1 for group in groups),
        }
        if name == "all":
            where = {pk: number for number, group in enumerate(groups) for pk in group.pks}
            together = sum(len({where.get(pks[i], -1 - i) for i in group}) == 1 for group in planted)
            report[name]["planted_groups_kept_together"] = together
        print(f"  {n:,} rows, {name}: {report[name]}", file=sys.stderr, flush=True)
    return report


def jpeg(image, quality: int):
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def edits(image) -> dict:
    from PIL import ImageOps

    w, h = image.size
    return {
        "resize50": image.resize((w // 2, h // 2)),
        "jpeg30": jpeg(image, 30),
        "crop10": image.crop((int(w * 0.05), int(h * 0.05), int(w * 0.95), int(h * 0.95))),
        "flip": ImageOps.mirror(image),
        "rot5": image.rotate(5),
        "gray": ImageOps.grayscale(image).convert("RGB"),
    }


def check_threshold(eval_dir: Path, test_images: int, train_images: int) -> dict:
    from PIL import Image

    from django_semantic_images.encoders import get_encoder

    encoder = get_encoder()

    def embed(images: list) -> np.ndarray:
        batches = [encoder.encode_images(images[i : i + 32]).visual for i in range(0, len(images), 32)]
        return unit(np.concatenate(batches))

    test = sorted((eval_dir / "flickr8k_test1k" / "images").iterdir())[:test_images]
    train = sorted((eval_dir / "flickr8k_train" / "images").iterdir())[:train_images]
    originals = [Image.open(p).convert("RGB") for p in test]
    vectors = embed(originals)
    copies = {}
    for name in edits(originals[0]):
        edited = embed([edits(image)[name] for image in originals])
        copies[name] = 1 - np.sum(vectors * edited, axis=1)
    every = np.concatenate([vectors, embed([Image.open(p).convert("RGB") for p in train])])
    distances = 1 - every @ every.T
    np.fill_diagonal(distances, 9)
    report: dict = {"test_images": len(test), "train_images": len(train), "copies": {}, "thresholds": {}}
    for name, values in copies.items():
        report["copies"][name] = {f"p{p}": round(float(np.percentile(values, p)), 3) for p in (50, 90, 99, 100)}
    nearest = distances.min(axis=1)
    report["nearest_distinct"] = {f"p{p}": round(float(np.percentile(nearest, p)), 3) for p in (0.1, 1, 5, 50)}
    all_copies = np.concatenate(list(copies.values()))
    for t in (0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3):
        report["thresholds"][str(t)] = {
            "copies_within": round(float(np.mean(all_copies <= t)), 3),
            "distinct_pairs_within": int(np.sum(np.triu(distances <= t, 1))),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000])
    parser.add_argument("--check-threshold", action="store_true", help="the threshold check instead of timings")
    parser.add_argument("--eval-dir", type=Path, default=Path("/work/shared/eval"))
    parser.add_argument("--test-images", type=int, default=150)
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--ef-search", type=int, help="probe at this hnsw.ef_search instead of DUPLICATE_EF_SEARCH")
    args = parser.parse_args()
    import django

    django.setup()
    from benchmarks.machine import cpu_model

    report: dict = {"machine": f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPUs"}
    if args.check_threshold:
        report["check"] = check_threshold(args.eval_dir, args.test_images, args.train_images)
    else:
        from django.conf import settings
        from django.core.management import call_command

        from django_semantic_images import duplicates
        from django_semantic_images.conf import semantic_settings

        if args.ef_search:
            duplicates.DUPLICATE_EF_SEARCH = args.ef_search
        call_command("migrate", verbosity=0)
        report["database"] = settings.DATABASES["default"]["NAME"]
        report["threshold"] = semantic_settings.DUPLICATE_THRESHOLD
        report["hnsw_ef_search"] = duplicates.DUPLICATE_EF_SEARCH
        rng = np.random.default_rng(0)
        report["sizes"] = [run_size(n, rng) for n in args.rows]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
