"""Retrieval measures: where the one right picture lands for each text query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RetrievalScores:
    """Recall at 1/5/10 in percent, median and mean rank (1 = first), number of queries."""

    r1: float
    r5: float
    r10: float
    median_rank: float
    mean_rank: float
    queries: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"R@1 {self.r1:.1f}  R@5 {self.r5:.1f}  R@10 {self.r10:.1f}  "
            f"median rank {self.median_rank:g}  ({self.queries} queries)"
        )


def rank_of(scores: np.ndarray, right: int, rng: np.random.Generator) -> int:
    """1-based rank of ``scores[right]`` among ``scores`` (higher is better), ties broken at random."""
    target = scores[right]
    above = int(np.sum(scores > target))
    tied = int(np.sum(scores == target)) - 1
    return 1 + above + int(rng.integers(0, tied + 1))


def summarise(ranks: Sequence[int] | np.ndarray) -> RetrievalScores:
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("No queries to score.")
    return RetrievalScores(
        r1=round(100.0 * float(np.mean(r <= 1)), 1),
        r5=round(100.0 * float(np.mean(r <= 5)), 1),
        r10=round(100.0 * float(np.mean(r <= 10)), 1),
        median_rank=float(np.median(r)),
        mean_rank=round(float(np.mean(r)), 2),
        queries=int(r.size),
    )


def retrieval_scores(queries: np.ndarray, gallery: np.ndarray, right: np.ndarray, seed: int = 0) -> RetrievalScores:
    """Each query row ranks every gallery row by cosine; ``right[i]`` is query i's answer."""
    rng = np.random.default_rng(seed)
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    ranks = [rank_of(row, int(t), rng) for row, t in zip(q @ g.T, right, strict=True)]
    return summarise(ranks)
