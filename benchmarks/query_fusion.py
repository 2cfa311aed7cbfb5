"""Does ONNX Runtime's transformer optimizer make the query models faster (issue 14's query time)?

A search encodes its words with an int8 ONNX export of the text model (``QUERY_RUNTIME``); a
non-English search with the routed encoder takes multilingual-e5-small (12 layers) where English
takes all-MiniLM-L6-v2 (6), about twice the time. This measures whether fusing the graph
(``onnxruntime.transformers.optimizer``: attention, skip-LayerNorm, bias-GELU and embedding
kernels) before the int8 quantisation narrows that, for both models, one query at a time, the
variants taking turns (so a busy spell weighs on all alike). Two exports of each model: the
package's (``export_sentence_model``, torch's dynamo exporter; its SDPA attention is not
fused) and torch's TorchScript exporter with eager attention, the graph the optimizer knows
how to fuse whole. Each variant's vectors are checked against torch's (minimum cosine).
Queries: the first ``--limit`` English, French and Czech captions of the Flickr8k *train*
split (``../shared/eval``). Models are written to ``--work`` (kept between runs).

    python benchmarks/query_fusion.py --out benchmarks/results/query-fusion.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def read_queries(eval_dir: Path, limit: int) -> dict[str, list[str]]:
    queries: dict[str, list[str]] = {"en": [], "fr": [], "cs": []}
    with (eval_dir / "flickr8k_train" / "captions.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if len(queries["en"]) < limit:
                queries["en"].append(row["caption"].strip())
    with (eval_dir / "multi30k_flickr8k" / "flickr8k_train" / "queries.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["lang"] in ("fr", "cs") and len(queries[row["lang"]]) < limit:
                queries[row["lang"]].append(row["caption"].strip())
    return queries


def export_eager(text: Any, target: Path) -> None:
    """TorchScript export with eager attention and mean pooling (the default text models')."""
    import torch

    text.ensure_loaded()
    text.model.set_attn_implementation("eager")

    class Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    example = text.tokenizer(["a dog runs", "two people on a bench"], padding=True, return_tensors="pt")
    dims = {0: "batch", 1: "tokens"}
    torch.onnx.export(
        Pooled(text.model).eval(),
        (example["input_ids"], example["attention_mask"]),
        str(target),
        input_names=["input_ids", "attention_mask"],
        output_names=["query_vector"],
        dynamic_axes={"input_ids": dims, "attention_mask": dims, "query_vector": {0: "batch"}},
        dynamo=False,
        opset_version=17,
    )
    text.model.set_attn_implementation("sdpa")


def variants(text: Any, name: str, work: Path) -> dict[str, tuple[Path, dict[str, int]]]:
    """``{variant: (int8 model file, fused operators)}`` for one text model."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from django_semantic_images.encoders.onnx_queries import export_sentence_model

    found: dict[str, tuple[Path, dict[str, int]]] = {}
    for exporter in ("dynamo", "eager"):
        fp32 = work / f"{name}-{exporter}.onnx"
        if not fp32.exists():
            text.ensure_loaded()
            (export_sentence_model if exporter == "dynamo" else export_eager)(text, fp32)
        plain = work / f"{name}-{exporter}-int8.onnx"
        if not plain.exists():
            quantize_dynamic(fp32, plain, weight_type=QuantType.QInt8, per_channel=True)
        found[f"{exporter}, int8"] = (plain, {})
        fused = work / f"{name}-{exporter}-fused.onnx"
        optimized = optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384, opt_level=1)
        stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        if not fused.exists():
            optimized.save_model_to_file(str(fused))
        fused8 = work / f"{name}-{exporter}-fused-int8.onnx"
        if not fused8.exists():
            quantize_dynamic(
                fused,
                fused8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        found[f"{exporter}, fused, int8"] = (fused8, stats)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", type=Path, default=ROOT.parent / "shared" / "eval")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/query-fusion"))
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.encoders.onnx_queries import cpu_session
    from django_semantic_images.encoders.routed import RoutedConSEEncoder

    args.work.mkdir(parents=True, exist_ok=True)
    queries = read_queries(args.eval, args.limit)
    texts = {
        "minilm": ConSEEncoder(device="cpu", bridge=None).text_encoder(),
        "e5": RoutedConSEEncoder(device="cpu", bridge=None).halves[1].text_encoder(),
    }
    sessions: dict[str, tuple[Any, Any]] = {}
    report: dict[str, Any] = {"variants": {}, "load": [os.getloadavg()]}
    probe = queries["en"][:20] + queries["fr"][:20] + queries["cs"][:20]
    for name, text in texts.items():
        expected = text.encode(probe, query=True)
        for variant, (path, stats) in variants(text, name, args.work).items():
            session = cpu_session(path)
            got = np.asarray(session.run(None, text.tokenize(probe, query=True))[0])
            key = f"{name}: {variant}"
            sessions[key] = (text, session)
            cosine = float(np.min(np.sum(got * expected, axis=1)))
            report["variants"][key] = {"fused": stats, "min_cosine": round(cosine, 4)}
    times: dict[str, dict[str, list[float]]] = {key: {lang: [] for lang in queries} for key in sessions}
    for _ in range(args.rounds):
        for lang, words in queries.items():
            for query in words:
                for key, (text, session) in sessions.items():
                    feed = text.tokenize([query], query=True)
                    start = time.perf_counter()
                    session.run(None, feed)
                    times[key][lang].append((time.perf_counter() - start) * 1000)
    report["load"].append(os.getloadavg())
    for key, by_lang in times.items():
        report["variants"][key]["ms_p50"] = {lang: round(statistics.median(v), 3) for lang, v in by_lang.items()}
    text_out = json.dumps(report, indent=2)
    if args.out == "-":
        print(text_out)
    else:
        Path(args.out).write_text(text_out + "\n")
        print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
