"""CNN time per image of the ConSE encoder's networks (``ENCODER_OPTIONS["cnn"]``), side by side in one process.

    PYTHONPATH=.:example_project python benchmarks/cnn_speed.py [--images 64] [--rounds 3] [--json out.json]

The example site's sample photos (repeated up to ``--images``) are decoded and preprocessed once per
network (``decode_image`` with the encoder's ``input_side``, then ``preprocess``: Lite0 224 px, Lite1
240 px), then each round runs every case once, interleaved, so a shared machine's load weighs on all
alike: Lite0 and Lite1, each in ONNX Runtime (a CPU worker's default with the ``onnx`` extra) and in
torch, batches of 16 through ``encode_pixels`` (the CNN and ConSE's mixture, as a worker runs them).
Reported: the best and the median round per case (ms per image), and the ratios to Lite0 in the same
runtime. The preprocessing is timed apart (ms per image, Pillow; the decode is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--cnns", nargs="+", default=["lite0", "lite1"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import django
    import torch

    django.setup()
    torch.set_num_threads(args.threads)
    from machine import describe as describe_machine

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.imaging import decode_image
    from photos.samples import sample_photo_paths

    blobs = [p.read_bytes() for p in sample_photo_paths()]
    blobs = (blobs * (args.images // len(blobs) + 1))[: args.images]
    encoders, pixels, prep_ms = {}, {}, {}
    for cnn in args.cnns:
        for runtime in ("onnx", "torch"):
            semantic_settings.IMAGE_RUNTIME = runtime  # read when the CNN loads
            encoder = ConSEEncoder(device="cpu", bridge=None, cnn=cnn)
            encoder.ensure_image_model()
            assert encoder.image_runtime == runtime, f"{cnn}: the {runtime} runtime could not be loaded"
            encoders[f"{cnn} {runtime}"] = encoder
        images = [decode_image(b, min_side=encoder.input_side) for b in blobs]
        started = time.perf_counter()
        pixels[cnn] = np.stack([encoder.preprocess(im) for im in images])
        prep_ms[cnn] = round(1000 * (time.perf_counter() - started) / len(images), 2)
    times: dict[str, list[float]] = {name: [] for name in encoders}
    loads = []
    for name, encoder in encoders.items():  # warm up
        encoder.encode_pixels(pixels[name.split()[0]][: args.batch])
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            x = pixels[name.split()[0]]
            started = time.perf_counter()
            for i in range(0, len(x), args.batch):
                encoder.encode_pixels(x[i : i + args.batch])
            times[name].append(1000 * (time.perf_counter() - started) / len(x))
            loads.append(os.getloadavg()[0])
    rows = []
    for name, ms in times.items():
        cnn, runtime = name.split()
        base = times[f"{args.cnns[0]} {runtime}"]
        rows.append(
            {
                "cnn": cnn,
                "runtime": runtime,
                "best_ms": round(min(ms), 1),
                "median_ms": round(statistics.median(ms), 1),
                "x_best": round(min(ms) / min(base), 2),
                "x_median": round(statistics.median(ms) / statistics.median(base), 2),
                "rounds_ms": [round(t, 1) for t in ms],
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {
        "command": "python benchmarks/cnn_speed.py " + " ".join(sys.argv[1:]),
        "machine": describe_machine(),
        "load_average_during": [round(min(loads), 1), round(max(loads), 1)],
        "images": len(blobs),
        "batch": args.batch,
        "threads": args.threads,
        "preprocess_ms_per_image": prep_ms,
        "rows": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
