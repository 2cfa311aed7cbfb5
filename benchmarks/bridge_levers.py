"""Issue 14, the learned bridge >= 60: training and image-side levers, over cached Lite0 (or Lite1) feature maps.

CNN outputs come from ``benchmarks/bridge_levers_cnn.py`` (pooled, 2 x 2 grid, max and GeM vectors per
view; ``--cnn lite1`` for Lite1's); caption vectors from MiniLM (cached as ``benchmarks/levers.py`` does).
ConSE vectors, the bridge and the blend are the package's (``ConSEEncoder.soften()/conse()``,
``training.fit_linear_bridge()``, ``LearnedBridge.apply()``); ranking is exact cosine with random tie
breaks (``levers.hits_and_ranks``).

Splits:
  * ``val``: gallery = the first 1,000 train images (sorted by name), their 5,000 captions the queries;
    bridges trained on train images 1000-5999 (5,000 images, every caption of each);
  * ``test``: the 1k test images and their 5,000 captions; bridges trained on all 6,000 train images.

Each variant is trained with ``--seeds`` seeds; the table gives R@5 mean +/- std over seeds (the
run-to-run noise of training), and the paired difference against the first row (same seeds).

    nice -n 5 python benchmarks/bridge_levers.py --split val --set training --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]

from benchmarks.bridge_levers_cnn import load as load_cnn  # noqa: E402
from benchmarks.levers import EVAL, PROMPT_SETS, Text, captions_of, conse, hits_and_ranks  # noqa: E402
from benchmarks.levers_cnn import image_names  # noqa: E402
from django_semantic_images.encoders.networks import ENCODER_CNNS  # noqa: E402
from django_semantic_images.training import TrainingOptions  # noqa: E402

#: index into ``bridge_levers_cnn.pool()``'s second axis
POOLS = {"mean": [0], "grid": [1, 2, 3, 4], "max": [5], "gem": [6]}


@dataclass
class Variant:
    name: str
    views: tuple[str, ...] = ("center",)
    features: str = "mean"  # mean | gem | max | mean+grid (concatenated, each part normalised) | mean+gem
    # The bridge's training (epochs, temperature, dropout ...); its seed and ensemble are set per run below.
    training: TrainingOptions = field(default_factory=TrainingOptions)
    transform: str = ""  # "sqrt": square root of the (non-negative) features first; "center": minus the train mean
    hidden: int = 0  # > 0: one hidden layer (MLP bridge)
    ensemble: int = 1  # average this many bridges' weights (seeds seed*100 + k)
    extra: dict[str, Any] = field(default_factory=dict)


#: The training options a variant changes through ``tuned`` (seed and ensemble are the benchmark's own).
TRAINING_FIELDS = {f.name for f in fields(TrainingOptions)} - {"seed", "ensemble"}


def tuned(base: Variant, name: str, **changes: Any) -> Variant:
    """``base`` named ``name``, with ``changes`` to its own fields or to its training options."""
    training = {key: changes.pop(key) for key in list(changes) if key in TRAINING_FIELDS}
    return replace(base, name=name, training=replace(base.training, **training), **changes)


class Data:
    def __init__(self, args: argparse.Namespace, log) -> None:
        self.args, self.log = args, log
        self.text = Text(args.cache)
        train_names = image_names(args.train)
        if args.split == "val":
            self.gallery_dir, self.gallery = args.train, train_names[: args.val_images]
            self.bridge_names = train_names[args.val_images : args.train_stop]
        else:
            self.gallery_dir, self.gallery = args.test, image_names(args.test)
            self.bridge_names = train_names[: args.train_stop]
        caps = captions_of(self.gallery_dir)
        self.queries = [c for n in self.gallery for c in caps[n]]
        self.right = np.array([i for i, n in enumerate(self.gallery) for _ in caps[n]])
        self.query_vectors = self.text.encode(self.queries)
        tcaps = captions_of(args.train)
        blocks = [self.bridge_names[b : b + 1000] for b in range(0, len(self.bridge_names), 1000)]
        self.caption_vectors = np.concatenate(
            [self.text.encode([c for n in block for c in tcaps[n]]) for block in blocks]
        )
        self.owner = np.array([i for i, n in enumerate(self.bridge_names) for _ in tcaps[n]])
        self.label_vectors = self.text.class_vectors(PROMPT_SETS["base3"])
        self._cnn: dict[Any, Any] = {}

    def cnn(self, which: str, view: str):
        key = (which, view)
        if key not in self._cnn:
            folder, names = (
                (self.gallery_dir, self.gallery) if which == "gallery" else (self.args.train, self.bridge_names)
            )
            out = load_cnn(folder, names, view, self.args.cache_cnn, cnn=self.args.cnn)
            if out is None:
                raise SystemExit(
                    f"{self.args.cnn} {view} outputs of {folder.name} not cached: run benchmarks/bridge_levers_cnn.py"
                )
            self._cnn[key] = out
        return self._cnn[key]

    def features(self, which: str, v: Variant) -> tuple[np.ndarray, np.ndarray]:
        """(visual features, mean logits) over the variant's views."""
        from django_semantic_images.encoders.base import l2_normalize

        pooled = np.mean([self.cnn(which, view)[0] for view in v.views], axis=0)
        logits = np.mean([self.cnn(which, view)[1] for view in v.views], axis=0)
        parts = []
        for name in v.features.split("+"):
            for i in POOLS[name]:
                x = pooled[:, i]
                if "sqrt" in v.transform:
                    x = np.sqrt(np.clip(x, 0, None))
                if "center" in v.transform:
                    x = l2_normalize(x) - self.train_mean(v, name, i)
                parts.append(l2_normalize(x))
        feats = np.concatenate(parts, axis=1) / np.sqrt(len(parts))
        return feats.astype(np.float32), logits

    def train_mean(self, v: Variant, name: str, i: int) -> np.ndarray:
        """Mean of the normalised (and square-rooted) training features of pool ``i``."""
        from django_semantic_images.encoders.base import l2_normalize

        key = ("mean", v.views, v.transform, i)
        if key not in self._cnn:
            x = np.mean([self.cnn("bridge", view)[0][:, i] for view in v.views], axis=0)
            if "sqrt" in v.transform:
                x = np.sqrt(np.clip(x, 0, None))
            self._cnn[key] = l2_normalize(x).mean(axis=0)
        return self._cnn[key]


