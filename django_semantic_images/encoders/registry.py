"""Encoders built from settings, once per process and recipe."""

from __future__ import annotations

import json
import threading
from typing import Any

from django.utils.module_loading import import_string

from ..conf import on_change, semantic_settings
from .base import Encoder

_lock = threading.Lock()
_encoders: dict[str, Encoder] = {}


def get_encoder(path: str | type[Encoder] | None = None, options: dict[str, Any] | None = None) -> Encoder:
    """The process-wide encoder for ``path`` + ``options`` (default: ``SEMANTIC_IMAGES["ENCODER"]``).

    Construction is cheap; weights still load lazily on first use.
    """
    if path is None:
        cls = semantic_settings.ENCODER
        options = dict(semantic_settings.ENCODER_OPTIONS) if options is None else options
    else:
        cls = import_string(path) if isinstance(path, str) else path
    options = dict(options or {})
    options.setdefault("device", semantic_settings.DEVICE)
    key = f"{cls.__module__}.{cls.__qualname__}:{json.dumps(options, sort_keys=True, default=str)}"
    encoder = _encoders.get(key)
    if encoder is None:
        with _lock:
            encoder = _encoders.get(key)
            if encoder is None:
                encoder = _encoders[key] = cls(**options)
    return encoder


@on_change
def reset() -> None:
    """Forget the instances (settings changed, or a new bridge was installed)."""
    with _lock:
        _encoders.clear()
