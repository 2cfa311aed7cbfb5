#!/usr/bin/env bash
# The GPU worker benchmark (benchmarks/gpu.py): embeds 2,000 Flickr8k images on an NVIDIA GPU
# and prints images/s, GPU memory and the vectors' difference from the CPU path.
#
#   PYTHON=/path/to/python-with-cuda-torch benchmarks/gpu.sh          # default: the repo's .venv
#   benchmarks/gpu.sh --device cpu --images 32                         # dry run without a GPU
#
# Installs nothing: it needs a Python with CUDA torch, this project's dependencies, and
# torchvision for decoding on the device (without it JPEGs are decoded by Pillow, and the
# report says so). The photos are read from ../shared/eval (EVAL_DIR overrides). It stops
# itself after 280 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
EVAL_DIR="${EVAL_DIR:-../shared/eval}"
if [ ! -x "$PYTHON" ] && ! command -v "$PYTHON" >/dev/null; then
  echo "No Python at $PYTHON: set PYTHON to one with CUDA torch and this project installed." >&2
  exit 2
fi
export PYTHONPATH=".:example_project${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.version.cuda)'
"$PYTHON" -c 'import torchvision; print("torchvision", torchvision.__version__)' 2>/dev/null \
  || echo "torchvision: not importable (JPEGs will be decoded by Pillow)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true
exec timeout 280 "$PYTHON" benchmarks/gpu.py --eval "$EVAL_DIR" "$@"
