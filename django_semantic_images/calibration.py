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
one threshold. It is drawn from the whole table, or, for a search calibrated on the rows its
caller may see (``QuerySet.calibrated_on()``, which the API's views use), from those rows
only: a row the caller may not see then moves no relevance the caller sees.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.core.exceptions import EmptyResultSet
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

    def relevance(self, score: float | None) -> float | None:
        """The share of the collection ``score`` beats, estimated as ``k / (size + 1)`` for ``k``
        sample scores beaten: from 0 to ``size / (size + 1)``; None (no relevance) for no score: None
        (a ranked row's, a zero vector: ``expressions.Score``) or NaN (a raw ``1 - distance``), which
        would otherwise sort above every sample score."""
        if score is None:
            return None
        value = float(score)
        if math.isnan(value):
            return None
        beaten = int(np.searchsorted(self.scores, value - TIE, side="left"))
        return beaten / (self.size + 1)


#: Calibrations a reference keeps, by query vector (a repeated search computes none).
KEEP_CALIBRATIONS = 256
#: Samples a process keeps: one per vector column and set of rows drawn from (the whole
#: table, or each distinct ``calibrated_on()`` queryset), the oldest let go.
KEEP_REFERENCES = 16


@dataclass(frozen=True)
class Reference:
    """Unit-length stored vectors of a sample of the collection (float32, one row each)."""

    vectors: np.ndarray
    drawn_at: float
    #: The column is ``halfvec``: PostgreSQL casts the query to it, so the sample is scored with it rounded so too.
    halfvec: bool = False
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
            if self.halfvec:  # the query the database ranks by: its float32 scores differ by ~1e-5, past TIE
                with np.errstate(over="ignore"):
                    vector = vector.astype(np.float16).astype(np.float32)
            scores = self.vectors @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
            # Sorted in float32, then widened: the same values as sorting the widened scores.
            found = Calibration(np.sort(scores).astype(np.float64))
            if len(self._calibrations) >= KEEP_CALIBRATIONS:
                self._calibrations.clear()
            self._calibrations[key] = found
        return found


def unit_rows(values: list[Any]) -> np.ndarray:
    """Stored vectors (numpy arrays, lists, pgvector's ``HalfVector`` ...) as unit float32 rows."""
    rows = [v.to_numpy() if hasattr(v, "to_numpy") else v for v in values]
    matrix = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1 if rows else 0)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def draw_reference(rows: models.QuerySet, lookup: str, size: int, *, halfvec: bool = False) -> Reference:
    """``size`` stored vectors (``lookup`` from ``rows``' model) of ``rows``: those with the
    smallest ``md5(pk)``, in two small queries. ``halfvec``: the column's type is ``halfvec``."""
    query = rows.query
    if query.distinct or query.combinator or query.is_sliced or query.group_by is not None or query.annotations:
        rows = rows.model._base_manager.using(rows.db).filter(pk__in=row_keys(rows))
    base = rows.order_by().filter(**{f"{lookup}__isnull": False})
    chosen = base.order_by(MD5(Cast("pk", CharField()))).values("pk")[:size]
    values = list(base.filter(pk__in=chosen).values_list(lookup, flat=True))
    return Reference(unit_rows(values), time.monotonic(), halfvec)


def row_keys(rows: models.QuerySet) -> models.QuerySet:
    """The primary keys of ``rows`` as a subquery, without its ordering unless it is sliced (a
    slice's ordering chooses its rows, and a sliced queryset cannot be reordered)."""
    return (rows if rows.query.is_sliced else rows.order_by()).values("pk")


_references: dict[tuple[Any, ...], Reference] = {}
_lock = threading.Lock()


def reference_for(path: EmbeddingPath, kind: str, using: str, rows: models.QuerySet | None = None) -> Reference:
    """The cached reference sample of one vector column (``kind``: ``"semantic"`` or
    ``"visual"``), drawn from the whole table or, when given, from ``rows`` (a queryset of the
    ranked model: one sample per distinct SQL of ``rows``)."""
    if rows is None:
        model = path.field.model
        assert model is not None
        rows, lookup = model._base_manager.all(), path.field.column(kind)
        key: tuple[Any, ...] = (using, model._meta.label, lookup)
    else:
        lookup = path.column(kind)
        try:
            sql, params = row_keys(rows).query.get_compiler(using).as_sql()
        except EmptyResultSet:  # rows.none(), or a filter that matches nothing by construction
            return Reference(np.zeros((0, 0), dtype=np.float32), time.monotonic())
        key = (using, rows.model._meta.label, lookup, sql, repr(params))
    ttl = float(semantic_settings.CALIBRATION_TTL)
    reference = _references.get(key)
    if reference is None or time.monotonic() - reference.drawn_at > ttl:
        size = int(semantic_settings.CALIBRATION_SAMPLE)
        reference = draw_reference(rows.using(using), lookup, size, halfvec=path.field.halfvec)
        with _lock:
            _references.pop(key, None)
            while len(_references) >= KEEP_REFERENCES:
                del _references[next(iter(_references))]
            _references[key] = reference
    return reference


@on_change
def reset() -> None:
    """Forget every cached sample (the next search draws again)."""
    with _lock:
        _references.clear()
