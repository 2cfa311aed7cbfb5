"""The alt-text fusion's common-direction scale (``TEXT_MODEL["COMMON_SCALE"]``) per text model,
measured on Flickr8k *train* images only (never the test split).

The first N train images that have Multi30k French and German captions; a random half gets alt
text; the CNN's ConSE vectors come from the routed encoder (both halves), each half ranked on its
own by exact cosine. Three cases: e5 with French alt text and German queries (5 per image), MiniLM
and e5 with English alt text (the first caption) and English queries (the other four).

    python benchmarks/fusion_scale.py 600 > benchmarks/results/fusion-common-scale-train.txt
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCALES = (0.0, 0.5, 0.75, 1.0, 1.1, 1.25, 1.5)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(n: int) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    from benchmarks.languages import cnn_logits, rank
    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.encoders.onnx_queries import configured_query_encoder
    from django_semantic_images.encoders.routed import RoutedConSEEncoder
    from django_semantic_images.fusion import fuse

    eval_dir = ROOT.parent / "shared" / "eval"
    train = eval_dir / "flickr8k_train"
    en: dict[str, list[str]] = {}
    with (train / "captions.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            en.setdefault(row["image"], []).append(row["caption"].strip())
    fr: dict[str, str] = {}
    de: dict[str, list[str]] = {}
    with (eval_dir / "multi30k_flickr8k" / "flickr8k_train" / "queries.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["lang"] == "fr":
                fr[row["image"]] = row["caption"].strip()
            if row["lang"] == "de" and row["source"] == "task2":
                de.setdefault(row["image"], []).append(row["caption"].strip())
    images = sorted(set(en) & set(fr) & set(de))[:n]
    logits = cnn_logits(get_encoder(), train, images, Path("/tmp"), log)
    routed = RoutedConSEEncoder(device="cpu", bridge=None)
    routed.label_vectors, routed.common_text_direction = routed.cached_class_vectors()
    gallery = routed.conse(routed.soften(logits)) * np.sqrt(2)
    with_alt = np.sort(np.random.default_rng(0).permutation(len(images))[: len(images) // 2])
    cases = (
        (1, "e5: French alt text, German queries", lambda i: fr[i], lambda i: de[i][:5]),
        (0, "minilm: English alt text, English queries", lambda i: en[i][0], lambda i: en[i][1:]),
        (1, "e5: English alt text, English queries", lambda i: en[i][0], lambda i: en[i][1:]),
    )
    for half, name, alt_of, queries_of in cases:
        model = routed.halves[half]
        cols = slice(0, 384) if half == 0 else slice(384, 768)
        images_only = gallery[:, cols] / np.linalg.norm(gallery[:, cols], axis=1, keepdims=True)
        common = routed.common_text_direction[cols]
        started = time.time()
        text = model.text_encoder().encode([alt_of(images[i]) for i in with_alt])
        queries, right = [], []
        for i, image in enumerate(images):
            for query in queries_of(image):
                queries.append(query)
                right.append(i)
        encoder = configured_query_encoder(model.text_encoder())
        vectors = np.concatenate([encoder.encode_queries(queries[i : i + 64]) for i in range(0, len(queries), 64)])
        log(f"{name}: encoded in {time.time() - started:.0f} s")
        print(f"{name}: no alt text: {rank(vectors, images_only, right, 0)}", flush=True)
        for scale in SCALES:
            fused = images_only.copy()
            fused[with_alt] = fuse(images_only[with_alt], text, 0.5, common=common, scale=scale)
            print(f"{name}: scale {scale}: {rank(vectors, fused, right, 0)}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
