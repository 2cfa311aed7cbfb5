"""Ranking expressions: cosine distances to a query's meaning or to a query image.

They are ordinary Django expressions (pgvector's ``CosineDistance``, i.e.
``column <=> query``), so they work in ``annotate()``, ``order_by()`` and
``filter()``; ordering by them ascending with a LIMIT is what the HNSW index serves.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from django.db.models import F, Value
from pgvector.django import CosineDistance

from .encoders.base import Encoder
from .fields import embedding_path
from .imaging import query_image


class _EmbeddingDistance(CosineDistance):
    """``column <=> query``; the query's vector is made by the field's own encoder when the
    expression is resolved against a model (words need to know which encoder to use)."""

    suffix = ""

    def __init__(self, field: str, query: Any, **extra: Any) -> None:
        self.embedding_name = field
        self.search_query = query
        vector = _as_list(query)
        literal = Value(vector_literal(vector)) if vector is not None else Value(None)
        super().__init__(field, literal, **extra)
        # Expressions compare and hash by their constructor arguments: an image is neither.
        key = literal.value if vector is not None else query if isinstance(query, str) else ("object", id(query))
        self._constructor_args = ((field, key), extra)

    def query_vector(self, query: Any, encoder: Encoder) -> list[float]:
        raise NotImplementedError

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        clone = self.copy()
        if query is not None:
            path = embedding_path(query.model, self.embedding_name)
            source, literal = clone.get_source_expressions()
            if getattr(literal, "value", None) is None:
                literal = Value(vector_literal(self.query_vector(self.search_query, path.field.get_encoder())))
                # Keep it: a queryset resolves its expressions again each time it is cloned.
                self.set_source_expressions([source, literal])
            clone.set_source_expressions([F(path.column(self.suffix)), literal])
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

    ``Photo.objects.annotate(d=SemanticDistance("embedding", "red bicycle")).order_by("d")``;
    the field may sit across a one-to-one relation: ``SemanticDistance("semantic_vectors__embedding", ...)``.
    """

    suffix = "semantic"

    def query_vector(self, query: Any, encoder: Encoder) -> list[float]:
        return encoder.encode_text(str(query)).tolist()


class VisualDistance(_EmbeddingDistance):
    """Cosine distance from the visual vector to a query image (PIL image, file, path or vector)."""

    suffix = "visual"

    def query_vector(self, query: Any, encoder: Encoder) -> list[float]:
        return self.image_vector(query, encoder).tolist()

    @staticmethod
    def image_vector(query: Any, encoder: Any) -> np.ndarray:
        """The visual vector of a query image (PIL image, uploaded file, path or bytes)."""
        if _as_list(query) is not None:
            return np.asarray(query, dtype=np.float32)
        image = query_image(query, max_bytes=None)
        return encoder.encode_images([image]).visual[0]
