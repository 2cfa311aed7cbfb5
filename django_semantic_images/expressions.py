"""Ranking expressions: cosine distances to a query's meaning or to a query image, and the score.

They are ordinary Django expressions (pgvector's ``CosineDistance``, i.e.
``column <=> query``), so they work in ``annotate()``, ``order_by()`` and
``filter()``; ordering by them ascending with a LIMIT is what the HNSW index serves.
``Score`` is a ranked row's ``1 - distance``, NULL ("no score") where the distance is NaN.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from numbers import Real
from typing import Any

import numpy as np
from django.core.files.uploadedfile import UploadedFile
from django.db.models import F, FloatField, Func, Value
from django.utils.functional import Promise
from pgvector.django import CosineDistance

from .conf import semantic_settings
from .encoders.base import Encoder
from .fields import EmbeddingPath, embedding_path
from .imaging import UPLOAD_LIMIT, query_image
from .words import search_words

#: The largest number of a ``halfvec``, and a quarter of its smallest normal one: a query vector whose
#: largest number is beyond either overflows, or keeps a few bits of each number (none: a zero vector).
HALF_MAX = float(np.finfo(np.float16).max)
HALF_TINY = float(np.finfo(np.float16).tiny) / 4


class _EmbeddingDistance(CosineDistance):
    """``column <=> query``; the query's vector is made by the field's own encoder when the
    expression is resolved against a model (words need to know which encoder to use)."""

    suffix = ""

    def __init__(self, field: str, query: Any, **extra: Any) -> None:
        self.embedding_name = field
        query = self.read_query(query)
        self.search_query = query
        vector = query_array(query)
        if vector is None:
            self.check_query(query)
        # The query vector's length, checked against the column's when resolved (None: made then).
        self.query_size = None if vector is None else len(vector)
        self.query_peak = None if vector is None else float(np.abs(vector).max())
        literal = Value(vector_literal(vector)) if vector is not None else Value(None)
        super().__init__(field, literal, **extra)
        # Expressions compare and hash by their constructor arguments: an image is neither.
        key = literal.value if vector is not None else query if isinstance(query, str) else ("object", id(query))
        self._constructor_args = ((field, key), extra)

    def query_vector(self, query: Any, encoder: Encoder) -> list[float]:
        raise NotImplementedError

    def read_query(self, query: Any) -> Any:
        """``query`` as this distance ranks by it (the default: as given)."""
        return query

    def check_query(self, query: Any) -> None:
        """A TypeError when ``query``, not a vector, is not what this distance ranks by either."""

    def resolve_expression(self, query=None, allow_joins=True, reuse=None, summarize=False, for_save=False):
        clone = self.copy()
        if query is not None:
            path = embedding_path(query.model, self.embedding_name)
            expected = column_dimensions(path, self.suffix)
            if self.query_size is not None and expected is not None and self.query_size != expected:
                raise ValueError(
                    f"The query vector has {self.query_size} numbers; the {self.suffix} vectors of "
                    f"{path.name} have {expected}."
                )
            if self.query_peak is not None and path.field.halfvec and not HALF_TINY <= self.query_peak <= HALF_MAX:
                # PostgreSQL casts the query to the column's halfvec: an overflow error, or (nearly) zeros.
                raise ValueError(
                    f"The query vector's largest number, {self.query_peak:g}, is beyond halfvec's range "
                    f"({HALF_TINY:g} to {HALF_MAX:g}), what the {self.suffix} vectors of {path.name} are stored "
                    "as: scale it (a cosine ranks by direction only), e.g. to unit length."
                )
            source, literal = clone.get_source_expressions()
            if getattr(literal, "value", None) is None:
                literal = Value(vector_literal(self.query_vector(self.search_query, path.field.get_encoder())))
                # Keep it: a queryset resolves its expressions again each time it is cloned.
                self.set_source_expressions([source, literal])
            clone.set_source_expressions([F(path.column(self.suffix)), literal])
        return super(_EmbeddingDistance, clone).resolve_expression(query, allow_joins, reuse, summarize, for_save)


class Score(Func):
    """``1 - distance`` (the cosine similarity), or NULL where the distance is NaN: a stored vector of
    all zeros has no direction, so no cosine with anything, and such a row has no score. NULL is "no
    score" to every reader: a floor (``score__gte``) leaves it out, JSON writes null, and an ascending
    order puts it last (a descending one first, as it did NaN: ``F("score").desc(nulls_last=True)``).
    ``distance`` is an annotation's name or a distance expression: ``annotate(distance=...,
    score=Score("distance"))``."""

    template = "NULLIF(1 - (%(expressions)s), 'NaN'::float8)"
    output_field = FloatField()

    def __init__(self, distance: Any = "distance", **extra: Any) -> None:
        super().__init__(distance, **extra)


#: Best first by score: ``order_by("-score")`` puts a row without a score (NULL) first, as PostgreSQL puts
#: NULL (and NaN) above every number; this puts it last, where an order by distance puts it.
BY_SCORE = F("score").desc(nulls_last=True)


def score_of(distance: float | None) -> float | None:
    """``Score`` of a distance read as it is (``values_list("distance")``): None for None or NaN."""
    return None if distance is None or math.isnan(distance) else 1.0 - distance


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


#: What a query vector's numbers may be (``numbers.Real`` alone is several times slower to check).
NUMBERS = (float, int, np.floating, np.integer, Real)


def query_array(query: Any) -> np.ndarray | None:
    """``query`` as a float32 vector when it is one (a numpy array, pgvector's ``Vector`` or
    ``HalfVector`` (what pgvector-python before 0.5 reads a ``halfvec`` column as), or a non-empty
    list or tuple of numbers, numpy's included), else None; a ValueError when a number is NaN, infinite or
    beyond float32's range (PostgreSQL would refuse the vector), or when every number is zero
    (no direction: its cosine distance to any row is NaN, and a ranking by it says nothing)."""
    if isinstance(query, np.ndarray):
        values: Any = query
    elif callable(getattr(query, "to_numpy", None)):
        values = query.to_numpy()  # pgvector's Vector / HalfVector (a pandas Series too)
    elif isinstance(query, (list, tuple)) and query and all(isinstance(v, NUMBERS) for v in query):
        values = np.asarray(query, dtype=np.float64)
    else:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        vector = np.asarray(values).astype(np.float32).ravel()
    if not np.isfinite(vector).all():
        raise ValueError("A query vector takes finite numbers only (no NaN, no infinity, none beyond float32's range).")
    if not vector.any():
        raise ValueError("A query vector of zeros has no direction: its cosine distance to every row is undefined.")
    return vector


def column_dimensions(path: EmbeddingPath, suffix: str) -> int | None:
    """The length of the vectors in ``path``'s ``suffix`` column (``"semantic"`` or ``"visual"``)."""
    model = path.field.model
    if model is None:
        return None
    return getattr(model._meta.get_field(path.field.column(suffix)), "dimensions", None)


def check_image(query: Any) -> None:
    """A TypeError when ``query`` cannot be a query image (nor was it a vector)."""
    if query is None or isinstance(query, (Real, list, tuple, dict, set)):
        raise TypeError(
            "A visual ranking takes an image (a PIL image, a file, a path or bytes) or a vector of numbers, "
            f"not {query!r:.60}."
        )


class SemanticDistance(_EmbeddingDistance):
    """Cosine distance from the semantic vector to ``query`` (words, or a vector in that space).

    ``Photo.objects.annotate(d=SemanticDistance("embedding", "red bicycle")).order_by("d")``;
    the field may sit across a one-to-one relation: ``SemanticDistance("semantic_vectors__embedding", ...)``.
    """

    suffix = "semantic"

    def read_query(self, query: Any) -> Any:
        """Words read as every search reads them (``words.search_words``: NFC, blank characters one
        space); blank words are a ValueError, as for ``semantic_search()``."""
        if not isinstance(query, (str, Promise)):
            return query
        words = search_words(str(query))
        if not words:
            raise ValueError("The search text is empty.")
        return words

    def check_query(self, query: Any) -> None:
        if not isinstance(query, (str, Promise)):
            raise TypeError(f"A semantic ranking takes words (a str) or a vector of numbers, not {query!r:.60}.")

    def query_vector(self, query: Any, encoder: Encoder) -> list[float]:
        return encoder.encode_text(str(query)).tolist()


class VisualDistance(_EmbeddingDistance):
    """Cosine distance from the visual vector to a query image (PIL image, file, path or vector)."""

    suffix = "visual"

    def check_query(self, query: Any) -> None:
        check_image(query)

    def query_vector(self, query: Any, encoder: Encoder) -> list[float]:
        return self.image_vector(query, encoder).tolist()

    @staticmethod
    def image_vector(query: Any, encoder: Any) -> np.ndarray:
        """The visual vector of a query image (PIL image, uploaded file, path, ``pathlib.Path`` or
        bytes), or ``query`` itself as float32 when it is a vector."""
        vector = query_array(query)
        if vector is not None:
            return vector
        check_image(query)
        if isinstance(query, os.PathLike):
            query = os.fsdecode(query)
        image = query_image(query, max_bytes=byte_limit(query))
        return encoder.encode_visual([image])[0]


def byte_limit(query: Any) -> int | None:
    """The most bytes a query image is read for: an upload (``UploadedFile``, ``request.FILES``
    passed on) ``MAX_UPLOAD_BYTES``, as the API's search by photo; any other file object (a
    stored file) ``MAX_FILE_BYTES``, as the pipeline; a path, bytes or a PIL image no limit."""
    if isinstance(query, UploadedFile):
        return UPLOAD_LIMIT
    if hasattr(query, "read"):
        return int(semantic_settings.MAX_FILE_BYTES)
    return None
