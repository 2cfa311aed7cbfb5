"""What a benchmark ran on: CPU model, vector instructions, cores, Python and torch.

Latency figures move with the CPU generation more than with anything this project
does (the same code measured 23 and 14 ms on two 2-core VMs): every result file
names the CPU and whether it has AVX-512 and VNNI, which ONNX Runtime's int8 path uses.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The widest of these that the CPU has is reported, in this order.
VECTOR_EXTENSIONS = ("avx512_vnni", "avx512f", "avx_vnni", "avx2")


def _cpuinfo(key: str) -> str | None:
    """The first ``key : value`` line's value in /proc/cpuinfo (None off Linux or when absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor name."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    return set((_cpuinfo("flags") or "").split())


def vector_extensions() -> list[str]:
    flags = cpu_flags()
    return [name for name in VECTOR_EXTENSIONS if name in flags]


def describe() -> str:
    """e.g. ``AMD EPYC (avx512_vnni, avx512f, avx2), 2 CPUs, Python 3.11.7, torch 2.13.0+cpu threads=1``."""
    import torch

    extensions = ", ".join(vector_extensions()) or "no AVX2"
    return (
        f"{cpu_model()} ({extensions}), {len(os.sched_getaffinity(0))} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__} threads={torch.get_num_threads()}"
    )
