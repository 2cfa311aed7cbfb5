"""GPU worker benchmark: images per second, GPU memory, and the vectors' difference from the CPU path.

Run it through ``benchmarks/gpu.sh`` (which picks the Python). It embeds ``--images``
photos (Flickr8k's 1k test images, then train images) the way a GPU worker does:
JPEGs decoded on the device by torchvision's ``decode_jpeg`` (Pillow for anything
else, and for every header), the CNN in float16, ConSE mixing; batches sized to the
free GPU memory (``device_jpeg.batch_size_for``). Then it embeds the first
``--compare`` photos on the CPU path (Pillow decoding, the CNN as ``IMAGE_RUNTIME``
picks on a CPU) and prints the largest difference and smallest cosine between the two,
for the whole GPU path and for the GPU CNN alone (Pillow-decoded pixels).

``--device cpu --images 32`` is a dry run of the same code on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def photo_paths(eval_dir: Path, count: int) -> list[Path]:
    """The 1k test images, then train images, ``count`` in all (sorted, so runs agree)."""
    paths = sorted((eval_dir / "flickr8k_test1k" / "images").glob("*.jpg"))
    paths += sorted((eval_dir / "flickr8k_train" / "images").glob("*.jpg"))
    if len(paths) < count:
        sys.exit(f"only {len(paths)} images under {eval_dir}, {count} asked for")
    return paths[:count]


def compare(a: Any, b: Any) -> dict[str, Any]:
    out = {}
    for name in ("visual", "semantic"):
        x, y = getattr(a, name), getattr(b, name)
        cosines = np.sum(x * y, axis=1)
        out[name] = {
            "max_abs_diff": round(float(np.abs(x - y).max()), 5),
            "min_cosine": round(float(cosines.min()), 5),
            "mean_cosine": round(float(cosines.mean()), 5),
        }
    out["same_top_label"] = round(
        float(np.mean([p[0][0] == q[0][0] for p, q in zip(a.labels, b.labels, strict=True)])), 3
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--compare", type=int, default=128, help="photos also embedded on the CPU path")
    parser.add_argument("--batch-size", type=int, default=0, help="default: sized to the free GPU memory")
    parser.add_argument("--eval", type=Path, default=ROOT.parent / "shared" / "eval")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import django
    from django.conf import settings

    settings.configure(INSTALLED_APPS=[], SEMANTIC_IMAGES={"DEVICE": args.device})
    django.setup()
    import torch

    from django_semantic_images import device_jpeg
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.imaging import ImageDecodeError, decode_image

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device visible to torch (use --device cpu for a dry run)")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - 1))
    paths = photo_paths(args.eval, args.images)
    blobs = [p.read_bytes() for p in paths]
    encoder = ConSEEncoder(device=args.device, bridge=None)
    started = time.perf_counter()
    encoder.ensure_image_model()
    load_seconds = time.perf_counter() - started
    decoder = device_jpeg.default_decoder(args.device)
    decoder_name = "torchvision.io.decode_jpeg" if decoder else "pillow (torchvision not available)"
    if decoder is None and not args.device.startswith("cuda"):
        decoder, decoder_name = device_jpeg.pillow_decoder, "pillow_decoder (CPU dry run)"
    batch = args.batch_size or device_jpeg.batch_size_for(args.device)
    pillow_limits = {"max_side": 1024, "max_pixels": 50_000_000}

    def embed(chunk: list[bytes]) -> Any:
        headers = [device_jpeg.device_header(b, max_pixels=50_000_000) for b in chunk]
        on_device = [i for i, h in enumerate(headers) if h is not None] if decoder else []
        tensors: dict[int, Any] = {}
        if on_device:
            made = device_jpeg.decode_on_device(
                [chunk[i] for i in on_device],
                [headers[i] for i in on_device],  # type: ignore[misc]
                decoder=decoder,  # type: ignore[arg-type]
                device=args.device,
                preprocess=encoder.preprocess_tensor,
            )
            tensors = {i: t for i, t in zip(on_device, made, strict=True) if t is not None}
        inputs = []
        for i, data in enumerate(chunk):
            if i not in tensors:
                try:
                    tensors[i] = torch.from_numpy(encoder.preprocess(decode_image(data, **pillow_limits)))
                except ImageDecodeError as exc:
                    sys.exit(f"photo {i} failed: {exc}")
            inputs.append(tensors[i].to(args.device))
        return encoder.encode_pixels(torch.stack(inputs))

    embed(blobs[: min(8, len(blobs))])  # warm up (cuDNN picks its kernels)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    outputs = [embed(blobs[i : i + batch]) for i in range(0, len(blobs), batch)]
    seconds = time.perf_counter() - started

    n = min(args.compare, len(blobs))
    gpu = type(outputs[0])(
        np.concatenate([o.visual for o in outputs])[:n],
        np.concatenate([o.semantic for o in outputs])[:n],
        [label for o in outputs for label in o.labels][:n],
    )
    cpu_pixels = np.stack([encoder.preprocess(decode_image(b, **pillow_limits)) for b in blobs[:n]])
    cpu_encoder = ConSEEncoder(device="cpu", bridge=None)
    cpu = cpu_encoder.encode_pixels(cpu_pixels)
    gpu_cnn_only = encoder.encode_pixels(torch.from_numpy(cpu_pixels))
    report = {
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "cnn_dtype": str(next(encoder.cnn.parameters()).dtype) if encoder.cnn is not None else "onnx float32",
        "decoder": decoder_name,
        "images": len(blobs),
        "batch_size": batch,
        "model_load_seconds": round(load_seconds, 1),
        "seconds": round(seconds, 2),
        "images_per_second": round(len(blobs) / seconds, 1),
        "cpu_path_runtime": cpu_encoder.image_runtime,
        "compared_images": n,
        "gpu_path_vs_cpu_path": compare(gpu, cpu),
        "gpu_cnn_vs_cpu_cnn_same_pixels": compare(gpu_cnn_only, cpu),
    }
    if args.device.startswith("cuda"):
        report["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
        report["gpu_memory_total_mib"] = round(torch.cuda.get_device_properties(args.device).total_memory / 2**20)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
