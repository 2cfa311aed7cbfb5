"""How long the editors' admin takes to answer: search by words, similar images, search by photo.

The example site's Photo admin is driven with Django's test client (the whole request:
URL routing, permissions, the changelist, template rendering) against a throwaway
database: the sample photos, embedded by the real models, plus ``--rows`` rows with
random unit vectors so that the table has a site's size (they reuse one sample file).

    python benchmarks/admin_search.py --rows 10000 --repeat 7

Prints the median and the slowest time of each request after one warm-up request
(model loading is not counted). Timings depend on the machine; write them down with it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="synthetic rows added to the sample photos")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    connection.settings_dict["TEST"]["NAME"] = "admin_search_bench"
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        run(args.rows, args.repeat)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def run(rows: int, repeat: int) -> None:
    import io

    import numpy as np
    from django.contrib.auth.models import User
    from django.core.files.base import ContentFile
    from django.test import Client
    from PIL import Image, ImageOps

    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.pipeline import embed_instances
    from django_semantic_images.signals import embedding_deferred
    from photos.models import Photo
    from photos.samples import sample_photo_paths

    paths = {p.stem: p for p in sample_photo_paths()}
    with embedding_deferred():
        photos = []
        for path in paths.values():
            photo = Photo(title=path.stem)
            photo.image.save(path.name, ContentFile(path.read_bytes()), save=False)
            photo.save()
            photos.append(photo)
    embed_instances(photos)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    template = photos[0].image.name
    for offset in range(0, rows, 1000):
        n = min(1000, rows - offset)
        sem = l2_normalize(rng.normal(size=(n, 384)).astype(np.float32))
        vis = l2_normalize(rng.normal(size=(n, 1280)).astype(np.float32))
        Photo.objects.bulk_create(
            [
                Photo(
                    image=template,
                    title=f"row {offset + i}",
                    published=(i % 2 == 0),
                    embedding_status="embedded",
                    embedding_semantic=sem[i],
                    embedding_visual=vis[i],
                )
                for i in range(n)
            ]
        )
    print(f"{Photo.objects.count()} rows ({rows} synthetic, inserted in {time.perf_counter() - start:.0f} s)")

    User.objects.create_superuser("bench", "bench@example.com", "pw")
    client = Client()
    client.login(username="bench", password="pw")
    cat = Photo.objects.get(title="chelsea")
    query = ImageOps.mirror(Image.open(paths["rocket"]).convert("RGB"))
    buf = io.BytesIO()
    query.save(buf, "JPEG", quality=70)
    url = "/admin/photos/photo/"

    def by_photo():
        upload = ContentFile(buf.getvalue(), name="query.jpg")
        response = client.post(url + "search-by-photo/", {"photo": upload})
        return client.get(response["Location"])

    requests = {
        "changelist, no search": lambda: client.get(url),
        "search by words (q=a cup of coffee)": lambda: client.get(url, {"q": "a cup of coffee"}),
        "search by words + filter published": lambda: client.get(url, {"q": "a cup of coffee", "published__exact": 1}),
        "similar images (similar_to=cat)": lambda: client.get(url, {"similar_to": cat.pk}),
        "search by photo (upload + results)": by_photo,
    }
    print(f"{'request':40} {'median ms':>10} {'max ms':>8}")
    for name, call in requests.items():
        assert call().status_code == 200  # warm-up: loads the models, fills caches
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = call()
            times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        print(f"{name:40} {statistics.median(times):10.0f} {max(times):8.0f}")
    explain_nearest_rows(Photo)
    time_vector_parsing(Photo, repeat)


def time_vector_parsing(model, repeat: int) -> None:
    """Loading 100 rows with and without their vector columns (why the changelist defers them)."""
    loads = {
        "100 rows with vectors": lambda: list(model.objects.all()[:100]),
        "100 rows, vectors deferred": lambda: list(model.objects.defer("embedding_visual", "embedding_semantic")[:100]),
    }
    for name, call in loads.items():
        call()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1000)
        print(f"{name:40} {statistics.median(times):10.0f} {max(times):8.0f}")


def explain_nearest_rows(model) -> None:
    """The plan of the admin's nearest-rows query (the one that should use the HNSW index)."""
    from django.db import transaction

    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.expressions import SemanticDistance
    from django_semantic_images.query import apply_hnsw_settings

    vector = get_encoder().encode_text("a cup of coffee").tolist()
    ranked = (
        model.objects.filter(published=True, embedding_semantic__isnull=False)
        .annotate(_distance=SemanticDistance("embedding", vector))
        .order_by("_distance")
        .values_list("pk", flat=True)[:100]
    )
    with transaction.atomic():
        apply_hnsw_settings("default")
        plan = ranked.explain()
    print("plan of the nearest-rows query (search by words + filter published):")
    plan = re.sub(r"'\[[^]]*\]'", "'[...]'", plan)  # the query vector's 384 numbers
    print("\n".join("    " + line for line in plan.splitlines()[:4]))


if __name__ == "__main__":
    main()
