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
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe as describe_machine  # noqa: E402
from relevance import ROOT, Bench, Captioned, setup_django, write_table  # noqa: E402

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
            # Wrong rows (every row but the true image) the cutoff drops, on average.
            "wrong_dropped": round(100 * (1 - float((kept - self.hits).mean()) / (rows - 1)), 2),
            "all_kept": round(100 * float((kept == rows).mean()), 2),
        }


class Families:
    """Score thresholds per query for each family of cutoff.

    ``scores`` is the (Q, N) matrix of cosine scores of every query against every row;
    ``calibrations`` the package's calibration of each query against its reference sample.
    """

    def __init__(self, scores: np.ndarray, truth: np.ndarray, calibrations: Sequence[Any]) -> None:
        self.scores = scores
        self.truth = truth
        self.true_scores = scores[np.arange(len(truth)), truth]
        self.calibrations = calibrations
        self.mean = np.array([c.scores.mean() for c in calibrations])
        self.std = np.array([c.scores.std() for c in calibrations])

    def thresholds(self, family: str, setting: float) -> np.ndarray:
        """The score each query's results must exceed."""
        if family == "min_score":
            return np.full(len(self.truth), setting - 1e-12)
        if family == "z-score":
            return self.mean + setting * self.std
        if family == "min_relevance":
            return np.array([c.threshold(setting) for c in self.calibrations])
        raise ValueError(family)

    def keep(self, family: str, setting: float) -> Kept:
        thresholds = self.thresholds(family, setting)
        kept = (self.scores > thresholds[:, None]).sum(axis=1)
        return Kept(family, setting, kept, self.true_scores > thresholds)

    def matching(self, family: str, mean_kept: float, lo: float, hi: float) -> Kept:
        """The setting of ``family`` whose mean number kept is closest to ``mean_kept`` (bisection)."""
        best = None
        for _ in range(50):
            mid = (lo + hi) / 2
            result = self.keep(family, mid)
            if best is None or abs(result.kept.mean() - mean_kept) < abs(best.kept.mean() - mean_kept):
                best = result
            lo, hi = (mid, hi) if result.kept.mean() > mean_kept else (lo, mid)
        assert best is not None
        return best


RELEVANCES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)
RANGES = {"min_score": (-1.0, 1.0), "z-score": (-10.0, 20.0)}


def measure(split: Split, pks: list[int], small_sample: int, log: Log) -> dict[str, Any]:
    """Every figure of the report, from the database's reference samples and the stored vectors."""
    from django.db import connection

    from django_semantic_images.calibration import draw_reference
    from django_semantic_images.conf import semantic_settings
    from photos.models import Photo

    scores = unit(split.query_vectors) @ unit(split.semantic).T
    rows = scores.shape[1]
    size = int(semantic_settings.CALIBRATION_SAMPLE)
    out: dict[str, Any] = {"rows": rows, "queries": len(split.queries), "samples": {}}
    for sample in dict.fromkeys((size, small_sample)):
        reference = draw_reference(Photo._base_manager.using(connection.alias), "embedding_semantic", sample)
        calibrations = [reference.calibrate(v) for v in split.query_vectors]
        families = Families(scores, split.truth, calibrations)
        table = []
        for relevance in RELEVANCES:
            calibrated = families.keep("min_relevance", relevance)
            line = {"min_relevance": relevance, "calibrated": calibrated.summary(rows)}
            for family, (lo, hi) in RANGES.items():
                line[family] = families.matching(family, float(calibrated.kept.mean()), lo, hi).summary(rows)
            table.append(line)
            log(f"sample {len(reference.vectors)}: {json.dumps(line)}")
        out["samples"][str(len(reference.vectors))] = table
        if sample == size:
            out["per_query_sample_scores"] = {
                f"{stat} p10/p50/p90": [round(float(v), 4) for v in np.percentile(values, [10, 50, 90])]
                for stat, values in (("mean", families.mean), ("std", families.std))
            }
            out["z_score_notes"] = z_score_notes(families, scores)
            log(f"z-score notes: {json.dumps(out['z_score_notes'])}")
    out["orm_check"] = check_orm(split, pks, scores, log)
    return out


def z_score_notes(families: Families, scores: np.ndarray) -> dict[str, Any]:
    """Why the z-score was not chosen: how far its normal fit is from the scores' real tail, and
    how the queries it leaves empty differ (their true image's rank)."""
    from statistics import NormalDist

    z = (scores - families.mean[:, None]) / families.std[:, None]
    tail = {
        f"z>{t}": {
            "measured": round(100 * float((z > t).mean()), 4),
            "normal": round(100 * (1 - NormalDist().cdf(t)), 4),
        }
        for t in (2, 3, 4)
    }
    rank = (scores > families.true_scores[:, None]).sum(axis=1) + 1
    matched = families.matching("z-score", 10.0, *RANGES["z-score"])
    empty = matched.kept == 0
    return {
        "share_of_rows_above_percent": tail,
        "at_10_kept_on_average": {
            "z": round(float(matched.setting), 3),
            "queries_left_empty_percent": round(100 * float(empty.mean()), 1),
            "their_r10_percent": round(100 * float((rank[empty] <= 10).mean()), 1),
            "others_r10_percent": round(100 * float((rank[~empty] <= 10).mean()), 1),
        },
    }


