"""Relevance cutoff benchmark: what does a cutoff keep, and does it mean the same for every query?

Text -> image retrieval on Flickr8k's 1k test split (every caption a query, its own
image the one true match), as in ``benchmarks/relevance.py``, whose loading and
embedding it reuses: the images become rows of the example ``Photo`` model in a
throwaway PostgreSQL + pgvector database, embedded by the pipeline with the default
encoder (ConSE, no bridge, no alt text).

For several cutoffs it reports, over the 5,000 queries: the share of true matches
kept (recall), the number of results kept per query (median, p10, p90, and the
share of queries left with none), and the share of kept results that are true.
Three families of cutoff are compared at the same average number kept:

* ``min_score``: one raw cosine score for every query;
* ``min_relevance`` as a percentile: keep what scores higher than a fraction of a
  random reference sample of the collection scores for that query;
* ``min_relevance`` as a z-score: keep what lies that many standard deviations above
  the sample's mean score for that query (what the package uses, see docs/api.md).

The thresholds are computed with ``django_semantic_images.calibration`` from a reference
drawn by ``reference_sample()`` from the database; a slice of the queries is also run
through ``Photo.objects.semantic_search(vector).above(z)`` and must keep exactly the rows
the numpy figures count.

    python benchmarks/cutoff.py                     # full run: JSON in benchmarks/results, table in docs
    python benchmarks/cutoff.py --limit 200 --out - # a quick slice, printed

The vectors of a split are cached (``--cache``, default
``~/.cache/django-semantic-images/benchmarks``) under the encoder's identity, so a
second run skips the embedding (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relevance import ROOT, Bench, Captioned, setup_django  # noqa: E402

BEGIN, END = "<!-- cutoff-table:begin -->", "<!-- cutoff-table:end -->"
CACHE = Path.home() / ".cache" / "django-semantic-images" / "benchmarks"
Log = Callable[[str], None]


@dataclass
class Split:
    """A split's stored vectors (as read back from the database) and its queries."""

    names: list[str]  # image file names, row i of the arrays
    semantic: np.ndarray  # (N, d) stored semantic vectors
    visual: np.ndarray  # (N, D) stored visual vectors
    queries: list[str]  # every caption
    truth: np.ndarray  # (Q,) index of each query's image
    query_vectors: np.ndarray  # (Q, d) the captions' vectors (torch text model, as relevance.py)
    identity: str


