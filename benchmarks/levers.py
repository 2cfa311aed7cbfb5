"""Issue 14's levers for English relevance, measured over cached CNN outputs (``benchmarks/levers_cnn.py``).

Each variant builds ConSE vectors (and optionally a learned bridge, 0.2 ConSE + 0.8 bridge) from the CNN
outputs of one or several views and ranks every gallery image for every caption by exact cosine (what
``semantic_search`` does without an index), ties broken at random, as ``benchmarks/languages.py`` does.
The formulas are the package's: ``ConSEEncoder.soften()``/``conse()``, ``training.fit_linear_bridge()``,
``LearnedBridge.apply()``.

Splits (``--split``):
  * ``val``: choosing settings on the train split only: the gallery is the first ``--val-images`` train
    images (sorted by name), their captions the queries; bridges are trained on train images
    ``--bridge-train START STOP`` (never the gallery's);
  * ``test``: the 1k test images and their 5,000 captions; bridges trained on the train images
    ``--bridge-train`` (default: all 6,000). Report the test once, for settings chosen on ``val``.

"+/- x" after a difference is the standard error of the paired difference in R@5 over the queries
(hit or miss per query, same queries), so a gain of 2 standard errors or more is more than noise.

    python benchmarks/levers.py --split val --set prompts
    python benchmarks/levers.py --split test --set final
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
# ../shared/eval beside the repository (a worktree under /work/wt/ finds /work/shared/eval).
EVAL = next((p / "shared" / "eval" for p in ROOT.parents if (p / "shared" / "eval").is_dir()), ROOT.parent / "shared")

from benchmarks.levers_cnn import Network, image_names  # noqa: E402

BASE_PROMPTS = ("a photo of a {name}.", "{name}: {gloss}", "a {name} in the picture")
CLIP7 = (
    "itap of a {name}.",
    "a bad photo of the {name}.",
    "a origami {name}.",
    "a photo of the large {name}.",
    "a {name} in a video game.",
    "art of the {name}.",
    "a photo of the small {name}.",
)
PHOTO5 = (
    "a photo of a {name}.",
    "a picture of a {name}.",
    "an image of a {name}.",
    "a close-up photo of a {name}.",
    "a photo of the {name}.",
)
SCENE = ("there is a {name} in the picture.", "a {name}.", "a photo of a {name} outdoors.")
PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "base3": BASE_PROMPTS,
    "base3+photo5": BASE_PROMPTS + PHOTO5[1:],
    "base3+clip7": BASE_PROMPTS + CLIP7,
    "base3+scene3": BASE_PROMPTS + SCENE,
    "gloss+photo5": ("{name}: {gloss}",) + PHOTO5,
    "base3+photo5+scene3": BASE_PROMPTS + PHOTO5[1:] + SCENE,
    "gloss2": ("a photo of a {name}.", "{name}: {gloss}", "a {name} in the picture", "a photo of a {name}, {gloss}"),
}


class Missing(Exception):
    """CNN outputs not cached (and ``--compute`` not given)."""


@dataclass
class Variant:
    """One way of making the gallery's vectors."""

    name: str
    network: str = "lite0"
    views: tuple[str, ...] = ("center",)
    prompts: str = "base3"
    temperature: float = 3.0
    top_k: int = 1000
    bridge: bool = False
    bridge_views: tuple[str, ...] | None = None  # views whose mean features train/feed the bridge (default: views)
    notes: list[str] = field(default_factory=list)


