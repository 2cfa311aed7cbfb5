"""Learned bridges: a linear map from CNN features into the text space, blended with ConSE.

A bridge is a small ``.npz`` artefact (weights, bias, blend weight, version and
metadata). It is trained by ``manage.py semantic_images_train_bridge`` on a
site's own (image, caption) pairs and picked up by ``ConSEEncoder(bridge=...)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .base import l2_normalize


@dataclass
class LearnedBridge:
    weight: np.ndarray  # (feature_dim, text_dim)
    bias: np.ndarray  # (text_dim,)
    conse_weight: float = 0.2
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Content hash: a retrained bridge is a new version and makes vectors stale."""
        h = hashlib.sha1(self.weight.tobytes())
        h.update(self.bias.tobytes())
        h.update(str(self.conse_weight).encode())
        return h.hexdigest()[:10]

    def project(self, features: np.ndarray) -> np.ndarray:
        return l2_normalize(features @ self.weight + self.bias)

    def apply(self, features: np.ndarray, conse: np.ndarray) -> np.ndarray:
        """Blend: ``conse_weight * ConSE + (1 - conse_weight) * projection``, normalised."""
        return l2_normalize(self.conse_weight * conse + (1.0 - self.conse_weight) * self.project(features))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(
                fh,
                weight=self.weight.astype(np.float32),
                bias=self.bias.astype(np.float32),
                conse_weight=np.float32(self.conse_weight),
                meta=np.array(json.dumps(self.meta)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> LearnedBridge:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                weight=data["weight"],
                bias=data["bias"],
                conse_weight=float(data["conse_weight"]),
                meta=json.loads(str(data["meta"])),
            )
