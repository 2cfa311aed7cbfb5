"""The configured encoder, built once per process from ``SEMANTIC_IMAGES`` settings."""

from __future__ import annotations

import threading

from ..conf import semantic_settings
from .base import Encoder

_lock = threading.Lock()
_encoder: Encoder | None = None


def get_encoder() -> Encoder:
    """The process-wide encoder instance (weights still load lazily on first use)."""
    global _encoder
    if _encoder is None:
        with _lock:
            if _encoder is None:
                cls = semantic_settings.ENCODER
                options = dict(semantic_settings.ENCODER_OPTIONS)
                options.setdefault("device", semantic_settings.DEVICE)
                _encoder = cls(**options)
    return _encoder


def reset() -> None:
    """Forget the instance (settings changed, or a new bridge was installed)."""
    global _encoder
    with _lock:
        _encoder = None
