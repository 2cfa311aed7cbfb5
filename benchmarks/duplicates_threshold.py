"""Near-duplicates benchmark: from which cosine distance are two photos "the same picture"?

Every image of Flickr8k's 1k test split gets seven edited copies (resize, low-quality
JPEG, 10% crop, small rotation, grayscale, watermark text, horizontal flip; random
parameters from a fixed seed): an original and its copies are one true group. Distinct
photos of the same scene are the hard negatives: every train image whose captions speak
of a dog and grass, and for each test image the train image whose captions are the most
like its own (TF-IDF), each a group of its own.

Every image goes through what a worker does for an upload: the file's bytes are decoded
by ``imaging.decode_image`` with the pipeline's limits, turned into the model's input by
``encoder.preprocess`` and encoded in batches by ``encoder.encode_pixels``; the visual
vector (``embedding_visual``) is what near-duplicates compare. ``--verify N`` embeds N of
the images again through ``pipeline.embed_pks`` in a throwaway PostgreSQL database and
checks that both give the same vectors.

Grouping is what ``near_duplicates(threshold=...)`` does: an edge from every image to
each of its ``k`` (10) nearest neighbours (exact kNN here; the HNSW index in the
database) whose cosine distance is at most the threshold, groups are the connected
components (union-find). Reported per threshold: pair precision and recall (two images
in one group), group precision (groups holding no distinct photo) and recall (true groups
found whole and alone), recall per kind of edit, and how many hard negatives were merged.

    PYTHONPATH=.:example_project python benchmarks/duplicates_threshold.py          # full run, writes docs
    PYTHONPATH=.:example_project python benchmarks/duplicates_threshold.py --limit 50 --out -

Edited copies and vectors are cached under ``--cache`` (a temporary folder by default),
keyed by the encoder's identity, so a rerun only groups and scores. Research data: the
copies and vectors stay there, never in the repository.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EVAL = Path("/work/shared/eval")
EDITS = ("resize", "jpeg", "crop", "rotate", "grayscale", "watermark", "flip")
#: Changes when the edits change: cached copies and vectors of another recipe are not reused.
RECIPE = "edits-v1"
K = 10
THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(1, 61))
BEGIN, END = "<!-- duplicates-threshold:begin -->", "<!-- duplicates-threshold:end -->"
DOG = re.compile(r"\b(dog|dogs|puppy|puppies)\b")
GRASS = re.compile(r"\b(grass|grassy|lawn|field|meadow)\b")

Log = Callable[[str], None]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One image of the benchmark: its file, its true group and what it is."""

    key: str  # e.g. "test/123.jpg", "resize/123.jpg", "train/456.jpg"
    path: Path
    group: int  # images of one group are copies of one photo
    kind: str  # "original", an edit, or "negative"
    dog_grass: bool = False


