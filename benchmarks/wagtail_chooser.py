"""The Wagtail image chooser's search: semantic ranking against Wagtail's own keyword search.

N Wagtail images (default 10,000): Flickr8k's 1k test images, each added N/1000 times as a
separate image titled by one of its captions (so Wagtail's keyword search has real words to
match). The 1k originals are embedded by the project's pipeline; each copy gets its original's
vectors plus a little noise (the same structure a library of 10k real photos has, without
embedding 10k files). Every image's ``max-165x165`` rendition (the chooser's thumbnail) is made
beforehand. Then, for 50 natural-language queries (other captions of random images), the
chooser's search-results fragment (``GET .../images/chooser/results/?q=...``, what the modal
fetches) is answered by this project's view and by Wagtail's own view over the database search
backend, interleaved request by request, several rounds; the figures are p50/p95 per view.

    python benchmarks/wagtail_chooser.py [--images 10000] [--queries 50] [--rounds 3] [--json out.json]

It runs on a throwaway database (``wagtail_chooser_bench``) of the test settings' server
(``tests.wagtail.settings``: the embedded PostgreSQL in ``.pgdata-test``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wagtail.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
EVAL = ROOT.parent / "shared" / "eval" / "flickr8k_test1k"
RENDITION = "max-165x165"


def read_captions(folder: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = defaultdict(list)
    with (folder / "captions.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            captions[row["image"]].append(row["caption"].strip().rstrip(" ."))
    return dict(captions)


def load_images(folder: Path, captions: dict[str, list[str]], copies: int, media_root: Path, log: Any) -> list[Any]:
    """The images (files linked, not copied), the originals embedded, the copies given their vectors."""
    from django.db import connection
    from pgvector.django import HalfVectorField, VectorField
    from wagtail.images import get_image_model
    from wagtail.models import Collection

    from django_semantic_images.contrib.wagtail.models import ImageVectors
    from django_semantic_images.pipeline import embed_pks
    from django_semantic_images.signals import embedding_deferred

    Image = get_image_model()
    (media_root / "original_images").mkdir(parents=True, exist_ok=True)
    link = media_root / "original_images" / "flickr"
    if not link.exists():
        link.symlink_to((folder / "images").resolve(), target_is_directory=True)
    root = Collection.get_first_root_node()
    rows = []
    for copy in range(copies):
        for name, texts in captions.items():
            rows.append(
                Image(
                    title=texts[copy % len(texts)],
                    file=f"original_images/flickr/{name}",
                    width=500,
                    height=375,
                    collection=root,
                )
            )
    with embedding_deferred():
        images = Image.objects.bulk_create(rows, batch_size=1000)
    ImageVectors.objects.add_missing_rows()
    originals = [image.pk for image in images[: len(captions)]]
    started = time.perf_counter()
    report = embed_pks(ImageVectors, originals)
    log(f"embedded {len(originals)} originals in {time.perf_counter() - started:.0f} s: {report}")
    # Each copy: its original's vectors with a little noise (re-normalised), marked embedded.
    table = connection.ops.quote_name(ImageVectors._meta.db_table)
    columns = [f for f in ImageVectors._meta.concrete_fields if f.column not in ("image_id",)]
    names = ", ".join(connection.ops.quote_name(f.column) for f in columns)
    vector_columns = [f.column for f in columns if isinstance(f, VectorField | HalfVectorField)]
    with connection.cursor() as cursor:
        for copy in range(1, copies):
            offset = copy * len(captions)
            pairs = [(images[offset + i].pk, pk) for i, pk in enumerate(originals)]
            cursor.execute(f"DELETE FROM {table} WHERE image_id = ANY(%s)", [[new for new, _ in pairs]])
            cursor.execute(
                f"INSERT INTO {table} (image_id, {names}) SELECT m.new, {names} FROM {table} "
                "JOIN unnest(%s::bigint[], %s::bigint[]) AS m(new, old) ON image_id = m.old",
                [[new for new, _ in pairs], [old for _, old in pairs]],
            )
        for column in vector_columns:
            quoted = connection.ops.quote_name(column)
            cursor.execute(f"SELECT image_id, {quoted}::text FROM {table} WHERE image_id <> ALL(%s)", [originals])
            noisy = []
            rng = np.random.default_rng(0)
            for pk, text in cursor.fetchall():
                if text is None:
                    continue
                vector = np.array(json.loads(text), dtype=np.float32)
                vector += rng.normal(0, 0.2 / np.sqrt(len(vector)), len(vector)).astype(np.float32)  # cosine ~0.98
                vector /= np.linalg.norm(vector) or 1.0
                noisy.append((pk, "[" + ",".join(f"{x:.6f}" for x in vector) + "]"))
            for start in range(0, len(noisy), 2000):
                chunk = noisy[start : start + 2000]
                cursor.execute(
                    f"UPDATE {table} SET {quoted} = m.v::vector FROM unnest(%s::bigint[], %s::text[]) AS m(id, v) "
                    "WHERE image_id = m.id",
                    [[pk for pk, _ in chunk], [v for _, v in chunk]],
                )
        cursor.execute(f"ANALYZE {table}")
    return images


def make_renditions(images: list[Any], log: Any) -> None:
    started = time.perf_counter()
    for image in images:
        image.get_rendition(RENDITION)
    log(f"made {len(images)} {RENDITION} renditions in {time.perf_counter() - started:.0f} s")


def update_search_index(log: Any) -> None:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("update_index", verbosity=0)
    log(f"Wagtail's search index updated in {time.perf_counter() - started:.0f} s")


def percentiles(samples: list[float]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(samples, q)), 1) for q in (50, 95)} | {"n": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="a multiple of the folder's images")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="requests per query and view")
    parser.add_argument("--folder", type=Path, default=EVAL)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the database and media (for --reuse)")
    parser.add_argument("--reuse", action="store_true", help="measure on the database a --keep run left")
    parser.add_argument(
        "--baseline",
        metavar="MODULE",
        action="append",
        default=[],
        help="also measure the chooser of MODULE (an importable copy of an older views module with its own"
        " chooser_viewset()), interleaved with the others, for a before/after comparison in one run (repeatable)",
    )
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import setup_test_environment
    from wagtail.images import get_image_model
    from wagtail.images.views.chooser import viewset as wagtail_viewset

    from benchmarks.machine import describe
    from django_semantic_images.contrib.wagtail.views import chooser_viewset
    from django_semantic_images.encoders import get_encoder

    def log(message: str) -> None:
        print(message, flush=True)

    captions = read_captions(args.folder)
    copies = max(1, args.images // len(captions))
    media = Path(tempfile.gettempdir()) / "wagtail-chooser-bench-media"
    setup_test_environment()
    if args.reuse:
        old_name = connection.settings_dict["NAME"]
        connection.close()
        connection.settings_dict["NAME"] = "wagtail_chooser_bench"
    else:
        connection.settings_dict["TEST"]["NAME"] = "wagtail_chooser_bench"
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    settings.MEDIA_ROOT = str(media)
    try:
        Image = get_image_model()
        if args.reuse:
            images = list(Image.objects.all())
        else:
            shutil.rmtree(media, ignore_errors=True)
            images = load_images(args.folder, captions, copies, media, log)
            make_renditions(images, log)
            update_search_index(log)
            # Statistics for the search index just written (both views use its GIN index only once the
            # planner knows the table's size), and its GIN pending list merged: until (auto)vacuum does
            # that, every autocomplete query reads the 10,000 fresh entries one by one (8-10 ms a query
            # instead of 0.5), which a running site's autovacuum would not leave for long.
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
        user = get_user_model().objects.filter(username="bench").first()
        user = user or get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
        rng = random.Random(0)
        names = rng.sample(sorted(captions), args.queries)
        queries = [captions[name][-1] for name in names]  # the last caption: no copy is titled by it
        get_encoder().encode_text("warm up")  # not one of the queries: the first round's words are new
        views = {"semantic": chooser_viewset().choose_results_view, "wagtail": wagtail_viewset.choose_results_view}
        # For scale: Wagtail's view with no words (the chooser's first page: a full page of thumbnails).
        views["wagtail, no words"] = wagtail_viewset.choose_results_view
        for module in args.baseline:
            views[f"semantic, {module}"] = importlib.import_module(module).chooser_viewset().choose_results_view
        encoder = get_encoder()
        factory = RequestFactory()
        times: dict[str, list[float]] = {name: [] for name in views}
        # The first round's words are new to the process (the encoder caches query vectors); the
        # later rounds repeat them, as an editor paging through results or retyping does.
        first_round: dict[str, list[float]] = {name: [] for name in views}
        listed: dict[str, list[int]] = {name: [] for name in views}  # thumbnails on the first page
        for view in views.values():  # one warm-up request each
            request = factory.get("/cms/images/chooser/results/", {"q": "warm up"})
            request.user = user
            view(request).render()
        load_at_start = [round(x, 2) for x in os.getloadavg()]  # 1, 5 and 15 minutes
        for round_number in range(args.rounds):
            for query in queries:
                order = list(views.items())
                rng.shuffle(order)
                for name, view in order:
                    params = {} if name == "wagtail, no words" else {"q": query}
                    request = factory.get("/cms/images/chooser/results/", params)
                    request.user = user
                    if args.baseline and round_number == 0 and name.startswith("semantic"):
                        encoder.clear_query_cache()  # both semantic views encode the first round's words
                    started = time.perf_counter()
                    response = view(request)
                    response.render()
                    times[name].append((time.perf_counter() - started) * 1000)
                    if round_number == 0:
                        first_round[name].append(times[name][-1])
                    listed[name].append(response.content.count(b'class="image"'))
                    assert response.status_code == 200, response.status_code
        result = {
            "machine": describe(),
            "images": len(images),
            "queries": len(queries),
            "rounds": args.rounds,
            "ms": {name: percentiles(samples) for name, samples in times.items()},
            "ms_first_round": {name: percentiles(samples) for name, samples in first_round.items()},
            "ms_repeats": {
                name: percentiles(samples[len(first_round[name]) :])
                for name, samples in times.items()
                if len(samples) > len(first_round[name])
            },
            "thumbnails_per_response": {name: round(float(np.mean(n)), 1) for name, n in listed.items()},
        }
        ratio = result["ms"]["semantic"]["p95"] / result["ms"]["wagtail"]["p95"]
        result["p95_ratio"] = round(ratio, 2)
        first = result["ms_first_round"]
        result["p95_ratio_first_round"] = round(first["semantic"]["p95"] / first["wagtail"]["p95"], 2)
        for module in args.baseline:
            baseline = result["ms"][f"semantic, {module}"]["p95"]
            result[f"p95_ratio {module}"] = round(baseline / result["ms"]["wagtail"]["p95"], 2)
        result["load_average"] = {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]}
        print(json.dumps(result, indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if not (args.keep or args.reuse):
            connection.creation.destroy_test_db(old_name, verbosity=0)
            shutil.rmtree(media, ignore_errors=True)


if __name__ == "__main__":
    main()
