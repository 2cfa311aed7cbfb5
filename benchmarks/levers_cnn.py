"""CNN outputs (pooled features and class logits) of captioned images, per network and view, cached.

Used by ``benchmarks/levers.py`` (issue 14's levers: flip averaging, several crops, EfficientNet-Lite1/2).
Each image is decoded as the pipeline does (``decode_image`` at ``MAX_IMAGE_SIDE``) and prepared for the
network's input side ``S`` (224 / 240 / 260 for Lite0 / 1 / 2) in one of these views:

  * ``center``: shorter side resized to ``S + 32``, centre crop ``S x S`` (what ``ConSEEncoder.preprocess``
    does for Lite0: 256 -> 224; TensorFlow's EfficientNet evaluation crop for every size);
  * ``flip``: the mirror image of ``center``;
  * ``full``: the whole image resized to ``S x S`` (no crop; squashes a non-square image);
  * ``fullflip``: the mirror image of ``full``.

Outputs are cached under ``--cache`` in chunks of 250 images (named by the network's weights file,
the view, the side and the image names), so a longer slice reuses a shorter one's work.

    python benchmarks/levers_cnn.py --variant lite0 --views center flip --folder ../shared/eval/flickr8k_train \
        --start 0 --stop 3000
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
CHUNK = 250
VIEWS = ("center", "flip", "full", "fullflip")


def image_names(folder: Path) -> list[str]:
    import csv

    with (folder / "captions.csv").open(newline="", encoding="utf-8") as fh:
        return sorted({row["image"] for row in csv.DictReader(fh)})


def pixels(data: bytes, side: int, view: str) -> np.ndarray:
    from PIL import Image

    from django_semantic_images.imaging import decode_image

    image = decode_image(data, min_side=side + 32, max_side=1024).convert("RGB")
    if view.startswith("full"):
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    else:
        w, h = image.size
        scale = (side + 32) / min(w, h)
        image = image.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BICUBIC)
        w, h = image.size
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    arr = ((np.asarray(image, dtype=np.float32) - 127.0) / 128.0).transpose(2, 0, 1)
    if view.endswith("flip"):
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


class Network:
    def __init__(self, variant: str) -> None:
        from django_semantic_images.encoders.efficientnet_lite import LITE_VARIANTS, lite_weights_path, load_lite

        self.variant = variant
        self.side = LITE_VARIANTS[variant][1]
        self.weights = lite_weights_path(variant)
        self._model = None
        self._load = load_lite

    def chunk_path(self, cache: Path, view: str, names: Sequence[str]) -> Path:
        key = json.dumps([Path(self.weights).name, os.path.getsize(self.weights), view, self.side, list(names)])
        return cache / f"levers-{self.variant}-{view}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def run(self, folder: Path, names: Sequence[str], view: str) -> tuple[np.ndarray, np.ndarray, float]:
        import torch

        if self._model is None:
            self._model = self._load(self.variant)
        started = time.perf_counter()
        feats, logits = [], []
        for start in range(0, len(names), 32):
            batch = np.stack(
                [pixels((folder / "images" / n).read_bytes(), self.side, view) for n in names[start : start + 32]]
            )
            with torch.inference_mode():
                x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
                f = self._model.features(x)
                feats.append(f.numpy())
                logits.append(self._model._fc(f).numpy())
        return np.concatenate(feats), np.concatenate(logits), (time.perf_counter() - started) / len(names)

    def outputs(
        self, folder: Path, names: Sequence[str], view: str, cache: Path, compute: bool = True, log=print
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Features and logits of ``names`` (chunks of the folder's sorted image list), computing missing chunks."""
        every = image_names(folder)
        index = {n: i for i, n in enumerate(every)}
        wanted = [index[n] for n in names]
        chunks = sorted({i // CHUNK for i in wanted})
        feats: dict[int, np.ndarray] = {}
        logits: dict[int, np.ndarray] = {}
        for c in chunks:
            part = every[c * CHUNK : (c + 1) * CHUNK]
            path = self.chunk_path(cache, view, part)
            if not path.exists():
                if not compute:
                    return None
                f, g, per = self.run(folder, part, view)
                np.savez(path, feats=f, logits=g, seconds_per_image=per)
                load = os.getloadavg()[0]
                log(f"{self.variant} {view} {folder.name} chunk {c}: {1000 * per:.0f} ms/image (load {load:.1f})")
            with np.load(path) as z:
                f_all, g_all = z["feats"], z["logits"]
            for j, i in enumerate(range(c * CHUNK, c * CHUNK + len(part))):
                feats[i], logits[i] = f_all[j], g_all[j]
        return np.stack([feats[i] for i in wanted]), np.stack([logits[i] for i in wanted])


def timing(cache: Path, variant: str, view: str) -> list[float]:
    """Measured seconds per image of every cached chunk of ``variant``/``view``."""
    out = []
    for path in cache.glob(f"levers-{variant}-{view}-*.npz"):
        with np.load(path) as z:
            out.append(float(z["seconds_per_image"]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    parser.add_argument("--views", nargs="+", default=["center"], choices=VIEWS)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int)
    parser.add_argument("--cache", type=Path, default=Path("/tmp"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    names = image_names(args.folder)[args.start : args.stop]
    net = Network(args.variant)
    for view in args.views:
        net.outputs(args.folder, names, view, args.cache, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
