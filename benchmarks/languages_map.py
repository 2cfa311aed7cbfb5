"""Other languages through the English model (issue 14): a map from e5's space into MiniLM's.

A map ``M`` (ridge least squares, 384 x 384 plus a bias) is fitted on English text only: pairs
``(e5("query: " + text), MiniLM(text))``. A French or Czech query ``q`` then searches the MiniLM half
(ConSE, or ConSE blended with the MiniLM bridge) as ``normalise(M(e5("query: " + q)))``, relying on
e5's cross-lingual alignment; English queries keep MiniLM. The English texts: the ImageNet class
prompts the package ships (``PROMPTS`` over ``imagenet_classes.tsv``) and/or the train split's English
captions (a stand-in for a site's own captions, as the bridge trains on).

Every choice (training texts, ridge strength) is made on held-out *train* images (10% of the first
``--train-limit``, ``split_holdout`` with the seed, as ``semantic_images_train_bridge`` does) with their
Multi30k French, German and Czech captions as queries (search words, ``query: ``), ranked among
those images; the test split is measured once with the chosen map: English (MiniLM), French and Czech
(through the map) R@5 over all 1,000 test images, for ConSE and ConSE + MiniLM bridge (trained on the
other train images' English captions with the command's defaults).

``--losses cosine infonce`` adds maps fitted by gradient descent (from the best ridge map of each
training set) to the choices.

Text vectors (torch, as ``languages_bridge.py``) are cached under ``--cache``; on the shared 2-core
machine they are the cost, so ``--encode minilm`` / ``--encode e5`` fill the cache in order of need
(run both at once) and the measurement reads what is there.

    python benchmarks/languages_map.py --encode e5 &  python benchmarks/languages_map.py --encode minilm
    python benchmarks/languages_map.py --out -
"""

from __future__ import annotations

import argparse
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
from benchmarks.languages_bridge import TextVectors, TrainSet, cnn_outputs, read_train
from benchmarks.relevance import machine, setup_django

ROOT = Path(__file__).resolve().parent.parent
Log = Callable[[str], None]
RIDGES = (0.1, 0.3, 1.0, 3.0, 10.0)
BOTH_WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0)  # weight of the MiniLM half for a non-English query (--both)
LOSSES = ("cosine", "infonce")  # fitted by gradient descent from the best ridge map of each text source


@dataclass
class Texts:
    """The texts of one run, in the order they are needed."""

    held: np.ndarray  # held-out train image indices
    bridge: np.ndarray  # the other train images
    held_english: list[tuple[str, int]]  # (caption, held-out image index)
    held_other: list[tuple[str, str, int]]  # (lang, caption, held-out image index)
    train_english: list[list[str]]  # per bridge image
    prompts: list[list[str]]  # per prompt template, 1000 class texts


def plan(train: TrainSet, seed: int) -> Texts:
    from django_semantic_images.encoders.conse import PROMPTS, ConSEEncoder

    n = len(train.images)
    order = np.random.default_rng(seed).permutation(n)  # split_holdout(..., 0.1, seed, max_held=1000)
    n_held = max(1, min(round(n * 0.1), 1000))
    held, bridge = np.sort(order[:n_held]), np.sort(order[n_held:])
    held_english = [(c, j) for j, i in enumerate(held) for c in train.english[i]]
    held_other = [(lg, c, j) for j, i in enumerate(held) for lg, c in train.other[i]]
    conse = ConSEEncoder("cpu", bridge=None)
    prompts = [conse.label_texts(p) for p in PROMPTS]
    return Texts(held, bridge, held_english, held_other, [train.english[i] for i in bridge], prompts)


def text_encoder(name: str) -> Any:
    from django.test import override_settings

    from django_semantic_images.encoders.conse import ConSEEncoder

    with override_settings(SEMANTIC_IMAGES={"TEXT_MODEL": languages.TEXT_MODELS[name]}):
        return ConSEEncoder("cpu", bridge=None).text_encoder()


