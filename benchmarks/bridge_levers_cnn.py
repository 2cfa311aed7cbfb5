"""EfficientNet-Lite0/Lite1 feature maps (float16) and class logits of captioned images, cached.

For ``benchmarks/bridge_levers.py`` (issue 14, the learned bridge >= 60): one CNN pass per view gives
the last feature map, from which the pooled vector (what the encoder stores), region-pooled vectors
(a 2 x 2 grid), max or GeM pooling can all be made without running the CNN again. Views as in
``benchmarks/levers_cnn.py`` (``center``: the encoder's centre crop, 256 -> 224 for Lite0, 272 -> 240 for
Lite1; ``flip``: its mirror). Lite0's map is 7 x 7 x 1280, Lite1's 8 x 8 x 1280 (240 / 32, rounded up:
"SAME" padding). Chunks of 250 images (sorted names) under ``--cache``, named by the CNN.

    nice -n 5 python benchmarks/bridge_levers_cnn.py --folder ../shared/eval/flickr8k_train --views center flip
    nice -n 5 python benchmarks/bridge_levers_cnn.py --cnn lite1 --folder ../shared/eval/flickr8k_test1k
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.levers_cnn import CHUNK, image_names, pixels  # noqa: E402
from django_semantic_images.encoders.networks import CNNS, ENCODER_CNNS  # noqa: E402


def chunk_path(cache: Path, folder: Path, view: str, names: Sequence[str], cnn: str = "lite0") -> Path:
    key = json.dumps([f"{cnn}-map", folder.name, view, list(names)])  # Lite0's key as before: old caches stay valid
    return cache / f"map-{cnn}-{view}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def run(model, folder: Path, names: Sequence[str], view: str, side: int = 224) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torch.nn import functional as F

    maps, logits = [], []
    for start in range(0, len(names), 32):
        batch = np.stack([pixels((folder / "images" / n).read_bytes(), side, view) for n in names[start : start + 32]])
        with torch.inference_mode():
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            x = F.relu6(model._bn0(model._conv_stem(x)))
            for block in model._blocks:
                x = block(x)
            fmap = F.relu6(model._bn1(model._conv_head(x)))
            logits.append(model._fc(fmap.mean(dim=(2, 3))).numpy())
            maps.append(fmap.permute(0, 2, 3, 1).numpy().astype(np.float16))
    return np.concatenate(maps), np.concatenate(logits)


def load(
    folder: Path, names: Sequence[str], view: str, cache: Path, compute: bool = False, log=print, cnn: str = "lite0"
):
    """(pooled (n, 7, 1280) as ``pool()``, logits (n, 1000)) of ``names`` through ``cnn``; None when not cached."""
    every = image_names(folder)
    index = {n: i for i, n in enumerate(every)}
    wanted = [index[n] for n in names]
    out_m: dict[int, np.ndarray] = {}
    out_l: dict[int, np.ndarray] = {}
    model = None
    for c in sorted({i // CHUNK for i in wanted}):
        part = every[c * CHUNK : (c + 1) * CHUNK]
        path = chunk_path(cache, folder, view, part, cnn)
        if not path.exists():
            if not compute:
                return None
            if model is None:
                from django_semantic_images.encoders.efficientnet_lite import load_lite

                model = load_lite(cnn)
            started = time.perf_counter()
            m, g = run(model, folder, part, view, CNNS[cnn].side)
            np.savez(path, maps=m, logits=g)
            per = (time.perf_counter() - started) / len(part)
            log(f"{cnn} {view} {folder.name} chunk {c}: {1000 * per:.0f} ms/image (load {os.getloadavg()[0]:.1f})")
        with np.load(path) as z:
            m_all, g_all = z["maps"], z["logits"]
        pooled = pool(m_all.astype(np.float32))
        for j, i in enumerate(range(c * CHUNK, c * CHUNK + len(part))):
            out_m[i], out_l[i] = pooled[j], g_all[j]
    return np.stack([out_m[i] for i in wanted]), np.stack([out_l[i] for i in wanted])


def pool(maps: np.ndarray) -> np.ndarray:
    """(n, s, s, C) -> (n, 7, C): mean, 2 x 2 grid means (halves of ceil(s / 2) rows/columns: for s = 7,
    0-3 and 3-6, the centre line shared; for s = 8, 0-3 and 4-7), max, GeM (p = 3)."""
    mean = maps.mean(axis=(1, 2))
    half = (maps.shape[1] + 1) // 2
    starts = (0, maps.shape[1] - half)
    grid = [maps[:, r : r + half, c : c + half].mean(axis=(1, 2)) for r in starts for c in starts]
    mx = maps.max(axis=(1, 2))
    gem = np.cbrt(np.mean(np.clip(maps, 1e-6, None) ** 3, axis=(1, 2)))
    return np.stack([mean, *grid, mx, gem], axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--cnn", default="lite0", choices=ENCODER_CNNS)
    parser.add_argument("--views", nargs="+", default=["center"], choices=["center", "flip"])
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/bridge60"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    args.cache.mkdir(parents=True, exist_ok=True)
    names = image_names(args.folder)[args.start : args.stop]
    for view in args.views:
        load(args.folder, names, view, args.cache, compute=True, log=lambda s: print(s, flush=True), cnn=args.cnn)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