def read_captions(folder: Path) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = {}
    with (folder / "captions.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            captions.setdefault(row["image"], []).append(row["caption"].strip().lower())
    return dict(sorted(captions.items()))


def edit_image(image: Any, kind: str, rng: np.random.Generator) -> tuple[Any, dict[str, Any], str]:
    """``image`` edited as ``kind`` says: the copy, its JPEG save options and what was done."""
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    w, h = image.size
    if kind == "resize":
        scale = float(rng.uniform(0.5, 0.8))
        size = (round(w * scale), round(h * scale))
        return image.resize(size, Image.Resampling.LANCZOS), {"quality": 90}, f"{size[0]}x{size[1]}"
    if kind == "jpeg":
        quality = int(rng.integers(15, 31))
        return image, {"quality": quality}, f"quality {quality}"
    if kind == "crop":
        dx, dy = round(w * 0.1), round(h * 0.1)
        left, top = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
        box = (left, top, left + w - dx, top + h - dy)
        return image.crop(box), {"quality": 90}, f"box {box}"
    if kind == "rotate":
        angle = float(rng.uniform(2, 6)) * (1 if rng.random() < 0.5 else -1)
        turned = image.rotate(angle, resample=Image.Resampling.BICUBIC)
        # the largest centred rectangle without the corners the rotation left empty
        a = math.radians(abs(angle))
        cw, ch = (w * math.cos(a) - h * math.sin(a)), (h * math.cos(a) - w * math.sin(a))
        cw, ch = max(1, math.floor(cw)), max(1, math.floor(ch))
        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
        return turned.crop(box), {"quality": 90}, f"{angle:+.1f} degrees, cropped to {cw}x{ch}"
    if kind == "grayscale":
        return ImageOps.grayscale(image), {"quality": 90}, "L"
    if kind == "watermark":
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        size = max(10, round(h * float(rng.uniform(0.07, 0.11))))
        font = ImageFont.load_default(size=size)
        text = "(c) Example Photo 2024"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = int(rng.integers(0, max(1, w - (right - left))))
        y = int(rng.integers(0, max(1, h - (bottom - top))))
        draw.text((x, y - top), text, font=font, fill=(255, 255, 255, 170), stroke_width=1, stroke_fill=(0, 0, 0, 90))
        marked = Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")
        return marked, {"quality": 90}, f"{size}px text at ({x}, {y})"
    if kind == "flip":
        return ImageOps.mirror(image), {"quality": 90}, "left-right"
    raise ValueError(f"Unknown edit {kind!r}")


def make_copies(originals: Sequence[Path], folder: Path, seed: int) -> dict[str, dict[str, str]]:
    """Every edit of every original as a JPEG under ``folder/<edit>/`` (made once, then reused).

    Each image has its own random stream (seeded with ``seed`` and its position), so a
    copy does not depend on which other images are in the run.
    """
    from PIL import Image

    notes_path = folder / "edits.json"
    notes: dict[str, dict[str, str]] = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    made = 0
    for index, path in enumerate(originals):
        targets = [folder / kind / path.name for kind in EDITS]
        if path.name in notes and all(t.exists() for t in targets):
            continue
        rng = np.random.default_rng([seed, index])
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        notes[path.name] = {}
        for kind, target in zip(EDITS, targets, strict=True):
            copy, options, what = edit_image(image, kind, rng)
            target.parent.mkdir(parents=True, exist_ok=True)
            copy.save(target, "JPEG", **options)
            notes[path.name][kind] = what
        made += 1
    if made:
        notes_path.write_text(json.dumps(notes, indent=0, sort_keys=True))
    return notes


def caption_neighbours(test: dict[str, list[str]], train: dict[str, list[str]]) -> list[str]:
    """For each test image, the train image whose captions are the most alike (TF-IDF cosine)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True)
    train_names = list(train)
    matrix = vectorizer.fit_transform([" ".join(c) for c in train.values()])
    queries = vectorizer.transform([" ".join(c) for c in test.values()])
    best = (queries @ matrix.T).toarray().argmax(axis=1)
    return [train_names[i] for i in best]


def is_dog_on_grass(captions: Sequence[str]) -> bool:
    return any(DOG.search(c) for c in captions) and any(GRASS.search(c) for c in captions)


def build_items(
    test_dir: Path, train_dir: Path, copies_dir: Path, *, limit: int | None, seed: int, negatives: str
) -> list[Item]:
    """Originals, their copies and the hard negatives, in a fixed order."""
    test = read_captions(test_dir)
    if limit:
        test = dict(list(test.items())[:limit])
    train = read_captions(train_dir)
    originals = [test_dir / "images" / name for name in test]
    make_copies(originals, copies_dir, seed)
    items: list[Item] = []
    for group, name in enumerate(test):
        items.append(Item(f"test/{name}", test_dir / "images" / name, group, "original"))
        items += [Item(f"{kind}/{name}", copies_dir / kind / name, group, kind) for kind in EDITS]
    if negatives == "all":
        chosen = list(train)
    else:
        dog_grass = [n for n, caps in train.items() if is_dog_on_grass(caps)]
        chosen = sorted(set(dog_grass) | set(caption_neighbours(test, train)))
    for offset, name in enumerate(chosen):
        items.append(
            Item(
                f"train/{name}",
                train_dir / "images" / name,
                len(test) + offset,
                "negative",
                is_dog_on_grass(train[name]),
            )
        )
    return items


# -- the vectors ---------------------------------------------------------------------------------


def decode_limits(encoder: Any) -> dict[str, int]:
    """The limits ``pipeline.reading._prepare`` decodes an upload with."""
    from django_semantic_images.conf import semantic_settings

    return {
        "min_side": int(getattr(encoder, "input_side", 256)),
        "max_side": int(semantic_settings.MAX_IMAGE_SIDE),
        "max_pixels": int(semantic_settings.MAX_IMAGE_PIXELS),
    }


def encode_files(encoder: Any, paths: Sequence[Path]) -> np.ndarray:
    """Visual vectors of these files, as the pipeline makes them: decode, preprocess, encode."""
    from django_semantic_images.imaging import decode_image

    limits = decode_limits(encoder)
    pixels = np.stack([encoder.preprocess(decode_image(p.read_bytes(), **limits)) for p in paths])
    return np.asarray(encoder.encode_pixels(pixels).visual, dtype=np.float32)


def cache_file(cache: Path, encoder: Any, seed: int) -> Path:
    recipe = f"{encoder.identity}|{json.dumps(decode_limits(encoder), sort_keys=True)}|{RECIPE}|{seed}"
    return cache / f"visual-{hashlib.sha1(recipe.encode()).hexdigest()[:12]}.npz"


def load_vectors(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with np.load(path) as data:
        return dict(zip(data["keys"].tolist(), data["vectors"], strict=True))


def save_vectors(path: Path, vectors: dict[str, np.ndarray]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    keys = sorted(vectors)
    np.savez(tmp, keys=np.array(keys), vectors=np.stack([vectors[k] for k in keys]))
    tmp.replace(path)


def embed(items: Sequence[Item], cache: Path, seed: int, batch_size: int, log: Log = log) -> np.ndarray:
    """The visual vector of every item (rows in the order of ``items``), cached in ``cache``."""
    from django_semantic_images.encoders import get_encoder

    encoder = get_encoder()
    path = cache_file(cache, encoder, seed)
    vectors = load_vectors(path)
    todo = [it for it in items if it.key not in vectors]
    log(f"encoder {encoder.identity}: {len(items) - len(todo)} vectors cached in {path}, {len(todo)} to embed")
    started, last_save = time.perf_counter(), time.perf_counter()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        vectors.update(zip([it.key for it in batch], encode_files(encoder, [it.path for it in batch]), strict=True))
        done = start + len(batch)
        if time.perf_counter() - last_save > 60 or done == len(todo):
            save_vectors(path, vectors)
            last_save = time.perf_counter()
            rate = done / (time.perf_counter() - started)
            log(f"  {done}/{len(todo)} embedded, {rate:.1f} images/s")
    return np.stack([vectors[it.key] for it in items])


# -- grouping and scoring ------------------------------------------------------------------------


def nearest(vectors: np.ndarray, k: int = K, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest neighbours of every row (itself left out): indices and cosine distances."""
    n = len(vectors)
    k = min(k, n - 1)
    index = np.empty((n, k), dtype=np.int64)
    distance = np.empty((n, k), dtype=np.float64)
    for start in range(0, n, chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        index[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        distance[start : start + chunk] = 1.0 - np.take_along_axis(top_sims, order, axis=1)
    return index, distance


def group(index: np.ndarray, distance: np.ndarray, threshold: float) -> np.ndarray:
    """Group label of every row: union-find over the edges to neighbours within ``threshold``."""
    parent = np.arange(len(index))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(distance <= threshold)
    for a, b in zip(rows.tolist(), index[rows, cols].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(len(index))])


def pairs(sizes: np.ndarray) -> int:
    return int((sizes * (sizes - 1) // 2).sum())


def score(labels: np.ndarray, items: Sequence[Item]) -> dict[str, Any]:
    """Pair, group and per-edit figures of one grouping against the true groups."""
    truth = np.array([it.group for it in items])
    kinds = np.array([it.kind for it in items])
    negative = kinds == "negative"
    dog_grass = np.array([it.dog_grass for it in items])
    _, pred = np.unique(labels, return_inverse=True)
    pred_sizes = np.bincount(pred)
    true_sizes = np.bincount(truth)
    cell_ids, cell_sizes = np.unique(pred.astype(np.int64) * (truth.max() + 1) + truth, return_counts=True)
    tp, predicted, actual = pairs(cell_sizes), pairs(pred_sizes), pairs(true_sizes)
    # groups shown to an editor (two images or more): pure = every image a copy of one photo
    kinds_per_group = np.bincount(cell_ids // (truth.max() + 1))  # distinct true groups in each predicted one
    shown = pred_sizes >= 2
    pure = shown & (kinds_per_group == 1)
    # a true group found whole and alone: one predicted group holds all its images and nothing else
    cell_pred, cell_truth = cell_ids // (truth.max() + 1), cell_ids % (truth.max() + 1)
    whole = (
        (cell_sizes == true_sizes[cell_truth]) & (cell_sizes == pred_sizes[cell_pred]) & (true_sizes[cell_truth] >= 2)
    )
    real_groups = int((true_sizes >= 2).sum())
    same_photo = np.bincount(pred * (truth.max() + 1) + truth)[pred * (truth.max() + 1) + truth]  # per image
    partners, right = pred_sizes[pred] - 1, same_photo - 1
    original_of = {it.group: i for i, it in enumerate(items) if it.kind == "original"}
    per_edit = {}
    for kind in EDITS:
        rows = np.flatnonzero(kinds == kind)
        with_original = np.array([pred[i] == pred[original_of[truth[i]]] for i in rows])
        merged = partners[rows].sum()
        per_edit[kind] = {
            "recall": float(with_original.mean()) if len(rows) else 1.0,
            "precision": float(right[rows].sum() / merged) if merged else 1.0,
        }
    return {
        "pair_precision": tp / predicted if predicted else 1.0,
        "pair_recall": tp / actual if actual else 1.0,
        "false_pairs": predicted - tp,
        "groups_shown": int(shown.sum()),
        "group_precision": float(pure.sum() / shown.sum()) if shown.any() else 1.0,
        "group_recall": float(whole.sum() / real_groups) if real_groups else 1.0,
        "largest_group": int(pred_sizes.max()),
        "negatives_merged": int((negative & (partners > 0)).sum()),
        "dog_grass_merged": int((dog_grass & (partners > 0)).sum()),
        "negative_false_pairs": int(partners[negative].sum()),  # every partner of a negative is wrong
        "originals_with_a_stranger": int(((kinds == "original") & (partners > right)).sum()),
        "per_edit": per_edit,
    }


def choose(rows: Sequence[dict[str, Any]], floor: float) -> dict[str, Any]:
    """The largest threshold whose pair and group precision are both at least ``floor``."""
    good = [r for r in rows if r["pair_precision"] >= floor and r["group_precision"] >= floor]
    if not good:
        raise RuntimeError(f"No threshold keeps the precision at {floor}")
    return max(good, key=lambda r: r["threshold"])


def distances(items: Sequence[Item], vectors: np.ndarray, index: np.ndarray, distance: np.ndarray) -> dict[str, Any]:
    """How far each copy is from its original, and each photo from the nearest distinct one."""
    truth = np.array([it.group for it in items])
    original_of = {it.group: i for i, it in enumerate(items) if it.kind == "original"}
    out: dict[str, Any] = {}
    quantiles = (0.5, 0.9, 0.99, 1.0)
    for kind in EDITS:
        rows = [i for i, it in enumerate(items) if it.kind == kind]
        d = 1.0 - np.einsum("ij,ij->i", vectors[rows], vectors[[original_of[truth[i]] for i in rows]])
        out[kind] = dict(zip(["median", "p90", "p99", "max"], np.quantile(d, quantiles).round(4).tolist(), strict=True))
    stranger = np.where(truth[index] != truth[:, None], distance, np.inf).min(axis=1)
    for name, mask in (
        ("original to nearest distinct photo", np.array([it.kind == "original" for it in items])),
        ("negative to nearest distinct photo", np.array([it.kind == "negative" for it in items])),
        ("any image to nearest distinct photo", np.ones(len(items), bool)),
    ):
        d = stranger[mask & np.isfinite(stranger)]
        if not len(d):
            continue
        out[name] = dict(
            zip(["min", "p1", "p5", "median"], np.quantile(d, (0, 0.01, 0.05, 0.5)).round(4).tolist(), strict=True)
        )
    return out


def closest_strangers(items: Sequence[Item], index: np.ndarray, distance: np.ndarray, n: int = 10) -> list[dict]:
    """The ``n`` closest pairs of distinct photos (to look at: are they really distinct?)."""
    truth = np.array([it.group for it in items])
    seen: dict[tuple[str, str], float] = {}
    rows, cols = np.nonzero(truth[index] != truth[:, None])
    for a, c in zip(rows.tolist(), cols.tolist(), strict=True):
        b = int(index[a, c])
        key = tuple(sorted((items[a].key, items[b].key)))
        seen[key] = float(distance[a, c])  # type: ignore[index]
    ranked = sorted(seen.items(), key=lambda kv: kv[1])[:n]
    return [{"a": a, "b": b, "distance": round(d, 4)} for (a, b), d in ranked]


# -- the report ----------------------------------------------------------------------------------


def plot(rows: Sequence[dict[str, Any]], chosen: dict[str, Any], floor: float, path: Path) -> None:
    """Precision and recall against the threshold (left), recall per edit (right), the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["threshold"] <= 0.45]  # past it everything is one group
    x = [r["threshold"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True)
    for key, label, style in (
        ("pair_precision", "pair precision", "-"),
        ("group_precision", "group precision", "--"),
        ("pair_recall", "pair recall", "-"),
        ("group_recall", "group recall (whole and alone)", "--"),
    ):
        left.plot(x, [r[key] for r in rows], style, label=label, linewidth=1.8)
    for axis in (left, right):
        axis.axvline(chosen["threshold"], color="grey", linestyle=":", linewidth=1.2)
        axis.set_xlabel("threshold (cosine distance between visual vectors)")
        axis.grid(alpha=0.3)
    left.plot(
        [chosen["threshold"]], [chosen["pair_precision"]], "o", color="black", label=f"chosen: {chosen['threshold']}"
    )
    left.axhline(floor, color="grey", linestyle="--", linewidth=0.8)
    left.set_ylim(0, 1.02)
    left.set_title("Duplicate groups: precision and recall")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8)
    for kind in EDITS:
        right.plot(x, [r["per_edit"][kind]["recall"] for r in rows], label=kind, linewidth=1.5)
    right.set_ylim(0, 1.02)
    right.set_title("Recall per edit (copy grouped with its original)")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def render(result: dict[str, Any], picture: str) -> str:
    chosen = result["chosen"]
    near = {round(chosen["threshold"] + step / 100, 2) for step in range(-3, 4)}
    shown = {
        r["threshold"]
        for r in result["rows"]
        if (round(r["threshold"] * 100) % 5 == 0 and r["threshold"] <= 0.35) or r["threshold"] in near
    }
    counts = result["counts"]
    lines = [
        f"Measured {result['date']} with `{result['command']}` on {result['machine']} "
        f"(shared with other jobs, load average {result['load']}); {result['minutes']:.1f} minutes "
        f"({result['embed_note']}).",
        "",
        f"Data: the {counts['originals']} Flickr8k test images, each with {len(EDITS)} edited copies "
        f"({', '.join(EDITS)}; {counts['copies']} copies, seed {result['seed']}), and {counts['negatives']} distinct "
        f"train images as hard negatives ({counts['dog_grass']} whose captions speak of a dog and grass, and for each "
        "test image the train image with the most alike captions). All images are 224x224 (how our copy of "
        "Flickr8k stores them), so a resize or a crop takes away more detail than on a camera photo. "
        f"Vectors: `{result['encoder']}`, the pipeline's decode and preprocessing; groups: edges to the "
        f"{result['k']} nearest neighbours within the threshold, connected components (exact kNN here).",
        "",
        f"![Precision and recall against the threshold]({picture})",
        "",
        "| threshold | pair precision | pair recall | group precision | group recall | groups shown | "
        "distinct pairs merged | hard negatives merged (dog+grass) | largest group |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["threshold"] not in shown:
            continue
        mark = " **(chosen)**" if r["threshold"] == chosen["threshold"] else ""
        lines.append(
            f"| {r['threshold']:.2f}{mark} | {pct(r['pair_precision'])} | {pct(r['pair_recall'])} | "
            f"{pct(r['group_precision'])} | {pct(r['group_recall'])} | {r['groups_shown']} | {r['false_pairs']} | "
            f"{r['negatives_merged']} ({r['dog_grass_merged']}) | {r['largest_group']} |"
        )
    lines += [
        "",
        "Recall per edit (percent of the copies grouped with their original) and, in brackets, the precision "
        "of what those copies were grouped with:",
        "",
        "| threshold | " + " | ".join(EDITS) + " |",
        "|---|" + "---|" * len(EDITS),
    ]
    for r in result["rows"]:
        if r["threshold"] not in shown:
            continue
        cells = [f"{pct(r['per_edit'][k]['recall'])} ({pct(r['per_edit'][k]['precision'])})" for k in EDITS]
        lines.append(f"| {r['threshold']:.2f} | " + " | ".join(cells) + " |")
    d = result["distances"]
    lines += [
        "",
        "Cosine distance from each copy to its original (median / 90th / 99th percentile / max): "
        + "; ".join(
            f"{k} {d[k]['median']:.3f} / {d[k]['p90']:.3f} / {d[k]['p99']:.3f} / {d[k]['max']:.3f}" for k in EDITS
        )
        + ". From each photo to the nearest distinct one (min / 1st / 5th percentile / median): "
        + "; ".join(
            f"{name.split(' to ')[0]}s {v['min']:.3f} / {v['p1']:.3f} / {v['p5']:.3f} / {v['median']:.3f}"
            for name, v in d.items()
            if "nearest" in name and not name.startswith("any")
        )
        + ".",
        "",
        *check_lines(result),
        f"**Chosen default: `threshold={chosen['threshold']}`**, {result['rule']}. At it "
        f"{pct(chosen['pair_recall'])}% of the copy pairs are found ({pct(chosen['group_recall'])}% of the photos "
        f"with all {len(EDITS)} copies in one group of their own), {pct(chosen['pair_precision'])}% of the merged "
        f"pairs are right, and {chosen['negatives_merged']} of the {counts['negatives']} hard negatives are merged "
        "with something.",
    ]
    return "\n".join(lines)


def check_lines(result: dict[str, Any]) -> list[str]:
    """The database checks in words (none when the run skipped them)."""
    lines = []
    pipeline, orm = result["checks"].get("pipeline"), result["checks"].get("orm")
    if pipeline:
        lines.append(
            f"Same vectors as the pipeline: {pipeline['images']} of the images (every kind) embedded again by "
            f"`pipeline.embed_pks` as rows of the example `Photo`: largest difference "
            f"{pipeline['max_abs_difference']:g}, largest cosine distance {pipeline['max_cosine_distance']:.1e}."
        )
    if orm and "skipped" in orm:
        lines.append(f"Through the ORM: skipped ({orm['skipped']}).")
    elif orm:
        lines.append(
            f"Through the ORM: `Photo.objects.near_duplicates(threshold={orm['threshold']})` (the HNSW index) on a "
            f"table of the same {result['counts']['images']} images with these vectors gives {orm['groups_orm']} "
            f"groups, {orm['same_groups']} of them the benchmark's {orm['groups_benchmark']}"
            + (" (identical)" if orm["identical"] else "")
            + f", in {orm['seconds']:g} s."
        )
    return [line + "\n" for line in lines]


def write_docs(path: Path, block: str) -> None:
    """Replace the text between the markers of ``path`` (add a "Choosing the threshold" section when absent)."""
    text = path.read_text("utf-8") if path.exists() else "# Near-duplicates\n"
    block = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Choosing the threshold\n\n" + block + "\n"
    path.write_text(text, "utf-8")


# -- the same through the database ---------------------------------------------------------------


def link_files(media: Path, items: Sequence[Item]) -> list[str]:
    """Each item's file linked under ``media/dupbench/`` (storage names, nothing copied)."""
    names = []
    for it in items:
        target = media / "dupbench" / it.key
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(it.path.resolve())
        names.append(f"dupbench/{it.key}")
    return names


def verify_pipeline(items: Sequence[Item], vectors: np.ndarray, count: int, media: Path) -> dict[str, Any]:
    """``count`` items (every edit and negatives among them) embedded by ``embed_pks`` as rows of
    the example ``Photo`` model: their stored visual vectors against the benchmark's."""
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.pipeline import embed_pks
    from photos.models import Photo

    by_kind: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_kind.setdefault(it.kind, []).append(i)
    each = max(1, count // len(by_kind))  # some of every kind, spread over the run
    picked = sorted(
        rows[j] for rows in by_kind.values() for j in np.linspace(0, len(rows) - 1, min(each, len(rows))).astype(int)
    )
    names = link_files(media, [items[i] for i in picked])
    rows = Photo.objects.bulk_create([Photo(image=name) for name in names])
    pks = [row.pk for row in rows]
    try:
        report = embed_pks(Photo, pks)
        if report.failed:
            raise RuntimeError(f"embed_pks failed: {report.failed}")
        column = get_embedding_field(Photo).visual_field
        stored = dict(Photo.objects.filter(pk__in=pks).values_list("pk", column))
    finally:
        Photo.objects.filter(pk__in=pks).delete()
    got = np.stack([np.asarray(stored[pk], dtype=np.float32) for pk in pks])
    ours = vectors[picked]
    return {
        "images": len(picked),
        "kinds": sorted({items[i].kind for i in picked}),
        "max_abs_difference": float(np.abs(got - ours).max()),
        "max_cosine_distance": float((1.0 - np.einsum("ij,ij->i", got, ours)).max()),
    }


def orm_check(items: Sequence[Item], vectors: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """The same rows (with the benchmark's vectors) grouped by ``Photo.objects.near_duplicates``."""
    from django.utils import timezone

    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.fields import get_embedding_field
    from photos.models import Photo

    if not hasattr(Photo.objects, "near_duplicates"):
        return {"skipped": "this checkout has no near_duplicates() yet"}
    field = get_embedding_field(Photo)
    identity, now = get_encoder().identity, timezone.now()
    rows = [
        Photo(
            image=f"dupbench/{it.key}",
            **{
                field.visual_field: vector,
                field.column("status"): "embedded",
                field.column("encoder"): identity,
                field.column("updated_at"): now,
            },
        )
        for it, vector in zip(items, vectors, strict=True)
    ]
    pks = [row.pk for row in Photo.objects.bulk_create(rows, batch_size=500)]
    position = {pk: i for i, pk in enumerate(pks)}
    try:
        started = time.perf_counter()
        found = Photo.objects.near_duplicates(threshold=threshold)  # type: ignore[attr-defined]
        # DuplicateGroup.pks (wt-dups); a plain list of rows or pks would do as well
        theirs = {frozenset(position[getattr(m, "pk", m)] for m in getattr(g, "pks", g)) for g in found}
        seconds = time.perf_counter() - started
    finally:
        Photo.objects.filter(pk__in=pks).delete()
    ours = {frozenset(np.flatnonzero(labels == label).tolist()) for label in np.unique(labels)}
    ours = {g for g in ours if len(g) >= 2}
    return {
        "threshold": threshold,
        "seconds": round(seconds, 1),
        "groups_benchmark": len(ours),
        "groups_orm": len(theirs),
        "same_groups": len(ours & theirs),
        "identical": ours == theirs,
        # the groups that differ, as item keys (a link the HNSW probe missed, or a distance a hair
        # from the threshold computed in float32 here and by pgvector there)
        "only_benchmark": [sorted(items[i].key for i in g) for g in sorted(ours - theirs, key=min)[:10]],
        "only_orm": [sorted(items[i].key for i in g) for g in sorted(theirs - ours, key=min)[:10]],
    }


# -- the run -------------------------------------------------------------------------------------


def setup_django(pgdata: Path | None) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if pgdata is None:
        os.environ.setdefault("DATABASE_URL", "postgresql://localhost/unused")  # no database needed
    else:
        os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", str(pgdata))
    import django

    django.setup()


def throwaway_database(tmp: Path, work: Callable[[Path], Any]) -> Any:
    """``work(media_root)`` against a fresh database and an empty MEDIA_ROOT, both dropped after."""
    from contextlib import redirect_stdout

    from django.db import connection
    from django.test import override_settings

    media = tmp / "media"
    media.mkdir(exist_ok=True)
    connection.settings_dict.setdefault("TEST", {})["NAME"] = "duplicates_bench"
    with redirect_stdout(sys.stderr):
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        with override_settings(MEDIA_ROOT=str(media)):
            return work(media)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


def uptime_load() -> str:
    try:
        return (
            subprocess.run(["uptime"], capture_output=True, text=True, check=True)
            .stdout.split("load average:")[1]
            .strip()
        )
    except (OSError, subprocess.CalledProcessError, IndexError):
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--test", type=Path, default=EVAL / "flickr8k_test1k")
    parser.add_argument("--train", type=Path, default=EVAL / "flickr8k_train")
    parser.add_argument("--limit", type=int, help="Use only the first N test images.")
    parser.add_argument(
        "--negatives",
        choices=["hard", "all", "none"],
        default="hard",
        help="hard: dog+grass and caption neighbours (default); all: every train image",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=K, help="Neighbours per image, as near_duplicates() asks the index.")
    parser.add_argument("--floor", type=float, default=0.99, help="Precision the chosen threshold must keep.")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "dsi-duplicates-bench")
    parser.add_argument("--verify", type=int, default=32, help="Images to embed again through embed_pks (0: none).")
    parser.add_argument(
        "--orm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Group the chosen threshold through Photo.objects.near_duplicates too.",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "duplicates.md"), help="'-' prints the section")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "duplicates-threshold.json")
    parser.add_argument("--picture", type=Path, default=ROOT / "docs" / "img" / "duplicates-threshold.png")
    args = parser.parse_args(argv)
    command = "python benchmarks/duplicates_threshold.py " + " ".join(argv if argv is not None else sys.argv[1:])

    started = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="duplicates-bench-") as tmp_name:
        tmp = Path(tmp_name)
        needs_db = args.verify > 0 or args.orm
        setup_django(tmp / "pgdata" if needs_db else None)
        from benchmarks.machine import describe
        from django_semantic_images.encoders import get_encoder

        items = build_items(
            args.test,
            args.train,
            args.cache / f"copies-{RECIPE}-seed{args.seed}",
            limit=args.limit,
            seed=args.seed,
            negatives="hard" if args.negatives == "none" else args.negatives,
        )
        if args.negatives == "none":
            items = [it for it in items if it.kind != "negative"]
        embed_started = time.perf_counter()
        vectors = embed(items, args.cache, args.seed, args.batch_size)
        embed_seconds = time.perf_counter() - embed_started
        index, dist = nearest(vectors, args.k)
        rows = []
        for threshold in THRESHOLDS:
            rows.append({"threshold": threshold, **score(group(index, dist, threshold), items)})
        chosen = choose(rows, args.floor)
        log(
            f"chosen {chosen['threshold']}: pair P/R {chosen['pair_precision']:.4f}/{chosen['pair_recall']:.4f}, "
            f"group P/R {chosen['group_precision']:.4f}/{chosen['group_recall']:.4f}"
        )

        def database_checks(media: Path) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if args.verify > 0:
                out["pipeline"] = verify_pipeline(items, vectors, min(args.verify, len(items)), media)
                log(f"pipeline check: {out['pipeline']}")
            if args.orm:
                labels = group(index, dist, chosen["threshold"])
                out["orm"] = orm_check(items, vectors, labels, chosen["threshold"])
                log(f"ORM check: {out['orm']}")
            return out

        checks = throwaway_database(tmp, database_checks) if needs_db else {}
        encoder = get_encoder().identity
        machine = describe()
    result = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "command": command.strip(),
        "machine": machine,
        "load": uptime_load(),
        "minutes": (time.perf_counter() - started) / 60,
        "embed_note": f"{len(items)} vectors, {embed_seconds / 60:.1f} min to embed or read from the cache",
        "encoder": encoder,
        "seed": args.seed,
        "k": args.k,
        "counts": {
            "images": len(items),
            "originals": sum(it.kind == "original" for it in items),
            "copies": sum(it.kind in EDITS for it in items),
            "negatives": sum(it.kind == "negative" for it in items),
            "dog_grass": sum(it.dog_grass for it in items),
        },
        "rule": f"the largest threshold at which both pair and group precision are at least {args.floor}",
        "chosen": chosen,
        "rows": rows,
        "distances": distances(items, vectors, index, dist),
        "closest_distinct_pairs": closest_strangers(items, index, dist),
        "checks": checks,
    }
    block = render(result, "img/" + args.picture.name)
    if args.out == "-":
        print(block)
    else:
        plot(rows, chosen, args.floor, args.picture)
        write_docs(Path(args.out), block)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        log(f"Wrote {args.out}, {args.picture} and {args.json}.")
    print(f"chosen threshold: {chosen['threshold']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