def encode_in_order(name: str, plan_: Texts, test: languages.LangQueries, cache: Path, log: Log) -> None:
    """Fill the cache with ``name``'s query vectors, most needed first."""
    vectors = TextVectors(text_encoder(name), True, cache, log)
    first = [c for caps in plan_.train_english for c in caps[:1]]
    rest = [c for caps in plan_.train_english for c in caps[1:]]
    if name == "minilm":
        steps = [
            [c for c, _ in plan_.held_english],
            plan_.prompts[0],
            first,
            [t for t, _ in test.queries["en"]],
            rest,
            plan_.prompts[2],
            plan_.prompts[1],
        ]
    else:
        steps = [
            [c for _, c, _ in plan_.held_other],
            plan_.prompts[0],
            first,
            [t for t, _ in test.queries["fr"]] + [t for t, _ in test.queries["cs"]],
            [c for c, _ in plan_.held_english],
            plan_.prompts[2],
            rest,
            plan_.prompts[1],
        ]
    rng = np.random.default_rng(0)
    for i, texts in enumerate(steps):
        log(f"[{name}] step {i}: {len(texts)} texts")
        # In random chunks: a run stopped midway leaves a random (not the shortest) part encoded.
        texts = [texts[j] for j in rng.permutation(len(texts))]
        for start in range(0, len(texts), 512):
            vectors(texts[start : start + 512])
    log(f"[{name}] all encoded")


def cached(name: str, cache: Path, log: Log) -> dict[str, np.ndarray]:
    """The query vectors of ``name`` found in the cache (text -> vector); nothing is encoded."""
    return TextVectors(text_encoder(name), True, cache, log).known


