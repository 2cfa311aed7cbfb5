"""Does the query runtime change what a search finds? Torch, ONNX Runtime and int8 side by side.

    PYTHONPATH=.:example_project python benchmarks/query_runtime.py [--limit 1000] [--json out.json]

The Flickr8k test images are embedded once by the default ConSE encoder (no bridge,
no alt text, so the stored vectors are the plain image -> text-space mixture). Every
caption is then a query, encoded three ways: the torch MiniLM (what stored vectors
come from), the same model exported to ONNX Runtime (``QUERY_RUNTIME``), and its int8
version (``QUERY_INT8``). The table gives R@1/5/10 per runtime, the cosine between
each runtime's query vectors and torch's, and the time per single-query encoding on
the machine's torch thread setting. Ranking is exact (every image scored), so the
only difference between the rows is the query vector.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import django

    django.setup()
    from machine import describe as describe_machine
    from PIL import Image
    from relevance import Captioned

    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.encoders.onnx_queries import OnnxQueryEncoder
    from django_semantic_images.metrics import retrieval_scores

    data = Captioned.read(args.test, args.limit)
    names = list(data.captions)
    encoder = ConSEEncoder(device="cpu", bridge=None)
    encoder.ensure_loaded()
    gallery = []
    for start in range(0, len(names), 32):
        images = [Image.open(data.folder / "images" / n).convert("RGB") for n in names[start : start + 32]]
        gallery.append(encoder.encode_images(images).semantic)
    gallery_vectors = np.concatenate(gallery)
    texts = [c for n in names for c in data.captions[n]]
    right = np.array([i for i, n in enumerate(names) for _ in data.captions[n]])

    runtimes = {
        "torch": encoder.text,
        "onnxruntime": OnnxQueryEncoder(encoder.text),
        "onnxruntime int8": OnnxQueryEncoder(encoder.text, int8=True),
    }
    reference = encoder.text.encode(texts)
    rows = []
    for name, runtime in runtimes.items():
        vectors = np.concatenate([runtime.encode([t]) for t in texts])
        samples = []
        for text in texts[:200]:
            start = time.perf_counter()
            runtime.encode([text])
            samples.append(time.perf_counter() - start)
        cosines = np.sum(vectors * reference, axis=1)
        rows.append(
            {
                "runtime": name,
                **retrieval_scores(vectors, gallery_vectors, right).as_dict(),
                "cosine_to_torch_mean": round(float(cosines.mean()), 4),
                "cosine_to_torch_min": round(float(cosines.min()), 4),
                "encode_p50_ms": round(statistics.median(samples) * 1000, 2),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {
        "machine": describe_machine(),
        "images": len(names),
        "queries": len(texts),
        "rows": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
