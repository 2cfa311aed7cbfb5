"""Fusing an editor's words (title, alt text) with the picture's semantic vector."""

from __future__ import annotations

import numpy as np

from .encoders.base import l2_normalize


def fuse(image_semantic: np.ndarray, text: np.ndarray, text_weight: float) -> np.ndarray:
    """Weighted sum of unit vectors, renormalised: ``(1 - w) * image + w * text``.

    Rows are images; ``text_weight`` 0 keeps the picture alone, 1 the words alone.
    """
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must be within [0, 1], got {text_weight}")
    return l2_normalize((1.0 - text_weight) * l2_normalize(image_semantic) + text_weight * l2_normalize(text))
