"""Relevance benchmark: does the right picture come first?

Text -> image retrieval on a captioned image folder (Flickr8k's 1k test split by
default): every caption is a query and its own image the one right answer.
Everything runs through the project's own code against a real PostgreSQL +
pgvector database: rows of the example ``Photo`` model are embedded with
``embed_instances`` and ranked with ``semantic_search`` (exact ranking of every
row, ties broken at random), the learned bridge is trained with the
``semantic_images_train_bridge`` command on the train split's rows.

Modes:
  * images only (every caption a query);
  * alt text on a fraction of the images: one caption of each chosen image becomes
    its alt text, the other four captions of every image are the queries;
  * the same with a bridge learned from the train split (a stand-in for a site's
    own captioned library), blended with ConSE.

    python benchmarks/relevance.py                       # full run, rewrites the table in docs/relevance.md
    python benchmarks/relevance.py --limit 100 --train-limit 600 --out -   # a quick slice, to stdout
    python benchmarks/relevance.py --lang en fr cs       # queries in three languages (benchmarks/languages.py)

A folder is ``images/`` plus ``captions.csv`` (columns ``image,caption``). The
run uses a throwaway database (``relevance_bench``) on the server of
``DATABASE_URL`` or on an embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- relevance-table:begin -->", "<!-- relevance-table:end -->"
LANG_BEGIN, LANG_END = "<!-- languages-table:begin -->", "<!-- languages-table:end -->"
# The goals of issue 5 (R@5, in percent), shown beside the measured figures.
GOALS = {"conse:images": 25.0, "conse+bridge:images": 60.0, "conse+bridge:alt 50%": 70.0}


@dataclass
class Captioned:
    """A folder of images with several captions each."""

    folder: Path
    captions: dict[str, list[str]]  # image file name -> captions, in file order

    @classmethod
    def read(cls, folder: Path, limit: int | None = None) -> Captioned:
        captions: dict[str, list[str]] = {}
        with (folder / "captions.csv").open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                captions.setdefault(row["image"], []).append(row["caption"].strip())
        names = sorted(captions)[:limit] if limit else sorted(captions)
        missing = [n for n in names if not (folder / "images" / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} images of {folder / 'captions.csv'} are missing, e.g. {missing[0]}"
            )
        return cls(folder, {n: captions[n] for n in names})


@dataclass
class Result:
    encoder: str  # "conse" or "conse+bridge"
    mode: str  # "images", "alt 50%" ...
    scores: Any  # RetrievalScores
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.encoder}:{self.mode}"


Log = Callable[[str], None]


class Bench:
    """Loads a split as ``Photo`` rows (files linked, not copied) and ranks them with the project's code."""

    def __init__(self, media_root: Path, seed: int = 0, log: Log = print) -> None:
        self.media_root = media_root
        self.seed = seed
        self.log = log
        self._vectors: dict[str, np.ndarray] = {}
        self._text_model: Any = None

    def load(self, data: Captioned, prefix: str, alt_text: dict[str, str] | None = None) -> list[int]:
        """Rows for every image of ``data`` (their files under ``MEDIA_ROOT/prefix``), not yet embedded."""
        from photos.models import Photo

        link = self.media_root / prefix
        if not link.exists():
            link.symlink_to((data.folder / "images").resolve(), target_is_directory=True)
        alt_text = alt_text or {}
        rows = [Photo(image=f"{prefix}/{name}", alt_text=alt_text.get(name, "")) for name in data.captions]
        return [p.pk for p in Photo.objects.bulk_create(rows, batch_size=500)]

    def embed(self, pks: Sequence[int]) -> str:
        from django_semantic_images.pipeline import embed_pks

        report = embed_pks(self._model(), pks)
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} images failed to embed: {next(iter(report.failed.values()))}")
        return str(report)

    def set_alt_text(self, pks_by_name: dict[str, int], alt_text: dict[str, str]) -> None:
        model = self._model()
        for name, pk in pks_by_name.items():
            model.objects.filter(pk=pk).update(alt_text=alt_text.get(name, ""))

    def rank(self, queries: Sequence[str], right_pk: Sequence[int], pks: Sequence[int]) -> Any:
        """Rank of each query's right row among ``pks``, through ``semantic_search``."""
        from django_semantic_images.encoders import get_encoder
        from django_semantic_images.metrics import rank_of, summarise

        model = self._model()
        rng = np.random.default_rng(self.seed)
        encoder = get_encoder()
        if self._text_model is not getattr(encoder, "text", None):  # query vectors do not depend on a bridge
            self._vectors, self._text_model = {}, getattr(encoder, "text", None)
        new = [q for q in dict.fromkeys(queries) if q not in self._vectors]
        if new:
            self._vectors.update(zip(new, encoder.encode_texts(new), strict=True))
        vectors = [self._vectors[q] for q in queries]
        base = model.objects.filter(pk__in=list(pks))
        ranks = []
        for vector, right in zip(vectors, right_pk, strict=True):
            rows = list(base.semantic_search(vector).values_list("pk", "distance"))
            keys = np.array([pk for pk, _ in rows])
            scores = -np.array([dist for _, dist in rows], dtype=np.float64)
            ranks.append(rank_of(scores, int(np.flatnonzero(keys == right)[0]), rng))
        return summarise(ranks)

    @staticmethod
    def _model() -> Any:
        from photos.models import Photo

        return Photo


