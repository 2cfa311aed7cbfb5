"""Query time of the routed encoder against MiniLM alone: what a search spends on its words.

Each query is encoded one at a time through ``encode_queries`` (``QUERY_RUNTIME``; the query cache
is not used), by ``ConSEEncoder`` (MiniLM) and ``RoutedConSEEncoder`` in turn, so a busy spell of the
shared machine weighs on both alike; ``--rounds`` passes over the queries. Also timed alone: the
language detection (py3langid) and ``reads()`` (the script / unknown-token test a search runs
first). The queries are the first ``--limit`` English, French and Czech captions of the Flickr8k
*train* split (``../shared/eval``).

    python benchmarks/routed_query_time.py --out benchmarks/results/routed-query-time.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    eval_dir = ROOT.parent / "shared" / "eval"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, default=eval_dir / "flickr8k_train")
    parser.add_argument("--multi", type=Path, default=eval_dir / "multi30k_flickr8k")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.encoders.routed import RoutedConSEEncoder, detect_language

    queries: dict[str, list[str]] = {"en": []}
    with (args.train / "captions.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if len(queries["en"]) < args.limit:
                queries["en"].append(row["caption"].strip())
    with (args.multi / "flickr8k_train" / "queries.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["lang"] in ("fr", "cs") and len(queries.setdefault(row["lang"], [])) < args.limit:
                queries[row["lang"]].append(row["caption"].strip())
    minilm = ConSEEncoder(device="cpu", bridge=None)
    routed = RoutedConSEEncoder(device="cpu", bridge=None)
    steps = {
        "minilm encode_queries": minilm.encode_queries,
        "routed encode_queries": routed.encode_queries,
        "routed reads + encode_queries (a search)": lambda t: (routed.reads(t[0]), routed.encode_queries(t)),
        "minilm reads + encode_queries (a search)": lambda t: (minilm.reads(t[0]), minilm.encode_queries(t)),
        "detection alone": lambda t: detect_language(t[0]),
        "routed reads alone": lambda t: routed.reads(t[0]),
    }
    for step in steps.values():  # load everything before timing
        for texts in queries.values():
            step(texts[:1])
    times: dict[str, dict[str, list[float]]] = {lang: {name: [] for name in steps} for lang in queries}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for lang, texts in queries.items():
            for text in texts:
                for name, step in steps.items():
                    t0 = time.perf_counter()
                    step([text])
                    times[lang][name].append(time.perf_counter() - t0)
    result = {
        "command": "python benchmarks/routed_query_time.py " + " ".join(sys.argv[1:]),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
        "seconds": round(time.perf_counter() - started, 1),
        "queries_per_language": args.limit,
        "rounds": args.rounds,
        "median_ms": {
            lang: {name: round(float(np.median(t)) * 1000, 3) for name, t in steps_times.items()}
            for lang, steps_times in times.items()
        },
    }
    text = json.dumps(result, indent=2)
    if args.out == "-":
        print(text)
    else:
        Path(args.out).write_text(text + "\n", "utf-8")
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