def fit_map(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge least squares ``y ~ x @ W + b``; ``ridge`` in units of the mean variance of ``x``."""
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    cov = xc.T @ xc / len(x)
    alpha = ridge * np.trace(cov) / len(cov)
    weight = np.linalg.solve(cov + alpha * np.eye(len(cov)), xc.T @ yc / len(x))
    return weight.astype(np.float32), (my - mx @ weight).astype(np.float32)


def fit_loss(x: np.ndarray, y: np.ndarray, start: tuple[np.ndarray, np.ndarray], loss: str, steps: int = 300) -> Any:
    """``W, b`` minimising ``1 - cos(x W + b, y)`` (``cosine``) or the symmetric InfoNCE of the pairs
    (``infonce``, temperature 0.05, all pairs one batch), from ``start``, full-batch Adam."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    w = torch.nn.Parameter(torch.from_numpy(start[0].copy()))
    b = torch.nn.Parameter(torch.from_numpy(start[1].copy()))
    opt = torch.optim.Adam([w, b], lr=1e-3)
    for _ in range(steps):
        out = torch.nn.functional.normalize(xt @ w + b, dim=1)
        if loss == "cosine":
            value = 1 - (out * yt).sum(dim=1).mean()
        else:
            logits = out @ yt.T / 0.05
            labels = torch.arange(len(x))
            value = (
                torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
        opt.zero_grad()
        value.backward()
        opt.step()
    return w.detach().numpy(), b.detach().numpy()


def fit_name(fit: Any) -> str:
    return f"{fit} loss" if isinstance(fit, str) else f"ridge {fit:g}"


def apply_map(m: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    from django_semantic_images.encoders.base import l2_normalize

    return l2_normalize(x @ m[0] + m[1])


def measure(args: Any, p: Texts, train: TrainSet, test: languages.LangQueries, log: Log) -> int:
    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.encoders.bridges import LearnedBridge
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.training import TrainingOptions, fit_linear_bridge

    started = time.perf_counter()
    load = [os.getloadavg()[0]]
    cnn = ConSEEncoder("cpu", bridge=None)
    test_out = cnn_outputs(cnn, args.test, test.images, args.cache, log)
    train_out = cnn_outputs(cnn, args.train, train.images, args.cache, log)
    n_test = len(test.images)
    _, conse = languages.conse_side(languages.TEXT_MODELS["minilm"], np.concatenate([test_out[1], train_out[1]]))
    conse_test, conse_train = conse[:n_test], conse[n_test:]
    visual_test, visual_train = l2_normalize(test_out[0]), l2_normalize(train_out[0])
    mini, e5 = cached("minilm", args.cache, log), cached("e5", args.cache, log)
    log(f"cached vectors: MiniLM {len(mini)}, e5 {len(e5)}")

    # The MiniLM bridge on the bridge images' English captions (the command's defaults).
    # (On the captions whose vectors are cached: all of them in a full run.)
    k = args.bridge_captions
    texts = [c for caps in p.train_english for c in caps[:k] if c in mini]
    owner = np.array([i for i, caps in enumerate(p.train_english) for c in caps[:k] if c in mini])
    path = args.cache / f"map-bridge-{args.train_limit}-{args.seed}-{len(texts)}.npz"
    if path.exists():
        with np.load(path) as found:
            weight, bias = found["weight"], found["bias"]
    else:
        t0 = time.perf_counter()
        weight, bias = fit_linear_bridge(
            visual_train[p.bridge], np.stack([mini[t] for t in texts]), owner, TrainingOptions(seed=args.seed)
        )
        np.savez(path, weight=weight, bias=bias)
        log(f"MiniLM bridge: {len(texts)} captions, trained in {time.perf_counter() - t0:.0f} s")
    bridge = LearnedBridge(weight, bias, 0.2)
    bridge_note = f"{len(texts)} captions of {len(p.bridge)} train images"
    held_galleries = {
        "ConSE": conse_train[p.held],
        "bridge": bridge.apply(visual_train[p.held], conse_train[p.held]),
    }

    # Training pairs, as far as both models' vectors are cached.
    def pairs(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        both = [t for t in dict.fromkeys(texts) if t in mini and t in e5]
        return np.stack([e5[t] for t in both]), np.stack([mini[t] for t in both])

    first = [c for caps in p.train_english for c in caps[:1]]
    every = [c for caps in p.train_english for c in caps]
    sources = {
        "prompts (photo)": p.prompts[0],
        "prompts (all)": [t for ps in p.prompts for t in ps],
        "captions (1 an image)": first,
        "captions (all)": every,
        "prompts + captions (all)": [t for ps in p.prompts for t in ps] + every,
    }
    held_queries: dict[str, tuple[np.ndarray, list[int]]] = {}
    for lang in ("fr", "de", "cs"):
        rows = [(c, j) for lg, c, j in p.held_other if lg == lang and c in e5]
        held_queries[lang] = (np.stack([e5[c] for c, _ in rows]), [j for _, j in rows])
    en_rows = [(c, j) for c, j in p.held_english if c in mini]
    en_direct = (np.stack([mini[c] for c, _ in en_rows]), [j for _, j in en_rows])
    en_e5_rows = [(c, j) for c, j in p.held_english if c in e5]
    lines = ["Held-out train images (R@5 among themselves; fr, de, cs through the map; en MiniLM direct):", ""]
    reference = {g: languages.rank(en_direct[0], gal, en_direct[1], args.seed).r5 for g, gal in held_galleries.items()}
    lines.append(
        f"- English, MiniLM direct ({len(en_rows)} captions): "
        + ", ".join(f"{g} {v:.1f}" for g, v in reference.items())
    )
    log(lines[-1])
    best: tuple[float, str, Any] | None = None
    best_ridge_of: dict[str, float] = {}
    for source, texts in sources.items():
        x, y = pairs(texts)
        best_ridge: tuple[float, float] | None = None
        for ridge in [*RIDGES, *args.losses]:
            if isinstance(ridge, str):
                assert best_ridge is not None
                m = fit_loss(x, y, fit_map(x, y, best_ridge[1]), ridge)
            else:
                m = fit_map(x, y, ridge)
            out = []
            scores = []
            for g, gal in held_galleries.items():
                for lang, (q, right) in held_queries.items():
                    r5 = languages.rank(apply_map(m, q), gal, right, args.seed).r5
                    scores.append(r5)
                    out.append(f"{g} {lang} {r5:.1f}")
                if len(en_e5_rows) >= 100:
                    q = np.stack([e5[c] for c, _ in en_e5_rows])
                    r5 = languages.rank(apply_map(m, q), gal, [j for _, j in en_e5_rows], args.seed).r5
                    out.append(f"{g} en-via-map {r5:.1f}")
            mean = float(np.mean(scores))
            if not isinstance(ridge, str) and (best_ridge is None or mean > best_ridge[0]):
                best_ridge = (mean, ridge)
            lines.append(f"- {source} ({len(x)} pairs), {fit_name(ridge)}: " + ", ".join(out) + f" (mean {mean:.1f})")
            log(lines[-1])
            if best is None or mean > best[0]:
                best = (mean, source, ridge)
        assert best_ridge is not None
        best_ridge_of[source] = best_ridge[1]
    assert best is not None
    _, source, ridge = best
    lines.append(f"- chosen: {source}, {fit_name(ridge)}")
    x, y = pairs(sources[source])
    if isinstance(ridge, str):
        m = fit_loss(x, y, fit_map(x, y, best_ridge_of[source]), ridge)
    else:
        m = fit_map(x, y, ridge)

    both_lines: list[str] = []
    if args.both:
        # ConSE in both halves, as RoutedConSEEncoder stores it: a non-English query searches the MiniLM
        # half through the map and the e5 half directly, ``w * cos_MiniLM + (1 - w) * cos_e5``.
        _, conse_e5 = languages.conse_side(languages.TEXT_MODELS["e5"], np.concatenate([test_out[1], train_out[1]]))
        e5_test, e5_held = conse_e5[:n_test], conse_e5[n_test:][p.held]
        mini_held = held_galleries["ConSE"]
        both_lines += ["", f"Both halves (ConSE; map: {source}, {fit_name(ridge)}), held-out train images, R@5:", ""]
        best_w: tuple[float, float] | None = None
        for w in BOTH_WEIGHTS:
            out, scores = [], []
            for lang, (q, right) in held_queries.items():
                s_ = w * apply_map(m, q) @ mini_held.T + (1 - w) * q @ e5_held.T
                r5 = languages.rank(s_, np.eye(len(mini_held), dtype=np.float32), right, args.seed).r5
                scores.append(r5)
                out.append(f"{lang} {r5:.1f}")
            mean = float(np.mean(scores))
            name = {0.0: "e5 alone (today's route)", 1.0: "map alone"}.get(w, f"w {w:g}")
            both_lines.append(f"- {name}: " + ", ".join(out) + f" (mean {mean:.1f})")
            log(both_lines[-1])
            if 0 < w < 1 and (best_w is None or mean > best_w[0]):
                best_w = (mean, w)
        assert best_w is not None
        both_lines.append(f"- chosen: w {best_w[1]:g}")
    if args.held_only:
        print("\n".join(lines + both_lines))
        return 0

    # The test split, once.
    galleries = {"ConSE": conse_test, "ConSE+bridge (en)": bridge.apply(visual_test, conse_test)}
    table = [
        "| vectors | queries | n | R@1 | R@5 | R@10 | median rank | R@5 / English R@5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    english_of: dict[str, float] = {}
    for g, gal in galleries.items():
        english = None
        for lang in ("en", "fr", "cs"):
            rows = test.queries[lang]
            if lang == "en":
                rows = [(t, i) for t, i in rows if t in mini]
                q = np.stack([mini[t] for t, _ in rows])
                label = "en (MiniLM)"
            else:
                rows = [(t, i) for t, i in rows if t in e5]
                q = apply_map(m, np.stack([e5[t] for t, _ in rows]))
                label = f"{lang} (e5 -> map)"
            if not rows:
                continue
            s = languages.rank(q, gal, [i for _, i in rows], args.seed)
            ratio = ""
            if lang == "en":
                english = english_of[g] = s.r5
            elif english:
                ratio = f"{100 * s.r5 / english:.0f}%"
            table.append(
                f"| {g} | {label} | {s.queries} | {s.r1:.1f} | {s.r5:.1f} | {s.r10:.1f} | {s.median_rank:g} | {ratio} |"
            )
            log(table[-1])
    if args.both:
        for lang in ("fr", "cs"):
            rows = [(t, i) for t, i in test.queries[lang] if t in e5]
            q = np.stack([e5[t] for t, _ in rows])
            right = [i for _, i in rows]
            for label, w in (
                (f"{lang} (e5 alone, today's route)", 0.0),
                (f"{lang} (both halves, w {best_w[1]:g})", best_w[1]),
            ):
                s_ = w * apply_map(m, q) @ conse_test.T + (1 - w) * q @ e5_test.T
                sc = languages.rank(s_, np.eye(n_test, dtype=np.float32), right, args.seed)
                ratio = f"{100 * sc.r5 / english_of['ConSE']:.0f}%"
                table.append(
                    f"| ConSE (both halves) | {label} | {sc.queries} | {sc.r1:.1f} | {sc.r5:.1f} | {sc.r10:.1f} | "
                    f"{sc.median_rank:g} | {ratio} |"
                )
                log(table[-1])
    # The map's cost on a query: one 384 x 384 product and a normalisation.
    q1 = np.stack([e5[t] for t, _ in test.queries["fr"][:1] if t in e5] or [np.ones(384, np.float32)])
    t0 = time.perf_counter()
    for _ in range(1000):
        apply_map(m, q1)
    map_ms = time.perf_counter() - t0
    load.append(os.getloadavg()[0])
    from datetime import UTC, datetime

    command = "python benchmarks/languages_map.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{command}` on a {machine()}; "
            f"{(time.perf_counter() - started) / 60:.0f} minutes; load average {min(load):.1f}-{max(load):.1f}.",
            "",
            f"Map: {source}, {fit_name(ridge)}; applying it to one query takes {map_ms:.3f} ms. "
            f"MiniLM bridge: {bridge_note}, 10 epochs, conse_weight 0.2; {len(p.held)} held-out train images.",
            "",
            *table,
            "",
            *lines,
            *both_lines,
        ]
    )
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n", "utf-8")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    eval_dir = ROOT.parent / "shared" / "eval"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--test", type=Path, default=eval_dir / "flickr8k_test1k")
    parser.add_argument("--train", type=Path, default=eval_dir / "flickr8k_train")
    parser.add_argument("--multi", type=Path, default=eval_dir / "multi30k_flickr8k")
    parser.add_argument("--train-limit", type=int, default=2000, help="The first N train images.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bridge-captions", type=int, default=1, help="English captions an image the bridge trains on."
    )
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()), help="Where outputs are kept.")
    parser.add_argument("--encode", choices=sorted(languages.TEXT_MODELS), help="Only fill the text-vector cache.")
    parser.add_argument("--losses", nargs="*", default=[], choices=LOSSES, help="Also these gradient fits.")
    parser.add_argument("--both", action="store_true", help="Also ConSE in both halves (e5's class vectors).")
    parser.add_argument("--held-only", action="store_true", help="Only the choices on held-out train images.")
    parser.add_argument("--out", default="-", help="'-' prints the table")
    args = parser.parse_args(argv)

    def log(s: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {s}", file=sys.stderr, flush=True)

    test = languages.read_queries(args.test, args.multi, ["en", "fr", "cs"])
    train = read_train(args.train, args.multi, args.train_limit, False)
    with tempfile.TemporaryDirectory(prefix="languages-map-") as tmp:
        setup_django(Path(tmp) / "pgdata")  # settings only: this ranks in numpy, no database
        p = plan(train, args.seed)
        if args.encode:
            encode_in_order(args.encode, p, test, args.cache, log)
            return 0
        return measure(args, p, train, test, log)


if __name__ == "__main__":
    raise SystemExit(main())
