"""Levers for French and Czech with the e5 learned bridge (issue 14): what brings them to 80% of English?

``benchmarks/languages_bridge.py`` trains the bridge on the *stored-text* vectors of the train captions
(``passage: `` for e5) and measures it with *search-word* vectors (``query: ``). This measures, for the
e5 text model and the *multi* training set (English captions of the train split plus their Multi30k
German, French and Czech translations, research use only), these levers:

  * ``passage``: the bridge as ``semantic_images_train_bridge`` trains it (stored-text vectors): the reference;
  * ``query``: trained on the ``query: `` vectors of the same captions (what a search will compare with);
  * ``both``: trained on both (each caption twice, once per prefix);
  * ``query+T``: a linear map ``T`` (384 x 384, identity at the start, no bias) trained jointly with the
    bridge, symmetric InfoNCE between the projected image and ``normalise(T q)`` for each caption's
    ``query: `` vector ``q``; a search applies ``T`` to its e5 query vector (one 384 x 384 product),
    stored vectors are unchanged;
  * ``query+T/lang``: one such map per language (en, de, fr, cs), applied by the query's language
    (here the language of the caption; a search would take it from language detection);
  * ``query en+fr``, ``query en+cs``: a bridge per language, trained on the ``query: `` vectors of the
    English captions and one other language's (each image would then store one vector per language);
  * ``passage en-only``, ``query+T en-only``: the bridge and the map on the English captions alone
    (what a site with English captions has);
  * ``shift`` (added to any of the above at search time, no training): ``q - mean_lang + mean_en``, the
    mean ``query: `` vectors of the train captions of each language (a mean-shift of each language towards
    English).

As ``languages_bridge.py`` does: the first ``--train-limit`` train images, 10% held out
(``split_holdout``, the seed); epochs (10, 20) and the ConSE blend weight are chosen on the held-out
train images, ranked among themselves with their English, French and Czech captions **as search words**
(``query: `` vectors, through ``T``: what the test does), by the mean R@5 of the three languages; the
test split (1,000 images; 929 with French and Czech) is measured once per lever with its choice. Every
lever is trained with ``--seeds`` seeds, each seed a row; the difference against the first lever (or,
with ``--combine``, against ``passage``) of the same seed comes with the standard error of the paired
difference over the queries (hit or miss at 5).

The CNN outputs and text vectors come from ``languages_bridge.py``'s caches (``--cache``); this fills
what is missing (``--encode-only query|passage|passage-longest-first``: only that, so that processes can
share the work). Per-query ranks are kept in ``--cache``; ``--combine`` merges runs that split the levers
between processes into one table, each lever against ``passage`` of the same seed. On a shared 2-core
machine set ``OMP_NUM_THREADS=1``: torch's threads fighting other work made training 10 times slower.

    OMP_NUM_THREADS=1 python benchmarks/languages_bridge_levers.py --train-limit 1000 --seeds 3 \
        --cache /tmp/mbridge --json /tmp/mbridge/a.json
    python benchmarks/languages_bridge_levers.py --combine /tmp/mbridge/a.json --cache /tmp/mbridge --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: the repository root must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import languages
from benchmarks.languages_bridge import TextVectors, cnn_outputs, read_train
from benchmarks.relevance import machine, setup_django

ROOT = Path(__file__).resolve().parent.parent
Log = Callable[[str], None]
WEIGHTS = (0.0, 0.1, 0.2, 0.3)
EPOCHS = (10, 20)
LEVERS = (
    "passage",
    "query",
    "both",
    "query+T",
    "query+T/lang",
    "query en+fr",
    "query en+cs",
    "passage en-only",
    "query+T en-only",
)
LANGS = ("en", "de", "fr", "cs")


@dataclass
class Fit:
    weight: Any
    bias: Any
    maps: dict[str, Any] | None  # language -> T (384 x 384), or "*" -> one T for every language


def fit_joint(
    visual: Any, y: Any, owner: Any, lang: Any, epochs: int, seed: int, per_language: bool, *, map_lr: float
) -> Fit:
    """The bridge and a query-side map ``T`` (one, or one per language) trained together, symmetric
    InfoNCE between ``normalise(W x + b)`` and ``normalise(T_lang y)``; the bridge's own options are
    ``TrainingOptions``' defaults (dropout 0.5, temperature 0.05, AdamW 1e-3 with one cycle, batch 256)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from django_semantic_images.training import TrainingOptions, caption_infonce, shuffled_batches

    o = TrainingOptions(epochs=epochs, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Linear(visual.shape[1], y.shape[1])
    dropout = nn.Dropout(o.dropout)
    keys = list(LANGS) if per_language else ["*"]
    maps = nn.ParameterList([nn.Parameter(torch.eye(y.shape[1])) for _ in keys])
    lang_index = torch.from_numpy(np.array([keys.index(lg if per_language else "*") for lg in lang], np.int64))
    x_all = torch.from_numpy(np.ascontiguousarray(visual, np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(y, np.float32))
    owners = torch.from_numpy(np.asarray(owner, np.int64))
    n = len(owners)
    steps = max(1, epochs * -(-n // o.batch_size))
    optimiser = torch.optim.AdamW(
        [{"params": model.parameters(), "lr": o.learning_rate}, {"params": maps.parameters(), "lr": map_lr}],
        weight_decay=0.0,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, [o.learning_rate, map_lr], total_steps=steps)
    model.train()
    with torch.enable_grad():
        for _ in range(epochs):
            for batch in shuffled_batches(n, o.batch_size, gen):
                img = owners[batch]
                z = F.normalize(model(dropout(x_all[img])), dim=-1)
                yb = y_all[batch]
                if per_language:  # each row through its language's map
                    li = lang_index[batch]
                    t = torch.zeros_like(yb)
                    for k, m in enumerate(maps):
                        rows = (li == k).nonzero(as_tuple=True)[0]
                        t = t.index_copy(0, rows, yb[rows] @ m)
                else:
                    t = yb @ maps[0]
                loss = caption_infonce(z, F.normalize(t, dim=-1), img, o.temperature)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
    return Fit(
        model.weight.detach().numpy().T.copy(),
        model.bias.detach().numpy().copy(),
        {k: m.detach().numpy().copy() for k, m in zip(keys, maps, strict=True)},
    )


def apply_map(fit: Fit, q: Any, lang: str) -> Any:
    """A search's query vectors through the lever's ``T`` (unchanged without one), normalised."""
    if fit.maps:
        q = q @ fit.maps.get(lang, fit.maps.get("*"))
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def hits(queries: Any, gallery: Any, right: Sequence[int], seed: int) -> Any:
    """Per query: 1 when its image is in the top 5 (ties at random, ``languages.rank``'s rule), and its rank."""
    from django_semantic_images.metrics import rank_of

    rng = np.random.default_rng(seed)
    ranks = np.array([rank_of(row, r, rng) for row, r in zip(queries @ gallery.T, right, strict=True)])
    return ranks


def combine(paths: Sequence[Path], cache: Path, out: Path) -> str:
    """One table from several runs' JSON (levers split between processes): R@5 per language, the ratios,
    and each lever's paired difference from ``passage`` (``passage en-only`` for the other English-only
    lever; same seed, per-query ranks kept in ``cache``)."""
    runs = [json.loads(p.read_text("utf-8")) for p in paths]
    rows = [r for run in runs for r in run["rows"]]

    def hit(lever: str, seed: int, lg: str) -> Any:
        return np.load(cache / f"levers-ranks-{lever.replace('/', '-')}-{seed}-{lg}.npy") <= 5

    lines = [
        "| lever | choice (held-out) | en R@5 | fr R@5 | cs R@5 | fr / en | cs / en | "
        "en vs passage | fr vs passage | cs vs passage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    levers = list(dict.fromkeys((r["lever"], r["seed"]) for r in rows))
    for lever, seed in levers:
        mine = [r for r in rows if r["lever"] == lever and r["seed"] == seed]
        by = {r.get("lang", lg): r for r, lg in zip(mine, ("en", "fr", "cs"), strict=True)}  # in that order
        r5 = {lg: by[lg]["r5"] for lg in ("en", "fr", "cs")}
        first = by["en"]
        choice = f"{first['epochs']} epochs, w {first['conse_weight']:g}" + (", shift" if first["shift"] else "")
        diffs = []
        for lg in ("en", "fr", "cs"):
            reference = "passage en-only" if lever.endswith(" en-only") else "passage"  # same captions
            if lever == reference:
                diffs.append("")
                continue
            d = hit(lever, seed, lg).astype(float) - hit(reference, seed, lg).astype(float)
            diffs.append(f"{100 * d.mean():+.1f} +/- {100 * d.std(ddof=1) / np.sqrt(len(d)):.1f}")
        lines.append(
            f"| {lever} (seed {seed}) | {choice} | {r5['en']:.1f} | {r5['fr']:.1f} | {r5['cs']:.1f} | "
            f"{100 * r5['fr'] / r5['en']:.0f}% | {100 * r5['cs'] / r5['en']:.0f}% | " + " | ".join(diffs) + " |"
        )
    merged = {
        "commands": [run["command"] for run in runs],
        "machine": runs[0]["machine"],
        "load_average": [run["load_average"] for run in runs],
        "map_ms_per_query": [run["map_ms_per_query"] for run in runs],
        "train_images": runs[0]["train_images"],
        "held_images": runs[0]["held_images"],
        "train_texts": runs[0]["train_texts"],
        "rows": rows,
        "table": lines,
        "tuning": [t for run in runs for t in run["tuning"]],
    }
    out.write_text(json.dumps(merged, indent=1), "utf-8")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    eval_dir = ROOT.parent / "shared" / "eval"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=Path, default=eval_dir / "flickr8k_test1k")
    parser.add_argument("--train", type=Path, default=eval_dir / "flickr8k_train")
    parser.add_argument("--multi", type=Path, default=eval_dir / "multi30k_flickr8k")
    parser.add_argument("--limit", type=int, help="Use only the first N test images (a quick look).")
    parser.add_argument("--train-limit", type=int, default=6000)
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, nargs="+", default=list(EPOCHS), help="Epochs to choose among.")
    parser.add_argument("--map-lr", type=float, default=1e-3, help="Learning rate of T.")
    parser.add_argument("--seed", type=int, default=0, help="The held-out split's and the ties' seed.")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--encode-only",
        choices=["query", "passage", "passage-longest-first"],
        help="Only fill the cache with the train captions' vectors of this kind (two processes can share the "
        "passages: one shortest first, one longest first).",
    )
    parser.add_argument("--combine", type=Path, nargs="+", help="Merge these runs' JSON into --json and print.")
    args = parser.parse_args(argv)
    if args.combine:
        print(combine(args.combine, args.cache, args.json))
        return 0
    command = "python benchmarks/languages_bridge_levers.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def log(s: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {s}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    loads = [os.getloadavg()[0]]
    test = languages.read_queries(args.test, args.multi, ["en", "fr", "cs"], args.limit)
    train = read_train(args.train, args.multi, args.train_limit, False)
    with tempfile.TemporaryDirectory(prefix="languages-levers-") as tmp:
        setup_django(Path(tmp) / "pgdata")
        from django_semantic_images.encoders import get_encoder
        from django_semantic_images.encoders.base import l2_normalize
        from django_semantic_images.encoders.bridges import LearnedBridge
        from django_semantic_images.training import (
            CaptionedImages,
            TrainingOptions,
            fit_linear_bridge,
            split_holdout,
        )

        if args.encode_only:
            from django.test import override_settings

            with override_settings(SEMANTIC_IMAGES={"TEXT_MODEL": languages.TEXT_MODELS["e5"]}):
                only = get_encoder().text_encoder()
            texts = [c for caps in train.english for c in caps] + [c for p in train.other for _, c in p]
            vectors = TextVectors(only, args.encode_only == "query", args.cache, log)
            if args.encode_only == "passage-longest-first":
                missing = sorted({t for t in texts if t not in vectors.known}, key=len, reverse=True)
                for start in range(0, len(missing), 512):  # each part is cached as it is done
                    vectors(missing[start : start + 512])
            else:
                vectors(texts)
            return 0
        cnn = get_encoder()
        test_out = cnn_outputs(cnn, args.test, test.images, args.cache, log)
        train_out = cnn_outputs(cnn, args.train, train.images, args.cache, log)
        n_test = len(test.images)
        encoder, conse = languages.conse_side(languages.TEXT_MODELS["e5"], np.concatenate([test_out[1], train_out[1]]))
        conse_test, conse_train = conse[:n_test], conse[n_test:]
        visual_test, visual_train = l2_normalize(test_out[0]), l2_normalize(train_out[0])
        text = encoder.text_encoder()
        log(f"{encoder.identity}: ConSE ready")

        query_sets = {"en": test.queries["en"], "fr": test.queries["fr"], "cs": test.queries["cs"]}
        queries = TextVectors(text, True, args.cache, log)
        q_test = {k: queries([t for t, _ in pairs]) for k, pairs in query_sets.items()}

        texts, owner, lang = [], [], []
        for i, caps in enumerate(train.english):
            texts += caps
            owner += [i] * len(caps)
            lang += ["en"] * len(caps)
        for i, pairs in enumerate(train.other):
            texts += [c for _, c in pairs]
            owner += [i] * len(pairs)
            lang += [lg for lg, _ in pairs]
        everything = CaptionedImages(list(range(len(train.images))), visual_train.copy(), texts, np.array(owner))
        part, held = split_holdout(everything, 0.1, seed=args.seed, max_held=1000)
        train_idx, held_idx = np.array(part.keys), np.array(held.keys)
        owner_a, lang_a = np.array(owner, np.int64), np.array(lang)
        log(f"{len(texts)} train texts: passage vectors ...")
        p_vec = TextVectors(text, False, args.cache, log)(texts)
        log("... and query vectors")
        q_vec = TextVectors(text, True, args.cache, log)(texts)
        loads.append(os.getloadavg()[0])

        in_train, in_held = np.isin(owner_a, train_idx), np.isin(owner_a, held_idx)
        remap = np.full(len(train.images), -1, np.int64)
        remap[train_idx] = np.arange(len(train_idx))
        remap_held = np.full(len(train.images), -1, np.int64)
        remap_held[held_idx] = np.arange(len(held_idx))
        # Per-language mean of the train captions' query vectors (the shift), from training images only.
        means = {lg: q_vec[in_train & (lang_a == lg)].mean(axis=0) for lg in LANGS}

        def shifted(q: Any, lg: str) -> Any:
            return q - means[lg] + means["en"]

        x = visual_train[train_idx]
        rows: list[dict[str, Any]] = []
        tuning: list[str] = []
        baseline_ranks: dict[tuple[int, str], Any] = {}
        for seed in range(args.seed, args.seed + args.seeds):
            for lever in args.levers:
                fits: dict[int, Fit] = {}
                for epochs in args.epochs:
                    t0 = time.perf_counter()
                    sel = in_train & (lang_a == "en") if lever.endswith(" en-only") else in_train
                    if lever.startswith("query en+"):  # one other language's captions only
                        sel = in_train & np.isin(lang_a, ["en", lever[-2:]])
                    if not lever.startswith("query+T"):
                        if lever == "passage":
                            y, o = p_vec[sel], remap[owner_a[sel]]
                        elif lever.startswith("query"):
                            y, o = q_vec[sel], remap[owner_a[sel]]
                        else:
                            y = np.concatenate([p_vec[sel], q_vec[sel]])
                            o = np.concatenate([remap[owner_a[sel]]] * 2)
                        w, b = fit_linear_bridge(x, y, o, TrainingOptions(epochs=epochs, seed=seed))
                        fits[epochs] = Fit(w, b, None)
                    else:
                        fits[epochs] = fit_joint(
                            x,
                            q_vec[sel],
                            remap[owner_a[sel]],
                            lang_a[sel],
                            epochs,
                            seed,
                            lever.endswith("/lang"),
                            map_lr=args.map_lr,
                        )
                    log(f"seed {seed} {lever}: {epochs} epochs trained in {time.perf_counter() - t0:.0f} s")
                # Choice on the held-out train images (their captions as search words).
                best = None
                for epochs, fit in fits.items():
                    for cw in WEIGHTS:
                        for shift in (False, True):
                            gallery = LearnedBridge(fit.weight, fit.bias, cw).apply(
                                visual_train[held_idx], conse_train[held_idx]
                            )
                            r5 = {}
                            for lg in ("en", "fr", "cs"):
                                m = in_held & (lang_a == lg)
                                q = shifted(q_vec[m], lg) if shift else q_vec[m]
                                r = hits(apply_map(fit, q, lg), gallery, remap_held[owner_a[m]].tolist(), args.seed)
                                r5[lg] = 100 * float(np.mean(r <= 5))
                            mean = float(np.mean(list(r5.values())))
                            tuning.append(
                                f"seed {seed} {lever} epochs {epochs} conse_weight {cw:g}"
                                + (" shift" if shift else "")
                                + ": "
                                + ", ".join(f"{k} {v:.1f}" for k, v in r5.items())
                                + f" (mean {mean:.1f}; fr/en {100 * r5['fr'] / r5['en']:.0f}%, "
                                f"cs/en {100 * r5['cs'] / r5['en']:.0f}%)"
                            )
                            if best is None or mean > best[0]:
                                best = (mean, epochs, cw, shift)
                assert best is not None
                _, epochs, cw, shift = best
                fit = fits[epochs]
                log(f"seed {seed} {lever}: chosen {epochs} epochs, conse_weight {cw:g}, shift {shift}")
                gallery = LearnedBridge(fit.weight, fit.bias, cw).apply(visual_test, conse_test)
                r5s = {}
                for lg, pairs in query_sets.items():
                    q = shifted(q_test[lg], lg) if shift else q_test[lg]
                    ranks = hits(apply_map(fit, q, lg), gallery, [i for _, i in pairs], args.seed)
                    from django_semantic_images.metrics import summarise

                    s = summarise(ranks)
                    r5s[lg] = s.r5
                    row = {
                        "seed": seed,
                        "lever": lever,
                        "epochs": epochs,
                        "conse_weight": cw,
                        "shift": shift,
                        **s.as_dict(),
                        "lang": lg,
                    }
                    np.save(args.cache / f"levers-ranks-{lever.replace('/', '-')}-{seed}-{lg}.npy", ranks)
                    hit = (ranks <= 5).astype(float)
                    if lever == args.levers[0]:
                        baseline_ranks[(seed, lg)] = hit
                    elif (seed, lg) in baseline_ranks:
                        d = hit - baseline_ranks[(seed, lg)]
                        row["r5_minus_first"] = round(100 * float(d.mean()), 2)
                        row["paired_se"] = round(100 * float(d.std(ddof=1) / np.sqrt(len(d))), 2)
                    rows.append(row)
                    log(
                        f"seed {seed} {lever} {lg}: {s}"
                        + (
                            f" diff {row.get('r5_minus_first')} +/- {row.get('paired_se')}"
                            if "paired_se" in row
                            else ""
                        )
                    )
                fr, cs = (100 * r5s[lg] / r5s["en"] for lg in ("fr", "cs"))
                log(f"seed {seed} {lever}: fr/en {fr:.0f}%, cs/en {cs:.0f}%")
                if fit.maps:
                    np.savez(args.cache / f"levers-map-{lever.replace('/', '-')}-{seed}.npz", **fit.maps)
                loads.append(os.getloadavg()[0])
        # The cost of T at search time: one (1, 384) x (384, 384) product and a normalisation.
        t = np.eye(384, dtype=np.float32)
        q1 = q_test["fr"][:1].astype(np.float32)
        reps = 20000
        t0 = time.perf_counter()
        for _ in range(reps):
            v = q1 @ t
            v /= np.linalg.norm(v)
        map_ms = (time.perf_counter() - t0) * 1000 / reps
    loads.append(os.getloadavg()[0])
    out = {
        "command": command,
        "machine": machine(),
        "load_average": f"{min(loads):.1f}-{max(loads):.1f}",
        "minutes": round((time.perf_counter() - started) / 60, 1),
        "train_images": len(train_idx),
        "held_images": len(held_idx),
        "train_texts": int(in_train.sum()),
        "map_ms_per_query": round(map_ms, 4),
        "rows": rows,
        "tuning": tuning,
    }
    assert args.json is not None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1), "utf-8")
    log(f"wrote {args.json}; T costs {map_ms:.4f} ms a query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