def alt_text_plan(data: Captioned, fraction: float, seed: int) -> dict[str, str]:
    """Which images get alt text (their first caption), chosen at random."""
    rng = np.random.default_rng(seed)
    names = list(data.captions)
    chosen = rng.permutation(len(names))[: round(len(names) * fraction)]
    return {names[i]: data.captions[names[i]][0] for i in sorted(chosen)}


def queries_for(data: Captioned, pks_by_name: dict[str, int], skip_first: bool) -> tuple[list[str], list[int]]:
    texts, right = [], []
    for name, caps in data.captions.items():
        for caption in caps[1:] if skip_first else caps:
            texts.append(caption)
            right.append(pks_by_name[name])
    return texts, right


def train_bridge(bench: Bench, train: Captioned, options: dict[str, Any], log: Log) -> tuple[Any, str]:
    """Load the train split with its captions as alt text (one per line), run the command, drop the rows."""
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from django_semantic_images.encoders.bridges import BridgeStore, default_bridge_dir
    from photos.models import Photo

    started = time.perf_counter()
    alt = {name: "\n".join(caps) for name, caps in train.captions.items()}
    pks = bench.load(train, "bench-train", alt)
    log(f"train split: embedding {len(pks)} images ...")
    bench.embed(pks)
    out = io.StringIO()
    try:
        call_command(
            "semantic_images_train_bridge", model="photos.Photo", no_reembed=True, stdout=out, stderr=out, **options
        )
        refused = ""
    except CommandError as exc:
        refused = str(exc)
    finally:
        Photo.objects.filter(pk__in=pks).delete()
    log(out.getvalue().strip())
    took = time.perf_counter() - started
    bridge = BridgeStore(default_bridge_dir()).current()
    if bridge is None:
        raise RuntimeError(f"The bridge was not installed: {refused or out.getvalue()}")
    return bridge, f"{len(pks)} train images, {took:.0f} s (embedding + training + held-out check)"


