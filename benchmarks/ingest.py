"""Ingest benchmark: end-to-end images per second for a folder of 12-megapixel JPEGs.

"End to end" is what a worker does for an upload: read the file from storage,
hash it, decode it (JPEG draft mode), preprocess, run the CNN and the text model
(each photo has a short title), and write both vectors and the row's state to
PostgreSQL. Two ways are measured in the same run, each in a fresh process so
that peak memory (max RSS) is that of one worker:

* ``pipeline``: ``embed_pks()``: batches, decoding in threads overlapped with inference;
* ``naive``: one image at a time: full-size decode, encode a batch of one, write one row
  (the CNN in torch, as a first version would run it).

A third pass, ``profile``, times the stages of the pipeline one after the other
(read + hash, decode + preprocess, CNN, text, write) to show where the time goes.
``pipeline`` and ``profile`` run once per CNN runtime of ``--runtimes`` (``IMAGE_RUNTIME``:
``onnx``, ``torch``), named e.g. ``pipeline-onnx``, all interleaved in the same run.

Usage (from the repository root)::

    PYTHONPATH=.:example_project python benchmarks/ingest.py --images 96
    PYTHONPATH=.:example_project python benchmarks/ingest.py --runtimes onnx --decode-threads 2 --threads 1
    PYTHONPATH=.:example_project python benchmarks/ingest.py --device cuda --images 512 --batch-size 64

The photos are made once from the sample photos (upscaled to 4000x3000, JPEG
quality 90, every copy different) and cached in ``--folder``. Rows are created in
the example site's database (``DATABASE_URL`` or its embedded server) and deleted
afterwards.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZE = (4000, 3000)


def make_photos(folder: Path, count: int, size: tuple[int, int] = SIZE) -> list[Path]:
    """``count`` distinct JPEGs of ``size`` (default 12 megapixels) made from the sample photos (cached)."""
    from PIL import Image, ImageEnhance, ImageOps

    from photos.samples import sample_photo_paths

    folder.mkdir(parents=True, exist_ok=True)
    samples = sample_photo_paths()
    paths = []
    for i in range(count):
        path = folder / f"photo-{i:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        image = Image.open(samples[i % len(samples)]).convert("RGB")
        round_ = i // len(samples)
        if round_ % 2:
            image = ImageOps.mirror(image)
        image = ImageEnhance.Brightness(image).enhance(0.85 + 0.05 * (round_ % 7))
        image.resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=90)
    return paths


def setup_django(device: str, batch_size: int, media_root: str, runtime: str, decode_threads: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ["MEDIA_ROOT"] = media_root
    import django
    from django.conf import settings

    django.setup()
    settings.SEMANTIC_IMAGES = {
        **settings.SEMANTIC_IMAGES,
        "DEVICE": device,
        "BATCH_SIZE": batch_size,
        "IMAGE_RUNTIME": runtime,
        "DECODE_THREADS": decode_threads or None,
    }
    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import registry

    semantic_settings.reload()
    registry.reset()  # the models' import built an encoder for DEVICE "auto"
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def create_rows(paths: list[Path]) -> list[Any]:
    """One Photo per file, saved without embedding (as rows waiting for a worker)."""
    from django.core.files import File

    from django_semantic_images.signals import embedding_deferred
    from photos.models import Photo

    pks = []
    with embedding_deferred():
        for path in paths:
            photo = Photo(title=f"benchmark photo {path.stem}")
            with path.open("rb") as fh:
                photo.image.save(path.name, File(fh), save=False)
            photo.save()
            pks.append(photo.pk)
    return pks


def delete_rows(pks: list[Any]) -> None:
    from photos.models import Photo

    for photo in Photo.objects.filter(pk__in=pks):
        photo.image.delete(save=False)
        photo.delete()


def warm_up(paths: list[Path]) -> None:
    """Load the models and run each code path once, outside the timings."""
    from PIL import Image

    from django_semantic_images.encoders import get_encoder

    encoder = get_encoder()
    encoder.ensure_loaded()
    with Image.open(paths[0]) as image:
        image.draft("RGB", (500, 375))
        encoder.encode_images([image.convert("RGB")] * 2)
    encoder.encode_texts(["warm up"])


def run_pipeline(pks: list[Any], batch_size: int) -> dict[str, Any]:
    from django_semantic_images.pipeline import embed_pks
    from photos.models import Photo

    started = time.perf_counter()
    report = embed_pks(Photo, pks, batch_size=batch_size, force=True)
    seconds = time.perf_counter() - started
    assert not report.failed and len(report.embedded) == len(pks), report
    return {"seconds": seconds}


def run_naive(pks: list[Any]) -> dict[str, Any]:
    """What a first version does: full decode, one image through the models, one write."""
    from django.utils import timezone
    from PIL import Image, ImageOps

    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.fusion import fuse
    from django_semantic_images.pipeline.reading import content_hash
    from photos.models import Photo

    encoder = get_encoder()
    started = time.perf_counter()
    for photo in Photo.objects.filter(pk__in=pks).order_by("pk"):
        with photo.image.open("rb") as fh:
            data = fh.read()
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        vectors = encoder.encode_images([image])
        semantic = fuse(vectors.semantic, encoder.encode_texts([photo.title]), 0.5)
        Photo.objects.filter(pk=photo.pk).update(
            embedding_visual=vectors.visual[0],
            embedding_semantic=semantic[0],
            embedding_hash=content_hash(data, [photo.title]),
            embedding_status="embedded",
            embedding_encoder=encoder.identity,
            embedding_updated_at=timezone.now(),
        )
    return {"seconds": time.perf_counter() - started}


def run_profile(pks: list[Any], batch_size: int) -> dict[str, Any]:
    """The pipeline's stages one after another, in one thread each (no overlap)."""
    import numpy as np
    from django.db import transaction

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.imaging import decode_image
    from django_semantic_images.pipeline.reading import content_hash
    from photos.models import Photo

    encoder = get_encoder()
    rows = list(Photo.objects.filter(pk__in=pks).order_by("pk"))
    t0 = time.perf_counter()
    blobs = []
    for row in rows:
        with row.image.open("rb") as fh:
            data = fh.read()
        content_hash(data, [row.title])
        blobs.append(data)
    t1 = time.perf_counter()
    pixels = [
        encoder.preprocess(
            decode_image(
                data,
                min_side=256,
                max_side=semantic_settings.MAX_IMAGE_SIDE,
                max_pixels=semantic_settings.MAX_IMAGE_PIXELS,
            )
        )
        for data in blobs
    ]
    t2 = time.perf_counter()
    outputs = [encoder.encode_pixels(np.stack(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)]
    t3 = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        encoder.encode_texts([r.title for r in rows[i : i + batch_size]])
    t4 = time.perf_counter()
    visual = np.concatenate([o.visual for o in outputs])
    semantic = np.concatenate([o.semantic for o in outputs])
    for start in range(0, len(rows), batch_size):  # as the pipeline writes: one transaction per batch
        with transaction.atomic():
            for row, v, s in zip(
                rows[start : start + batch_size],
                visual[start : start + batch_size],
                semantic[start : start + batch_size],
                strict=True,
            ):
                Photo.objects.filter(pk=row.pk).update(embedding_visual=v, embedding_semantic=s)
    t5 = time.perf_counter()
    n = len(rows)
    return {
        "ms_per_image": {
            "read_and_hash": round(1000 * (t1 - t0) / n, 1),
            "decode_and_preprocess": round(1000 * (t2 - t1) / n, 1),
            "cnn": round(1000 * (t3 - t2) / n, 1),
            "text": round(1000 * (t4 - t3) / n, 1),
            "write": round(1000 * (t5 - t4) / n, 1),
        },
        "seconds": t5 - t0,
    }


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads: less sensitive to a busy machine than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import torch

    media_root = tempfile.mkdtemp(prefix="semantic-images-bench-media-")
    mode, _, runtime = args.child.partition("-")
    setup_django(args.device, args.batch_size, media_root, runtime or "torch", args.decode_threads)
    from django_semantic_images.worker import configure_threads

    if args.threads:
        torch.set_num_threads(args.threads)
    else:
        configure_threads(1)  # as a worker process with concurrency 1 would
    paths = make_photos(Path(args.folder), args.images)
    warm_up(paths)
    pks = create_rows(paths)
    cpu_before = cpu_seconds()
    try:
        if mode == "pipeline":
            result = run_pipeline(pks, args.batch_size)
        elif mode == "naive":
            result = run_naive(pks)
        else:
            result = run_profile(pks, args.batch_size)
    finally:
        cpu = cpu_seconds() - cpu_before
        delete_rows(pks)
    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.pipeline.reading import decode_threads

    result.update(
        mode=args.child,
        image_runtime=getattr(get_encoder(), "image_runtime", "torch"),
        images=len(pks),
        images_per_second=round(len(pks) / result["seconds"], 2),
        cpu_ms_per_image=round(1000 * cpu / len(pks), 1),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        torch_threads=torch.get_num_threads(),
        decode_threads=decode_threads(),
    )
    if args.device.startswith("cuda"):
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="How many 12 MP photos (default 96).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda.")
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "semantic-images-ingest-12mp"))
    parser.add_argument("--naive-images", type=int, default=None, help="Photos for the naive loop (default: same).")
    parser.add_argument("--skip-profile", action="store_true")
    parser.add_argument("--modes", default="pipeline,naive,profile", help="Comma-separated modes to run.")
    parser.add_argument(
        "--runtimes", default="onnx,torch", help="CNN runtimes (IMAGE_RUNTIME) for pipeline and profile (default both)."
    )
    parser.add_argument("--decode-threads", type=int, default=0, help="DECODE_THREADS (default: the setting's).")
    parser.add_argument("--rounds", type=int, default=1, help="Repeat the modes, interleaved; the best run counts.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: as a worker would set).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from PIL import Image

    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    started = time.perf_counter()
    make_photos(Path(args.folder), args.images)
    print(f"{args.images} photos of {SIZE[0]}x{SIZE[1]} in {args.folder} ({time.perf_counter() - started:.0f} s)")
    results: dict[str, list[dict[str, Any]]] = {}
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    modes = []
    for base in args.modes.split(","):
        if base == "profile" and args.skip_profile:
            continue
        modes += ["naive"] if base == "naive" else [f"{base}-{r}" for r in args.runtimes.split(",")]
    for _ in range(args.rounds):  # rounds interleave the modes, so a busy spell hits all
        for mode in modes:
            images = args.naive_images if mode == "naive" and args.naive_images else args.images
            command = [sys.executable, __file__, "--child", mode, "--images", str(images)]
            command += ["--batch-size", str(args.batch_size), "--device", args.device, "--folder", args.folder]
            command += ["--threads", str(args.threads), "--decode-threads", str(args.decode_threads)]
            out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                sys.exit(f"{mode} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
            result = json.loads(lines[-1][len("RESULT ") :])
            result["load_average"] = round(os.getloadavg()[0], 2)
            results.setdefault(mode, []).append(result)
            print(f"{mode:14s} {json.dumps(result)}", flush=True)
    best = {mode: max(runs, key=lambda r: r["images_per_second"]) for mode, runs in results.items()}
    pipelines = [m for m in best if m.startswith("pipeline-")]
    if "naive" not in best or not pipelines:
        return
    naive = best["naive"]
    summary: dict[str, Any] = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "device": args.device,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "pillow": Image.__version__,
        "batch_size": args.batch_size,
        "naive_images_per_second": naive["images_per_second"],
        "naive_cpu_ms_per_image": naive["cpu_ms_per_image"],
    }
    for mode in pipelines:
        run = best[mode]
        summary[mode] = {
            "images_per_second": run["images_per_second"],
            "ratio": round(run["images_per_second"] / naive["images_per_second"], 2),
            "cpu_ms_per_image": run["cpu_ms_per_image"],
            "cpu_ratio": round(naive["cpu_ms_per_image"] / run["cpu_ms_per_image"], 2),
            "peak_rss_mib": run["peak_rss_mib"],
        }
    print("SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