def cache_path(cache: Path, test: Captioned, identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache / f"cutoff-{test.folder.name}-{len(test.captions)}-{digest}.npz"


def load_split(test: Captioned, media: Path, cache: Path | None, log: Log) -> tuple[Split, list[int]]:
    """Rows for every image of ``test`` in the database, embedded (or restored from the cache)."""
    from django_semantic_images.encoders import get_encoder
    from photos.models import Photo

    encoder = get_encoder()
    identity = encoder.identity
    names = list(test.captions)
    queries = [c for n in names for c in test.captions[n]]
    truth = np.array([i for i, n in enumerate(names) for _ in test.captions[n]])
    path = cache_path(cache, test, identity) if cache else None
    bench = Bench(media, log=log)
    if path is not None and path.is_file():
        log(f"vectors from {path}")
        data = np.load(path, allow_pickle=False)
        assert list(data["names"]) == names, "the cache holds another list of images"
        (media / "bench-test").symlink_to((test.folder / "images").resolve(), target_is_directory=True)
        rows = [
            Photo(
                image=f"bench-test/{n}",
                embedding_status="embedded",
                embedding_encoder=identity,
                embedding_semantic=data["semantic"][i],
                embedding_visual=data["visual"][i],
            )
            for i, n in enumerate(names)
        ]
        pks = [p.pk for p in Photo.objects.bulk_create(rows, batch_size=200)]
        split = Split(names, data["semantic"], data["visual"], queries, truth, data["query_vectors"], identity)
        return split, pks
    pks = bench.load(test, "bench-test")
    started = time.perf_counter()
    log(f"embedding {len(pks)} images with {identity} ...")
    log(bench.embed(pks) + f" in {time.perf_counter() - started:.0f} s")
    stored = dict(Photo.objects.filter(pk__in=pks).values_list("pk", "embedding_semantic"))
    visual = dict(Photo.objects.filter(pk__in=pks).values_list("pk", "embedding_visual"))
    semantic_arr = np.stack([np.asarray(stored[pk], dtype=np.float32) for pk in pks])
    visual_arr = np.stack([np.asarray(visual[pk], dtype=np.float32) for pk in pks])
    log(f"encoding {len(queries)} captions ...")
    query_vectors = np.asarray(encoder.encode_texts(queries), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            names=np.array(names),
            semantic=semantic_arr,
            visual=visual_arr,
            query_vectors=query_vectors,
        )
        log(f"cached the vectors in {path}")
    return Split(names, semantic_arr, visual_arr, queries, truth, query_vectors, identity), pks


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


@dataclass
class Kept:
    """What one family of cutoff at one setting keeps, over every query."""

    family: str
    setting: float
    kept: np.ndarray  # (Q,) results kept per query
    hits: np.ndarray  # (Q,) whether the true image was kept

    def summary(self, rows: int) -> dict[str, Any]:
        kept = self.kept
        return {
            "family": self.family,
            "setting": round(float(self.setting), 6),
            "recall": round(100 * float(self.hits.mean()), 2),
            "precision": round(100 * float(self.hits.sum() / max(kept.sum(), 1)), 3),
            "mean_kept": round(float(kept.mean()), 2),
            "median_kept": float(np.median(kept)),
            "p10_kept": float(np.percentile(kept, 10)),
            "p90_kept": float(np.percentile(kept, 90)),
            "none_kept": round(100 * float((kept == 0).mean()), 2),
            "all_kept": round(100 * float((kept == rows).mean()), 2),
        }


class Families:
    """Score thresholds per query for each family of cutoff, from one reference sample.

    ``scores`` is the (Q, N) matrix of cosine scores of every query against every row;
    ``sample`` the indices of the reference rows (the same for every query, as in the package).
    """

    def __init__(self, scores: np.ndarray, truth: np.ndarray, sample: np.ndarray) -> None:
        self.scores = scores
        self.truth = truth
        self.true_scores = scores[np.arange(len(truth)), truth]
        reference = scores[:, sample]
        self.reference = np.sort(reference, axis=1)
        self.mean = reference.mean(axis=1)
        self.std = reference.std(axis=1)

    def thresholds(self, family: str, setting: float) -> np.ndarray:
        q = len(self.truth)
        if family == "min_score":
            return np.full(q, setting)
        if family == "z-score":
            return self.mean + setting * self.std
        if family == "percentile":
            # Higher than ``setting`` of the sample: at least the ceil(setting * S)-th sample score.
            size = self.reference.shape[1]
            index = min(int(np.ceil(setting * size)) - 1, size - 1)
            return self.reference[:, index] if index >= 0 else np.full(q, -np.inf)
        raise ValueError(family)

    def keep(self, family: str, setting: float) -> Kept:
        thresholds = self.thresholds(family, setting)
        kept = (self.scores > thresholds[:, None]).sum(axis=1) if family == "percentile" else None
        if kept is None:
            kept = (self.scores >= thresholds[:, None]).sum(axis=1)
            hits = self.true_scores >= thresholds
        else:
            hits = self.true_scores > thresholds
        return Kept(family, setting, kept, hits)

    def matching(self, family: str, mean_kept: float, lo: float, hi: float) -> Kept:
        """The setting of ``family`` whose mean number kept is closest to ``mean_kept`` (bisection)."""
        best = None
        for _ in range(60):
            mid = (lo + hi) / 2
            result = self.keep(family, mid)
            if best is None or abs(result.kept.mean() - mean_kept) < abs(best.kept.mean() - mean_kept):
                best = result
            if result.kept.mean() > mean_kept:
                lo = mid
            else:
                hi = mid
        assert best is not None
        return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = next((p / "shared" for p in ROOT.parents if (p / "shared" / "eval").is_dir()), ROOT.parent / "shared")
    parser.add_argument("--test", type=Path, default=shared / "eval" / "flickr8k_test1k")
    parser.add_argument("--limit", type=int, help="Use only the first N test images.")
    parser.add_argument("--cache", default=str(CACHE), help="'none': embed again and keep nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "relevance.md"), help="'-' prints the table")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cutoff-flickr8k.json")
    args = parser.parse_args(argv)
    log: Log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    test = Captioned.read(args.test, args.limit)
    cache = None if args.cache == "none" else Path(args.cache)
    with tempfile.TemporaryDirectory(prefix="cutoff-bench-") as tmp:
        setup_django(Path(tmp) / "pgdata")
        from django.db import connection
        from django.test import override_settings

        media = Path(tmp) / "media"
        media.mkdir()
        connection.settings_dict.setdefault("TEST", {})["NAME"] = "cutoff_bench"
        with redirect_stdout(sys.stderr):
            old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        try:
            with override_settings(MEDIA_ROOT=str(media), SEMANTIC_IMAGES={"BRIDGE_DIR": str(Path(tmp) / "b")}):
                split, pks = load_split(test, media, cache, log)
                log(f"{split.semantic.shape} {split.query_vectors.shape}")
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
