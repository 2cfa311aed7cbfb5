"""Calibrated relevance: a result's score measured against what the collection scores for the same query.

A cosine score means little on its own: one query's best match scores 0.35, another's
tenth best 0.5. For each query this module scores a fixed reference sample of the
collection's stored vectors (``CALIBRATION_SAMPLE`` rows, drawn once per vector column
and kept for ``CALIBRATION_TTL`` seconds); a result's *relevance* is the share of the
collection it scores higher than, estimated from the sample (``k / (S + 1)`` for a score
that beats ``k`` of ``S`` sample rows, the unbiased estimate). ``min_relevance=0.99`` is
then, for every query, a raw score threshold near the sample's 99th percentile for that
query: what is kept scores higher than about 99% of the collection does for the same
words (docs/relevance.md#the-relevance-cutoff has the measurements behind the choice,
and what it does not promise).

The sample is the rows with the smallest ``md5(pk)``: random with respect to the pictures,
but the same in every process, so the pages of one search served by different workers use
one threshold.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import models
from django.db.models import CharField
from django.db.models.functions import MD5, Cast

from .conf import on_change, semantic_settings
from .fields import EmbeddingPath

# Below this many reference rows a share of them says too little: nothing is cut.
MIN_REFERENCE = 10
# A row beats a sample score only by more than this: the database and numpy compute the
# same cosine with different rounding, and a sample row must not beat itself.
TIE = 1e-6


@dataclass(frozen=True)
class Calibration:
    """One query's scores for the reference sample, sorted ascending."""

    scores: np.ndarray

    @property
    def size(self) -> int:
        return len(self.scores)

    def threshold(self, relevance: float) -> float:
        """The score a row must exceed (strictly) to reach ``relevance`` for this query.

        ``-inf`` for 0; ``inf`` above ``size / (size + 1)`` (no row can beat more than the whole sample).
        """
        if not 0.0 <= relevance <= 1.0:
            raise ValueError(f"A relevance is a number from 0 to 1, not {relevance!r}.")
        beaten = math.ceil(relevance * (self.size + 1) - 1e-9)  # sample scores a row must beat
        if beaten <= 0:
            return -math.inf
        if beaten > self.size:
            return math.inf
        return float(self.scores[beaten - 1]) + TIE

    def relevance(self, score: float) -> float:
        """The share of the collection ``score`` beats, estimated as ``k / (size + 1)`` for ``k``
        sample scores beaten: from 0 to ``size / (size + 1)``."""
        beaten = int(np.searchsorted(self.scores, float(score) - TIE, side="left"))
        return beaten / (self.size + 1)


#: Calibrations a reference keeps, by query vector (a repeated search computes none).
KEEP_CALIBRATIONS = 256


@dataclass(frozen=True)
class Reference:
    """Unit-length stored vectors of a sample of the collection (float32, one row each)."""

    vectors: np.ndarray
    drawn_at: float
    _calibrations: dict[bytes, Calibration] = field(default_factory=dict, compare=False, repr=False)

    def calibrate(self, query: Any) -> Calibration | None:
        """The calibration of ``query`` (a vector of the same space); None when the sample is too small.
        The last ``KEEP_CALIBRATIONS`` are kept."""
        if len(self.vectors) < MIN_REFERENCE:
            return None
        vector = np.asarray(query, dtype=np.float32).ravel()
        key = vector.tobytes()
        found = self._calibrations.get(key)
        if found is None:
            scores = self.vectors @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
            # Sorted in float32, then widened: the same values as sorting the widened scores.
            found = Calibration(np.sort(scores).astype(np.float64))
            if len(self._calibrations) >= KEEP_CALIBRATIONS:
                self._calibrations.clear()
            self._calibrations[key] = found
        return found


def unit_rows(values: list[Any], dimensions: int) -> np.ndarray:
    """Stored vectors (numpy arrays, pgvector's ``HalfVector`` ...) as unit float32 rows."""
    rows = [v.to_numpy() if hasattr(v, "to_numpy") else v for v in values]
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), dimensions)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def draw_reference(model: type[models.Model], column: str, using: str, size: int) -> Reference:
    """``size`` stored vectors of ``column`` (rows with the smallest ``md5(pk)``), in two small queries."""
    rows = model._base_manager.using(using).filter(**{f"{column}__isnull": False})
    chosen = rows.order_by(MD5(Cast("pk", CharField()))).values("pk")[:size]
    values = list(rows.filter(pk__in=chosen).values_list(column, flat=True))
    dimensions = len(values[0]) if values else 0
    return Reference(unit_rows(values, dimensions), time.monotonic())


_references: dict[tuple[str, str, str], Reference] = {}
_lock = threading.Lock()


def reference_for(path: EmbeddingPath, kind: str, using: str) -> Reference:
    """The cached reference sample of one vector column (``kind``: ``"semantic"`` or ``"visual"``)."""
    model = path.field.model
    assert model is not None
    column = path.field.column(kind)
    key = (using, model._meta.label, column)
    ttl = float(semantic_settings.CALIBRATION_TTL)
    reference = _references.get(key)
    if reference is None or time.monotonic() - reference.drawn_at > ttl:
        reference = draw_reference(model, column, using, int(semantic_settings.CALIBRATION_SAMPLE))
        with _lock:
            _references[key] = reference
    return reference


@on_change
def reset() -> None:
    """Forget every cached sample (the next search draws again)."""
    with _lock:
        _references.clear()