def captions_of(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with (folder / "captions.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["image"], []).append(row["caption"].strip())
    return out


class Text:
    """MiniLM (the package's text model) with a disk cache of sentence vectors."""

    def __init__(self, cache: Path) -> None:
        from django_semantic_images.encoders.conse import ConSEEncoder

        self.cache = cache
        self.encoder = ConSEEncoder(bridge=None)
        self.ident = self.encoder.text_spec.identity

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        key = hashlib.sha256(json.dumps([self.ident, list(texts)]).encode()).hexdigest()[:16]
        path = self.cache / f"levers-text-{key}.npy"
        if path.exists():
            return np.load(path)
        vectors = self.encoder.encode_texts(list(texts))
        np.save(path, vectors)
        return vectors

    def class_vectors(self, prompts: Sequence[str]) -> np.ndarray:
        """As ``ConSEEncoder.class_vectors()`` (centred), one template at a time (cached)."""
        from django_semantic_images.encoders.base import l2_normalize

        vectors = l2_normalize(np.sum([self.encode(self.encoder.label_texts(p)) for p in prompts], axis=0))
        return vectors - vectors.mean(axis=0)


def conse(logits: np.ndarray, label_vectors: np.ndarray, temperature: float, top_k: int) -> np.ndarray:
    from django_semantic_images.encoders.conse import ConSEEncoder

    enc = ConSEEncoder(bridge=None, temperature=temperature, top_k=top_k)
    enc.label_vectors = label_vectors
    return enc.conse(enc.soften(logits))


def hits_and_ranks(queries: np.ndarray, gallery: np.ndarray, right: np.ndarray, seed: int) -> np.ndarray:
    from django_semantic_images.metrics import rank_of

    rng = np.random.default_rng(seed)
    scores = queries @ gallery.T
    return np.array([rank_of(row, int(r), rng) for row, r in zip(scores, right, strict=True)])


def summary(ranks: np.ndarray) -> dict[str, float]:
    return {
        "r1": 100 * float(np.mean(ranks <= 1)),
        "r5": 100 * float(np.mean(ranks <= 5)),
        "r10": 100 * float(np.mean(ranks <= 10)),
        "median": float(np.median(ranks)),
    }


class Lab:
    def __init__(self, args: argparse.Namespace, log=print) -> None:
        self.args = args
        self.log = log
        self.cache = args.cache
        self.text = Text(args.cache)
        self.train_dir = args.train
        if args.split == "val":
            self.gallery_dir = args.train
            self.gallery = image_names(args.train)[: args.val_images]
        else:
            self.gallery_dir = args.test
            self.gallery = image_names(args.test)[: args.limit] if args.limit else image_names(args.test)
        start, stop = args.bridge_train
        self.bridge_images = image_names(args.train)[start:stop]
        if args.split == "val" and set(self.bridge_images) & set(self.gallery):
            raise SystemExit("The bridge's training images overlap the validation gallery.")
        caps = captions_of(self.gallery_dir)
        self.queries = [c for n in self.gallery for c in caps[n]]
        self.right = np.array([i for i, n in enumerate(self.gallery) for _ in caps[n]])
        self.query_vectors = self.text.encode(self.queries)
        self.networks: dict[str, Network] = {}
        self._bridges: dict[Any, Any] = {}

    def net(self, name: str) -> Network:
        if name not in self.networks:
            self.networks[name] = Network(name)
        return self.networks[name]

    def views(self, network: str, folder: Path, names: Sequence[str], views: Sequence[str]):
        """Mean features and mean logits over ``views``."""
        outs = [self.net(network).outputs(folder, names, v, self.cache, self.args.compute, self.log) for v in views]
        if any(o is None for o in outs):
            raise Missing(f"{network} {views} of {folder.name} are not all cached (benchmarks/levers_cnn.py)")
        feats = np.mean([o[0] for o in outs], axis=0)
        logits = np.mean([o[1] for o in outs], axis=0)
        return feats, logits

    def bridge(self, v: Variant):
        from django_semantic_images.encoders.base import l2_normalize
        from django_semantic_images.encoders.bridges import LearnedBridge
        from django_semantic_images.training import TrainingOptions, fit_linear_bridge

        views = v.bridge_views or v.views
        key = (v.network, views, self.args.bridge_seed)
        start, stop = self.args.bridge_train
        named = json.dumps([v.network, views, self.args.bridge_seed, start, stop]).encode()
        path = self.cache / f"levers-bridge-{hashlib.sha256(named).hexdigest()[:16]}.npz"
        if key not in self._bridges and path.exists():
            self._bridges[key] = LearnedBridge.load(path)
        if key not in self._bridges:
            started = time.perf_counter()
            feats, _ = self.views(v.network, self.train_dir, self.bridge_images, views)
            caps = captions_of(self.train_dir)
            # Caption vectors in blocks of 1,000 images, so one slice's cache serves a longer one.
            blocks = [self.bridge_images[b : b + 1000] for b in range(0, len(self.bridge_images), 1000)]
            texts = np.concatenate([self.text.encode([c for n in block for c in caps[n]]) for block in blocks])
            owner = np.array([i for i, n in enumerate(self.bridge_images) for _ in caps[n]])
            weight, bias = fit_linear_bridge(
                l2_normalize(feats), texts, owner, TrainingOptions(seed=self.args.bridge_seed)
            )
            self._bridges[key] = LearnedBridge(weight, bias, 0.2)
            self._bridges[key].save(path)
            self.log(f"bridge {key}: {len(self.bridge_images)} images, {time.perf_counter() - started:.0f} s")
        return self._bridges[key]

    def gallery_vectors(self, v: Variant) -> np.ndarray:
        from django_semantic_images.encoders.base import l2_normalize

        feats, logits = self.views(v.network, self.gallery_dir, self.gallery, v.views)
        semantic = conse(logits, self.text.class_vectors(PROMPT_SETS[v.prompts]), v.temperature, v.top_k)
        if v.bridge:
            if v.bridge_views and v.bridge_views != v.views:
                feats, _ = self.views(v.network, self.gallery_dir, self.gallery, v.bridge_views)
            semantic = self.bridge(v).apply(l2_normalize(feats), semantic)
        return semantic

    def ranks(self, v: Variant) -> np.ndarray:
        return hits_and_ranks(self.query_vectors, self.gallery_vectors(v), self.right, self.args.seed)


def variant_sets() -> dict[str, list[Variant]]:
    sets: dict[str, list[Variant]] = {}
    sets["prompts"] = [Variant(f"prompts {p}", prompts=p) for p in PROMPT_SETS]
    sets["temperature"] = [
        Variant(f"{p} T={t:g} top={k}", prompts=p, temperature=t, top_k=k)
        for p in ("base3", "base3+photo5")
        for t in (2.0, 2.5, 3.0, 3.5)
        for k in (1000, 100)
    ]
    sets["flip"] = [
        Variant("lite0 center", views=("center",)),
        Variant("lite0 center+flip", views=("center", "flip")),
        Variant("lite0 full", views=("full",)),
        Variant("lite0 center+full", views=("center", "full")),
        Variant("lite0 center+flip+full", views=("center", "flip", "full")),
    ]
    sets["networks"] = [
        Variant("lite0 center", network="lite0"),
        Variant("lite1 center", network="lite1"),
        Variant("lite2 center", network="lite2"),
    ]
    # Lite1 with the mirror (ENCODER_OPTIONS {"cnn": "lite1", "flip": True}), beside each alone.
    sets["lite1flip"] = [
        Variant("lite0 center", network="lite0"),
        Variant("lite1 center", network="lite1"),
        Variant("lite1 center+flip", network="lite1", views=("center", "flip")),
        Variant("lite0 center+flip", network="lite0", views=("center", "flip")),
    ]
    sets["bridge"] = [
        Variant("bridge lite0 center", bridge=True),
        Variant("bridge lite0 center+flip", views=("center", "flip"), bridge=True),
        Variant("bridge lite0 center+full", views=("center", "full"), bridge=True),
        Variant("bridge lite0 center+flip+full", views=("center", "flip", "full"), bridge=True),
    ]
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--set", nargs="+", default=["prompts"])
    parser.add_argument("--train", type=Path, default=EVAL / "flickr8k_train")
    parser.add_argument("--test", type=Path, default=EVAL / "flickr8k_test1k")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--bridge-train", type=int, nargs=2, default=None, metavar=("START", "STOP"))
    parser.add_argument("--bridge-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/levers"))
    parser.add_argument("--json", type=Path, help="Write the figures here too.")
    parser.add_argument("--compute", action="store_true", help="Run the CNN for outputs not cached.")
    args = parser.parse_args(argv)
    if args.bridge_train is None:
        args.bridge_train = [args.val_images, 2000] if args.split == "val" else [0, 6000]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django
    import torch

    torch.set_num_threads(2)
    django.setup()
    from django.test import override_settings

    args.cache.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    sets = variant_sets()
    command = "python benchmarks/levers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    with override_settings(SEMANTIC_IMAGES={"ENCODER_OPTIONS": {"bridge": None}}):
        lab = Lab(args, log)
        for set_name in args.set:
            base = None
            for v in sets[set_name]:
                started = time.perf_counter()
                try:
                    ranks = lab.ranks(v)
                except Missing as exc:
                    log(f"[{set_name}] {v.name}: skipped, {exc}")
                    continue
                s = summary(ranks)
                diff = ""
                if base is None:
                    base = ranks
                else:
                    d = (ranks <= 5).astype(float) - (base <= 5).astype(float)
                    diff = f"{100 * d.mean():+.1f} +/- {100 * d.std(ddof=1) / np.sqrt(len(d)):.1f}"
                row = {"set": set_name, "variant": v.name, **s, "vs_first": diff, "queries": len(ranks)}
                rows.append(row)
                log(
                    f"[{set_name}] {v.name}: R@1 {s['r1']:.1f} R@5 {s['r5']:.1f} R@10 {s['r10']:.1f} "
                    f"median {s['median']:g} {diff} "
                    f"({time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f})"
                )
    print(
        f"`{command}` ({args.split}: {len(lab.gallery)} images, {len(lab.queries)} queries; "
        f"bridge images {args.bridge_train[0]}-{args.bridge_train[1]} of the train split)\n"
    )
    print("| set | variant | R@1 | R@5 | R@10 | median rank | R@5 vs first row |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['variant']} | {r['r1']:.1f} | {r['r5']:.1f} | {r['r10']:.1f} | {r['median']:g} | "
            f"{r['vs_first']} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