def fit_mlp(visual, text_vectors, owner, options, hidden: int):
    """As ``training.fit_linear_bridge`` with one hidden layer (GELU) plus a linear shortcut."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from django_semantic_images.training import caption_infonce

    gen = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    d_in, d_out = visual.shape[1], text_vectors.shape[1]
    lin = nn.Linear(d_in, d_out)
    mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(options.dropout), nn.Linear(hidden, d_out))
    dropout = nn.Dropout(options.dropout)
    params = list(lin.parameters()) + list(mlp.parameters())
    x_all = torch.from_numpy(np.ascontiguousarray(visual, np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(text_vectors, np.float32))
    owners = torch.from_numpy(np.asarray(owner, np.int64))
    n = len(owners)
    steps = max(1, options.epochs * -(-n // options.batch_size))
    opt = torch.optim.AdamW(params, lr=options.learning_rate, weight_decay=options.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, options.learning_rate, total_steps=steps)
    with torch.enable_grad():
        for _ in range(options.epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, options.batch_size):
                batch = perm[start : start + options.batch_size]
                if len(batch) < 2:
                    continue
                img = owners[batch]
                x = dropout(x_all[img])
                z = F.normalize(lin(x) + mlp(x), dim=-1)
                loss = caption_infonce(z, y_all[batch], img, options.temperature)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    lin.eval()
    mlp.eval()

    def project(v: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(v, np.float32))
            return (lin(x) + mlp(x)).numpy()

    return project


def gallery_vectors(data: Data, v: Variant, seed: int) -> np.ndarray:
    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.training import fit_linear_bridge

    train_feats, _ = data.features("bridge", v)
    gal_feats, gal_logits = data.features("gallery", v)
    semantic = conse(gal_logits, data.label_vectors, 3.0, 1000)
    options = v.training
    x_train, x_gal = l2_normalize(train_feats), l2_normalize(gal_feats)
    if v.hidden:
        projected = np.mean(
            [
                l2_normalize(
                    fit_mlp(x_train, data.caption_vectors, data.owner, replace(options, seed=seed * 100 + k), v.hidden)(
                        x_gal
                    )
                )
                for k in range(v.ensemble)
            ],
            axis=0,
        )
    else:
        fits = [
            fit_linear_bridge(x_train, data.caption_vectors, data.owner, replace(options, seed=seed * 100 + k))
            for k in range(v.ensemble)
        ]
        weight = np.mean([f[0] for f in fits], axis=0)
        bias = np.mean([f[1] for f in fits], axis=0)
        projected = x_gal @ weight + bias
    w = options.conse_weight
    return l2_normalize(w * l2_normalize(semantic) + (1 - w) * l2_normalize(projected))


def variant_sets() -> dict[str, list[Variant]]:
    base = Variant("today (linear, 10 epochs, T 0.05, dropout 0.5, lr 1e-3, batch 256, ConSE 0.2)")
    sets: dict[str, list[Variant]] = {}
    sets["training"] = [
        base,
        *[tuned(base, f"epochs {e}", epochs=e) for e in (20, 40)],
        *[tuned(base, f"temperature {t}", temperature=t) for t in (0.03, 0.07)],
        *[tuned(base, f"dropout {d}", dropout=d) for d in (0.3, 0.7)],
        *[tuned(base, f"lr {lr:g}", learning_rate=lr) for lr in (3e-3,)],
        *[tuned(base, f"weight decay {wd:g}", weight_decay=wd) for wd in (0.05,)],
        *[tuned(base, f"batch {b}", batch_size=b) for b in (128, 512)],
        *[tuned(base, f"ConSE weight {c}", conse_weight=c) for c in (0.1, 0.3)],
    ]
    sets["ensemble"] = [base, tuned(base, "ensemble of 3 seeds (weights averaged)", ensemble=3)]
    sets["mlp"] = [
        base,
        tuned(base, "MLP 1024 hidden + linear shortcut", hidden=1024),
        tuned(base, "MLP 1024, 20 epochs", hidden=1024, epochs=20),
    ]
    sets["transform"] = [
        base,
        tuned(base, "square root of features", transform="sqrt"),
        tuned(base, "features centred (train mean)", transform="center"),
        tuned(base, "square root, centred", transform="sqrt+center"),
    ]
    sets["pooling"] = [
        base,
        tuned(base, "GeM (p 3) pooling", features="gem"),
        tuned(base, "max pooling", features="max"),
        tuned(base, "mean + GeM concatenated", features="mean+gem"),
        tuned(base, "mean + 2x2 grid concatenated (6400-d)", features="mean+grid"),
    ]
    sets["flip"] = [
        base,
        tuned(base, "centre + mirror", views=("center", "flip")),
        tuned(base, "centre + mirror, mean + 2x2 grid", views=("center", "flip"), features="mean+grid"),
    ]
    by_name = {v.name: v for group in sets.values() for v in group}
    # The screening that fitted a loaded 2-core machine (2 seeds, 1,000-image bridges): the likeliest levers.
    sets["screen_a"] = [base] + [
        by_name[n]
        for n in (
            "square root of features",
            "square root, centred",
            "epochs 20",
            "dropout 0.3",
            "temperature 0.03",
            "ConSE weight 0.3",
        )
    ]
    sets["screen_b"] = [base] + [
        by_name[n]
        for n in (
            "ensemble of 3 seeds (weights averaged)",
            "GeM (p 3) pooling",
            "mean + 2x2 grid concatenated (6400-d)",
            "MLP 1024 hidden + linear shortcut",
        )
    ]
    sets["screen_c"] = [
        base,
        by_name["dropout 0.7"],
        by_name["temperature 0.07"],
        tuned(base, "square root + ensemble of 3", transform="sqrt", ensemble=3),
        tuned(base, "square root + dropout 0.7", transform="sqrt", dropout=0.7),
    ]
    combined = tuned(
        base,
        "square root + ensemble of 3 + dropout 0.7 + ConSE 0.3",
        transform="sqrt",
        ensemble=3,
        dropout=0.7,
        conse_weight=0.3,
    )
    sets["screen_d"] = [
        base,
        tuned(base, "square root + dropout 0.7 + ConSE 0.3", transform="sqrt", dropout=0.7, conse_weight=0.3),
        combined,
    ]
    sets["final"] = [
        base,
        by_name["ensemble of 3 seeds (weights averaged)"],
        tuned(base, "square root + ensemble of 3", transform="sqrt", ensemble=3),
        combined,
    ]
    sets["final_full"] = [base, sets["final"][2]]
    return sets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--set", nargs="+", default=["training"])
    parser.add_argument("--only", nargs="*", help="Only the variants whose name contains one of these.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=Path, default=EVAL / "flickr8k_train")
    parser.add_argument("--test", type=Path, default=EVAL / "flickr8k_test1k")
    parser.add_argument("--train-stop", type=int, default=6000, help="Bridges train on train images up to this.")
    parser.add_argument("--val-images", type=int, default=1000, help="val: the gallery is this many train images.")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/levers"))
    parser.add_argument("--cache-cnn", type=Path, default=Path("/tmp/bridge60"))
    parser.add_argument("--cnn", default="lite0", choices=ENCODER_CNNS, help="The CNN of the cached feature maps.")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a loaded machine)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django
    import torch

    torch.set_num_threads(args.threads)
    django.setup()
    from django.test import override_settings

    args.cache.mkdir(parents=True, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    command = "python benchmarks/bridge_levers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    with override_settings(SEMANTIC_IMAGES={"ENCODER_OPTIONS": {"bridge": None}}):
        data = Data(args, log)
        for set_name in args.set:
            base_hits = None
            for v in variant_sets()[set_name]:
                if args.only and base_hits is not None and not any(o in v.name for o in args.only):
                    continue
                started = time.perf_counter()
                hits, r1, r10 = [], [], []
                for seed in args.seeds:
                    ranks = hits_and_ranks(data.query_vectors, gallery_vectors(data, v, seed), data.right, 0)
                    hits.append((ranks <= 5).astype(float))
                    r1.append(100 * np.mean(ranks <= 1))
                    r10.append(100 * np.mean(ranks <= 10))
                r5 = [100 * h.mean() for h in hits]
                diff = ""
                if base_hits is None:
                    base_hits = hits
                else:
                    d = np.array([100 * (h - b).mean() for h, b in zip(hits, base_hits, strict=True)])
                    diff = f"{d.mean():+.1f} +/- {d.std(ddof=1) if len(d) > 1 else 0:.1f}"
                row = {
                    "set": set_name,
                    "variant": v.name,
                    "r1": float(np.mean(r1)),
                    "r5": float(np.mean(r5)),
                    "r5_std": float(np.std(r5, ddof=1)) if len(r5) > 1 else 0.0,
                    "r5_runs": r5,
                    "r10": float(np.mean(r10)),
                    "vs_first": diff,
                }
                rows.append(row)
                log(
                    f"[{set_name}] {v.name}: R@1 {row['r1']:.1f} R@5 {row['r5']:.1f} +/- {row['r5_std']:.1f} "
                    f"R@10 {row['r10']:.1f} {diff} ({time.perf_counter() - started:.0f} s, "
                    f"load {os.getloadavg()[0]:.1f})"
                )
                if args.json:
                    args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    print(
        f"`{command}` ({args.split}: {len(data.gallery)} images, {len(data.queries)} queries; "
        f"bridge on {len(data.bridge_names)} train images; {args.cnn}; seeds {args.seeds})\n"
    )
    print("| set | variant | R@1 | R@5 (mean +/- std over seeds) | R@10 | R@5 vs first row |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['set']} | {r['variant']} | {r['r1']:.1f} | {r['r5']:.1f} +/- {r['r5_std']:.1f} | "
            f"{r['r10']:.1f} | {r['vs_first']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