def check_orm(split: Split, pks: list[int], scores: np.ndarray, log: Log, queries: int = 50) -> dict[str, Any]:
    """Run a slice of the queries through ``semantic_search(vector).above(r)``: the rows kept must be
    those the numpy figures count (the default reference sample, drawn by the package itself)."""
    from photos.models import Photo

    rng = np.random.default_rng(0)
    chosen = rng.choice(len(split.queries), size=min(queries, len(split.queries)), replace=False)
    checked = differ = 0
    for q in chosen:
        ranked = Photo.objects.filter(pk__in=pks).semantic_search(split.query_vectors[q])
        calibration = ranked.calibration()
        for relevance in (0.9, 0.99):
            kept = set(ranked.above(relevance).values_list("pk", flat=True))
            expected = {pks[i] for i in np.flatnonzero(scores[q] > calibration.threshold(relevance))}
            checked += 1
            differ += kept != expected
    log(f"ORM check: {checked - differ} of {checked} (query, cutoff) pairs keep exactly the counted rows")
    if differ:
        raise AssertionError(f"{differ} of {checked} ORM cutoffs kept other rows than counted")
    return {"pairs": checked, "differ": differ}


def render(result: dict[str, Any], command: str) -> str:
    """The docs table: each min_relevance, and min_score / z-score at the same mean number kept."""
    size = str(result["sample"])
    lines = [
        f"Measured {result['date']} with `{command}` on {result['machine']}; encoder `{result['encoder']}` "
        f"(ConSE, no bridge, no alt text); {result['rows']} images, {result['queries']} caption queries, "
        f"one true image each; reference sample {size} rows ({result['seconds']:.0f} s in all).",
        "",
        "| cutoff | true kept (recall) % | wrong dropped % | kept per query: mean | median | p10 | p90 "
        "| queries with none kept % | true among kept % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        return (
            f"| {label} | {s['recall']:.1f} | {s['wrong_dropped']:.1f} | {s['mean_kept']:.1f} "
            f"| {s['median_kept']:g} | {s['p10_kept']:g} | "
            f"{s['p90_kept']:g} | {s['none_kept']:.1f} | {s['precision']:.2f} |"
        )

    for line in result["samples"][size]:
        lines.append(row(f"**min_relevance={line['min_relevance']:g}**", line["calibrated"]))
        lines.append(row(f"min_score={line['min_score']['setting']:.3f} (same mean kept)", line["min_score"]))
        lines.append(row(f"z-score >= {line['z-score']['setting']:.2f} (same mean kept)", line["z-score"]))
    small = [k for k in result["samples"] if k != size]
    if small:
        lines += ["", f"The same cutoffs with a reference sample of {small[0]} rows:", ""]
        lines += [lines[2], lines[3]]
        for line in result["samples"][small[0]]:
            lines.append(row(f"min_relevance={line['min_relevance']:g}", line["calibrated"]))
    spread = result["per_query_sample_scores"]
    lines += [
        "",
        "Scores of the reference sample per query, 10th / 50th / 90th percentile over the queries: mean "
        + " / ".join(f"{v:.3f}" for v in spread["mean p10/p50/p90"])
        + ", standard deviation "
        + " / ".join(f"{v:.3f}" for v in spread["std p10/p50/p90"])
        + ".",
    ]
    notes = result["z_score_notes"]
    tail = notes["share_of_rows_above_percent"]
    empty = notes["at_10_kept_on_average"]
    lines += [
        "",
        "z-score: share of all (query, image) pairs above z = 2 / 3 / 4: "
        + " / ".join(f"{v['measured']:g}%" for v in tail.values())
        + " (a normal distribution: "
        + " / ".join(f"{v['normal']:g}%" for v in tail.values())
        + f"). At z >= {empty['z']:g} (10 kept on average) {empty['queries_left_empty_percent']:g}% of the "
        f"queries keep nothing; their true image was among the 10 best for {empty['their_r10_percent']:g}% of "
        f"them, against {empty['others_r10_percent']:g}% for the other queries.",
    ]
    check = result["orm_check"]
    lines += [
        "",
        f"`semantic_search(vector).above(r)` run in PostgreSQL for {check['pairs'] // 2} of the queries at r = 0.9 "
        f"and 0.99 kept exactly the rows counted here ({check['pairs'] - check['differ']} of {check['pairs']}).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shared = next((p / "shared" for p in ROOT.parents if (p / "shared" / "eval").is_dir()), ROOT.parent / "shared")
    parser.add_argument("--test", type=Path, default=shared / "eval" / "flickr8k_test1k")
    parser.add_argument("--limit", type=int, help="Use only the first N test images.")
    parser.add_argument("--cache", default=str(CACHE), help="'none': embed again and keep nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "relevance.md"), help="'-' prints the table")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "cutoff-flickr8k.json")
    parser.add_argument("--small-sample", type=int, default=200, help="A second, smaller reference sample.")
    args = parser.parse_args(argv)
    command = ("python benchmarks/cutoff.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    started = time.perf_counter()
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
                result = measure(split, pks, args.small_sample, log)
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    from django_semantic_images.conf import semantic_settings

    result.update(
        command=command,
        date=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        machine=describe_machine(),
        encoder=split.identity,
        sample=min(int(semantic_settings.CALIBRATION_SAMPLE), result["rows"]),
        seconds=time.perf_counter() - started,
    )
    table = render(result, command)
    if args.out == "-":
        print(table)
        return 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", "utf-8")
    write_table(Path(args.out), table, BEGIN, END)
    print(f"Wrote {args.json} and the table into {args.out}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
