"""CNN time per image of EfficientNet-Lite0/1/2 (and Lite0 with its mirror image), interleaved in one process.

python benchmarks/levers_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from django_semantic_images.encoders.efficientnet_lite import LITE_VARIANTS, load_lite

    torch.set_num_threads(args.threads)
    cases = {"lite0": ("lite0", 1), "lite0 + mirror": ("lite0", 2), "lite1": ("lite1", 1), "lite2": ("lite2", 1)}
    models = {v: load_lite(v) for v in LITE_VARIANTS}
    best: dict[str, float] = {}
    loads = []
    for _ in range(args.rounds):
        for name, (variant, copies) in cases.items():
            side = LITE_VARIANTS[variant][1]
            x = torch.randn(args.batch * copies, 3, side, side).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                started = time.perf_counter()
                models[variant](x)
                per = (time.perf_counter() - started) / args.batch
            best[name] = min(best.get(name, per), per)
            loads.append(os.getloadavg()[0])
    for name, per in best.items():
        print(f"{name}: {1000 * per:.0f} ms/image (best of {args.rounds}; x{per / best['lite0']:.2f} Lite0)")
    print(f"load average during the run: {min(loads):.1f}-{max(loads):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