def run_benchmark(
    test: Captioned,
    train: Captioned | None,
    *,
    media_root: Path,
    fractions: Sequence[float] = (0.5, 1.0),
    bridge_options: dict[str, Any] | None = None,
    seed: int = 0,
    log: Log = print,
) -> list[Result]:
    """Every mode in one run; the bridge store (``BRIDGE_DIR``) must be empty and private to the run.

    ``bridge_options`` are passed to the ``semantic_images_train_bridge`` command.
    """
    from django_semantic_images.encoders import get_encoder, registry
    from django_semantic_images.encoders.bridges import BridgeStore, default_bridge_dir

    bench = Bench(media_root, seed=seed, log=log)
    store = BridgeStore(default_bridge_dir())
    if store.current() is not None:
        raise RuntimeError(f"{store.directory} already holds a bridge; the benchmark needs an empty BRIDGE_DIR.")
    bridge, bridge_note = (None, "")
    if train is not None:
        bridge, bridge_note = train_bridge(bench, train, bridge_options or {}, log)
        store.uninstall()
        registry.reset()
    pks = bench.load(test, "bench-test")
    by_name = dict(zip(test.captions, pks, strict=True))
    results: list[Result] = []
    encoders = [("conse", None)] + ([("conse+bridge", bridge)] if bridge is not None else [])
    for label, use in encoders:
        if use is not None:
            store.install(use)
        registry.reset()
        log(f"[{label}] encoder {get_encoder().identity}")
        plans = [("images", None, False), ("images, 4 queries", {}, True)]
        plans += [(f"alt {round(100 * f)}%", alt_text_plan(test, f, seed), True) for f in fractions]
        for mode, alt, skip_first in plans:
            started = time.perf_counter()
            bench.set_alt_text(by_name, alt or {})
            embedded = bench.embed(pks)
            queries, right = queries_for(test, by_name, skip_first)
            scores = bench.rank(queries, right, pks)
            res = Result(label, mode, scores, time.perf_counter() - started, [embedded])
            if use is not None:
                res.notes.append(bridge_note)
            log(f"[{label}] {mode}: {scores}  ({res.seconds:.0f} s; {embedded})")
            results.append(res)
    Bench._model().objects.filter(pk__in=pks).delete()
    store.uninstall()
    registry.reset()
    return results


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()}-core {cpu} CPU, no GPU, Linux {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def render(results: Sequence[Result], command: str, took: float, test: Captioned, train: Captioned | None) -> str:
    from django_semantic_images.conf import semantic_settings

    n_caps = sum(len(c) for c in test.captions.values())
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` on a {machine()}; "
        f"{took / 60:.1f} minutes in all.",
        "",
        f"Test: {len(test.captions)} images, {n_caps} captions (`{test.folder.name}`)"
        + (
            f"; bridge trained on the {len(train.captions)} images of `{train.folder.name}` (the command holds "
            "10% of them out for its check)."
            if train
            else "."
        )
        + f" Alt-text fusion: `TEXT_WEIGHT` {semantic_settings.TEXT_WEIGHT}.",
        "",
        "| vectors | mode | queries | R@1 | R@5 | R@10 | median rank | goal (R@5) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.scores
        goal = GOALS.get(r.key)
        goal_text = f">= {goal:g} ({'met' if s.r5 >= goal else 'not met'})" if goal is not None else ""
        lines.append(
            f"| {r.encoder} | {r.mode} | {s.queries} | {s.r1:.1f} | {s.r5:.1f} | {s.r10:.1f} | "
            f"{s.median_rank:g} | {goal_text} |"
        )
    lines += [
        "",
        "*images*: every caption is a query, no alt text. *images, 4 queries* and *alt N%*: the first caption "
        "of each image is kept back (as alt text on N% of the images, chosen at random), the other four are "
        "the queries.",
    ]
    return "\n".join(lines)


def write_table(path: Path, table: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between the table markers of ``path`` (append the block when there is none)."""
    block = f"{begin}\n{table}\n{end}"
    text = path.read_text("utf-8") if path.exists() else "# Relevance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, "utf-8")


def setup_django(pgdata: Path) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", str(pgdata))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()


def main(argv: Sequence[str] | None = None) -> int:
    eval_dir = ROOT.parent / "shared" / "eval"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=Path, default=eval_dir / "flickr8k_test1k")
    parser.add_argument("--train", type=Path, default=eval_dir / "flickr8k_train", help="'none': skip the bridge")
    parser.add_argument("--limit", type=int, help="Use only the first N test images.")
    parser.add_argument("--train-limit", type=int, help="Train on the first N train images.")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "relevance.md"), help="'-' prints the table")
    parser.add_argument("--lang", nargs="+", choices=["en", "fr", "cs", "de"], help="Multilingual queries instead.")
    parser.add_argument("--methods", nargs="+", default=["minilm", "e5", "route"], choices=["minilm", "e5", "route"])
    parser.add_argument("--multi", type=Path, default=eval_dir / "multi30k_flickr8k")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()), help="Where CNN logits are kept.")
    parser.add_argument(
        "--latency-sample", type=int, default=200, help="--lang: queries per language timed one at a time (0: none)."
    )
    parser.add_argument("--flip", action="store_true", help="ENCODER_OPTIONS flip: average each image with its mirror.")
    args = parser.parse_args(argv)
    command = "python benchmarks/relevance.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.lang:
        return main_languages(args, command.strip())

    started = time.perf_counter()
    test = Captioned.read(args.test, args.limit)
    train = None if str(args.train) == "none" else Captioned.read(args.train, args.train_limit)
    with tempfile.TemporaryDirectory(prefix="relevance-bench-") as tmp:
        setup_django(Path(tmp) / "pgdata")
        from django.db import connection
        from django.test import override_settings

        media = Path(tmp) / "media"
        media.mkdir()
        connection.settings_dict.setdefault("TEST", {})["NAME"] = "relevance_bench"
        with redirect_stdout(sys.stderr):
            old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
        try:
            semantic: dict[str, Any] = {"BRIDGE_DIR": str(Path(tmp) / "bridges")}
            if args.flip:
                semantic["ENCODER_OPTIONS"] = {"flip": True}
            settings = {"MEDIA_ROOT": str(media), "SEMANTIC_IMAGES": semantic}
            with override_settings(**settings):
                results = run_benchmark(
                    test,
                    train,
                    media_root=media,
                    fractions=args.fractions,
                    seed=args.seed,
                    bridge_options={"epochs": args.epochs},
                    log=lambda s: print(s, file=sys.stderr, flush=True),
                )
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    table = render(results, command.strip(), time.perf_counter() - started, test, train)
    if args.out == "-":
        print(table)
    else:
        write_table(Path(args.out), table)
        print(f"Wrote the table into {args.out}.", file=sys.stderr)
    return 0


def main_languages(args: argparse.Namespace, command: str) -> int:
    """``--lang``: the text-side methods over the same CNN outputs (``benchmarks/languages.py``)."""
    from benchmarks import languages

    data = languages.read_queries(args.test, args.multi, args.lang, args.limit)
    with tempfile.TemporaryDirectory(prefix="relevance-lang-") as tmp:
        setup_django(Path(tmp) / "pgdata")  # settings only: this mode ranks in numpy, no database
        results = languages.run(
            data,
            args.test,
            args.methods,
            cache=args.cache,
            seed=args.seed,
            latency_sample=args.latency_sample,
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
    table = languages.render(results, command, machine(), data)
    if args.out == "-":
        print(table)
    else:
        write_table(Path(args.out), table, LANG_BEGIN, LANG_END)
        print(f"Wrote the table into {args.out}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
