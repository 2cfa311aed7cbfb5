"""Ranking expressions: cosine distances to a query's meaning or to a query image.

They are ordinary Django expressions (pgvector's ``CosineDistance``, i.e.
``column <=> query``), so they work in ``annotate()``, ``order_by()`` and
``filter()``; ordering by them ascending with a LIMIT is what the HNSW index serves.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from django.db.models import Value
from pgvector.django import CosineDistance

from .fields import get_embedding_field


class _EmbeddingDistance(CosineDistance):
    suffix = ""

    def __init__(self, field: str, query: Any, **extra: Any) -> None:
        self.embedding_name = field
        super().__init__(field, Value(vector_literal(self.query_vector(query))), **extra)

    def query_vector(self, query: Any) -> list[float]:
        raise NotImplementedError

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        clone = self.copy()
        if query is not None:
            field = get_embedding_field(query.model, self.embedding_name)
            column = field.column(self.suffix)
            from django.db.models import F

            clone.set_source_expressions([F(column), *clone.get_source_expressions()[1:]])
        return super(_EmbeddingDistance, clone).resolve_expression(query, allow_joins, reuse, summarize, for_save)


@lru_cache(maxsize=16)
def _literal_format(dimensions: int) -> str:
    return ",".join(["%.9g"] * dimensions)


def vector_literal(vector: Any) -> str:
    """pgvector's text form of a query vector, e.g. ``[0.125,-0.5]``.

    Nine significant digits give every float32 back exactly; one ``%`` over the whole
    vector is about four times faster than formatting it number by number.
    """
    values = np.asarray(vector, dtype=np.float32).ravel().tolist()
    return "[" + _literal_format(len(values)) % tuple(values) + "]"


def _as_list(vector: Any) -> list[float] | None:
    if isinstance(vector, (list, tuple)) and vector and isinstance(vector[0], (int, float)):
        return [float(v) for v in vector]
    if isinstance(vector, np.ndarray):
        return vector.astype(np.float32).ravel().tolist()
    return None


class SemanticDistance(_EmbeddingDistance):
    """Cosine distance from the semantic vector to ``query`` (words, or a vector in that space).

    ``Photo.objects.annotate(d=SemanticDistance("embedding", "red bicycle")).order_by("d")``
    """

    suffix = "semantic"

    def query_vector(self, query: Any) -> list[float]:
        vector = _as_list(query)
        if vector is not None:
            return vector
        from .encoders import get_encoder

        return get_encoder().encode_text(str(query)).tolist()


class VisualDistance(_EmbeddingDistance):
    """Cosine distance from the visual vector to a query image (PIL image, file, path or vector)."""

    suffix = "visual"

    def query_vector(self, query: Any) -> list[float]:
        vector = _as_list(query)
        if vector is not None:
            return vector
        from .encoders import get_encoder

        return self.image_vector(query, get_encoder()).tolist()

    @staticmethod
    def image_vector(query: Any, encoder: Any) -> np.ndarray:
        """The visual vector of a query image (PIL image, uploaded file, path or bytes)."""
        from .conf import semantic_settings
        from .imaging import load_query_image

        if _as_list(query) is not None:
            return np.asarray(query, dtype=np.float32)
        image = load_query_image(
            query, max_side=semantic_settings.MAX_IMAGE_SIDE, max_pixels=semantic_settings.MAX_IMAGE_PIXELS
        )
        return encoder.encode_images([image]).visual[0]
