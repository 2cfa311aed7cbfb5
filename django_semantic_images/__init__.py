"""Semantic image search for Django: find pictures by meaning, with pgvector."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Lazy re-exports (PEP 562), so that importing the package does not import Django models.
_EXPORTS = {
    "ImageEmbeddingField": "fields",
    "EmbeddingStatus": "fields",
    "SemanticDistance": "expressions",
    "VisualDistance": "expressions",
    "SemanticImageQuerySet": "query",
    "SemanticImageManager": "query",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
