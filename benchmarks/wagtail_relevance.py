"""Relevance through Wagtail: does the Images listing rank as well as the engine itself?

Flickr8k's 1k test images are loaded twice on one throwaway database: as the example ``Photo``
rows that ``benchmarks/relevance.py`` ranks (the engine's own figure, "conse, images"), and as
Wagtail images titled by their file names, as an upload names them, embedded through
``contrib.wagtail``. Every caption (5 per image) is then a query: once through
``semantic_search`` on the Photo rows (exact, as relevance.py does), once through the Images
listing's own ranking (``keyword_matches`` then ``rank_by_meaning`` on Wagtail's image queryset,
which is what ``SemanticImageIndexView.search_queryset`` runs: keyword hits first, then the 100
nearest through the HNSW index). R@k counts the queries whose image is among the first k.

    python benchmarks/wagtail_relevance.py [--limit 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wagtail.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
EVAL = ROOT.parent / "shared" / "eval" / "flickr8k_test1k"


def load_wagtail_images(data, media_root: Path, prefix: str) -> dict[str, int]:
    """A Wagtail image per file (linked, not copied), titled by the file name; embedded."""
    from wagtail.images import get_image_model
    from wagtail.models import Collection

    from django_semantic_images.contrib.wagtail.models import ImageVectors
    from django_semantic_images.pipeline import embed_pks
    from django_semantic_images.signals import embedding_deferred

    Image = get_image_model()
    link = media_root / prefix
    if not link.exists():
        link.symlink_to((data.folder / "images").resolve(), target_is_directory=True)
    root = Collection.get_first_root_node()
    rows = [
        Image(title=Path(name).stem, file=f"{prefix}/{name}", width=500, height=375, collection=root)
        for name in data.captions
    ]
    with embedding_deferred():
        images = Image.objects.bulk_create(rows, batch_size=500)
    ImageVectors.objects.add_missing_rows()
    report = embed_pks(ImageVectors, [image.pk for image in images])
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} images failed: {next(iter(report.failed.values()))}")
    return {name: image.pk for name, image in zip(data.captions, images, strict=True)}


def listing_ranks(queries: list[str], right: list[int], limit: int) -> list[int]:
    """The rank of each query's image in the listing's ranking (``limit + 1`` when not listed)."""
    from django.core.management import call_command
    from wagtail.images import get_image_model

    from django_semantic_images.contrib.wagtail.search import keyword_matches, rank_by_meaning

    call_command("update_index", verbosity=0)  # Wagtail's search index, for the keyword matches
    images = get_image_model().objects.all()
    ranks = []
    for query, pk in zip(queries, right, strict=True):
        keyword = keyword_matches(images, query, limit=limit)
        listed = list(rank_by_meaning(images, query, keyword=keyword, limit=limit).values_list("pk", flat=True))
        ranks.append(listed.index(pk) + 1 if pk in listed else limit + 1)
    return ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=EVAL)
    parser.add_argument("--limit", type=int, help="only the first N images (a quick slice)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    from benchmarks.machine import describe
    from benchmarks.relevance import Bench, Captioned, queries_for
    from django_semantic_images.contrib.wagtail.search import DEFAULT_LIMIT
    from django_semantic_images.metrics import summarise

    data = Captioned.read(args.folder, args.limit)
    connection.settings_dict["TEST"]["NAME"] = "wagtail_relevance_bench"
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="wagtail-relevance-") as media:
            settings.MEDIA_ROOT = media
            bench = Bench(Path(media))
            photo_pks = bench.load(data, "photos")
            print(f"Photo rows: {bench.embed(photo_pks)}", flush=True)
            by_name = dict(zip(data.captions, photo_pks, strict=True))
            queries, right = queries_for(data, by_name, skip_first=False)
            engine = bench.rank(queries, right, photo_pks)
            print(f"engine (Photo rows, exact): {engine}", flush=True)
            image_pks = load_wagtail_images(data, Path(media), "wagtail")
            _, right_images = queries_for(data, image_pks, skip_first=False)
            ranks = listing_ranks(queries, right_images, DEFAULT_LIMIT)
            listing = summarise(ranks)
            print(f"Wagtail listing: {listing}", flush=True)
            beyond = float(np.mean(np.asarray(ranks) > DEFAULT_LIMIT))
            result = {
                "machine": describe(),
                "images": len(data.captions),
                "queries": len(queries),
                "engine": asdict(engine),
                "wagtail_listing": asdict(listing),
                "listing_beyond_limit": round(100 * beyond, 1),
                "seconds": round(time.perf_counter() - started),
            }
            print(json.dumps(result, indent=2, default=str))
            if args.json:
                args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
