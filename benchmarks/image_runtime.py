"""Does the CNN's runtime change what a search finds? Torch and ONNX Runtime side by side.

    PYTHONPATH=.:example_project python benchmarks/image_runtime.py [--limit 1000] [--cnn lite1] [--json out.json]

The Flickr8k test images are decoded once (as a worker decodes them) and run through
the default ConSE encoder (no bridge, no alt text) twice: with the CNN in torch and in
ONNX Runtime (``IMAGE_RUNTIME``). Every caption is a query, encoded once by the torch
text model. The report gives, per runtime, R@1/5/10 (exact ranking of every image, so
the only difference is the image vectors), the largest absolute difference and the
smallest cosine between the two runtimes' visual and semantic vectors, and the CNN's
milliseconds per image (batches of 16, the process's torch thread setting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", str(Path(tempfile.gettempdir()) / "semantic-images-bench-pgdata"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "eval" / "flickr8k_test1k")
    parser.add_argument("--limit", type=int, help="first N images only")
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--cnn", default="lite0", help="ENCODER_OPTIONS['cnn'] (default lite0)")
    args = parser.parse_args()

    import django
    import torch

    django.setup()
    torch.set_num_threads(args.threads)
    from machine import describe as describe_machine
    from relevance import Captioned

    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.imaging import decode_image
    from django_semantic_images.metrics import retrieval_scores

    data = Captioned.read(args.test, args.limit)
    names = list(data.captions)
    prep = ConSEEncoder(device="cpu", bridge=None, cnn=args.cnn)
    pixels = np.stack(
        [
            prep.preprocess(decode_image((data.folder / "images" / n).read_bytes(), min_side=prep.input_side))
            for n in names
        ]
    )
    encoders = {}
    for runtime in ("torch", "onnx"):
        semantic_settings.IMAGE_RUNTIME = runtime  # read when the CNN loads
        encoder = encoders[runtime] = ConSEEncoder(device="cpu", bridge=None, cnn=args.cnn)
        encoder.ensure_image_model()
        assert encoder.image_runtime == runtime, f"the {runtime} runtime could not be loaded"
    texts = [c for n in names for c in data.captions[n]]
    right = np.array([i for i, n in enumerate(names) for _ in data.captions[n]])
    queries = np.concatenate([encoders["torch"].encode_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])

    vectors, rows = {}, []
    for runtime, encoder in encoders.items():
        encoder.encode_pixels(pixels[:16])  # warm up
        started = time.perf_counter()
        out = [encoder.encode_pixels(pixels[i : i + 16]) for i in range(0, len(pixels), 16)]
        seconds = time.perf_counter() - started
        visual = np.concatenate([o.visual for o in out])
        semantic = np.concatenate([o.semantic for o in out])
        vectors[runtime] = (visual, semantic)
        rows.append(
            {
                "runtime": runtime,
                **retrieval_scores(queries, semantic, right).as_dict(),
                "cnn_ms_per_image": round(1000 * seconds / len(names), 1),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    difference = {}
    for index, name in enumerate(("visual", "semantic")):
        a, b = vectors["onnx"][index], vectors["torch"][index]
        difference[name] = {
            "max_abs_diff": float(np.abs(a - b).max()),
            "min_cosine": round(float(np.sum(a * b, axis=1).min()), 7),
        }
    report = {
        "machine": describe_machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "threads": args.threads,
        "cnn": args.cnn,
        "images": len(names),
        "queries": len(texts),
        "rows": rows,
        "onnx_vs_torch": difference,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
