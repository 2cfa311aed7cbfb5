"""Search queries through ONNX Runtime: the sentence model exported once, then run lean.

A search encodes one short text per request. On a CPU, torch's eager forward of
MiniLM spends as much time in per-operator Python overhead as in arithmetic, and a
one-query forward is bound by reading the weights (42 MB in float32). The default
(``QUERY_INT8``) runs the graph in ONNX Runtime with int8 weights: a quarter of the
bytes, 2.4-2.9 against 4.2-5.4 ms per query and 1.6-3.0 ms less per search request, with
relevance on Flickr8k within noise of float32 (cosine to torch 0.994).
``QUERY_INT8 = False`` gives the torch vectors exactly (cosine 1.0000) in about a third of
torch's time. docs/performance.md has the figures.

The model is exported with ``torch.onnx.export`` (mean pooling and normalisation
inside the graph) into ``MODEL_CACHE_DIR`` under a fingerprint of its weights, once
per machine, and checked against the torch model before it is used. Once the file is
there, a process encodes search words with ONNX Runtime and the ``tokenizers``
library alone: neither torch nor the torch model is loaded for them. An int8 model
that fails the check leaves search on the float32 export; anything else that goes
wrong (the extra not installed, a read-only folder, a failed export or check) leaves
search on the torch model. Each fallback is logged as a warning.

Only search queries go this way; the vectors that are stored (class prompts,
captions, alt texts) always come from the torch model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from ..conf import on_change, semantic_settings
from .cache import build_once, default_cache_dir, digest, open_or_rebuild
from .cache import cache_dir as configured_cache_dir
from .text import SentenceEncoder

logger = logging.getLogger(__name__)

#: Bumped when the exported graph changes shape or meaning.
EXPORT_VERSION = 1
#: A fresh export must agree with the torch model on these texts (cosine at least ``MIN_COSINE``).
PROBES = ("a red bicycle leaning against a wall", "two dogs play in the snow", "coffee")
MIN_COSINE = {False: 0.9999, True: 0.95}


def onnx_available() -> bool:
    """Whether ONNX Runtime and the exporter's packages are installed (the ``onnx`` extra)."""
    from importlib.util import find_spec

    return all(find_spec(name) is not None for name in ("onnx", "onnxruntime", "onnxscript"))


def fingerprint(text: SentenceEncoder, int8: bool) -> str:
    """Names the exported file: the model's weights, the export recipe, the versions
    (read from the installed packages' metadata, so torch is not imported)."""
    recipe: tuple[object, ...] = (EXPORT_VERSION, int8, text.max_length, version("torch"), version("onnxruntime"))
    if (text.spec.pooling, text.spec.dimensions) != ("mean", None):  # the default keeps its old file name
        recipe += (text.spec.pooling, text.spec.dimensions)
    return digest([text.weights_fingerprint(), *recipe])


NOISY_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    """Warnings off while exporting; the exporter's loggers at ERROR."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export_sentence_model(text: SentenceEncoder, target: Path) -> None:
    """Write ``text``'s model, with its pooling, width and L2 normalisation, as ONNX (the
    prefix is put before the words by ``text.tokenize()``, outside the graph)."""
    import torch

    from .text import pool

    pooling, dimensions = text.spec.pooling, text.spec.dimensions

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
            return torch.nn.functional.normalize(pool(hidden, attention_mask, pooling, dimensions), dim=-1)

    assert text.model is not None and text.tokenizer is not None
    model = text.model
    if next(model.parameters()).device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        raise RuntimeError("the ONNX query path exports the CPU float32 model only")
    example = text.tokenizer(text.prefixed(PROBES[:2], query=True), padding=True, return_tensors="pt")
    dims = {0: "batch", 1: "tokens"}
    # The exporter reports its progress on stdout and warns about its own internals.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), _quiet_loggers(*NOISY_LOGGERS):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(model).eval(),
            (example["input_ids"], example["attention_mask"]),
            str(target),
            input_names=["input_ids", "attention_mask"],
            output_names=["query_vector"],
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            dynamo=True,
            external_data=False,
        )


class OnnxQueryEncoder:
    """Encodes search texts like ``text.encode(texts, query=True)`` does, through ONNX Runtime."""

    def __init__(
        self, text: SentenceEncoder, *, int8: bool = False, cache_dir: Path | None = None, threads: int | None = None
    ) -> None:
        self.text = text
        self.int8 = int8
        self.threads = threads  # ONNX Runtime's intra-op threads (None: intra_op_threads())
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.dimensions: int | None = None
        self.session: Any = None
        self.path: Path | None = None
        self.exported = False  # whether this instance made the file (rather than found it)

    def prepare(self) -> Path:
        """The exported (and, with ``int8``, quantised) model file; made once per machine
        (then the torch model loads to export it and to check the export)."""
        stem = f"sentence-{fingerprint(self.text, self.int8)}"
        path = self.cache_dir / f"{stem}{'-int8' if self.int8 else ''}.onnx"

        def export(scratch: Path) -> Path:
            self.text.ensure_loaded()
            fp32 = scratch / "model.onnx"
            export_sentence_model(self.text, fp32)
            made = fp32
            if self.int8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                made = scratch / "model-int8.onnx"
                with _quiet_loggers("", "onnxruntime"):  # it suggests a pre-processing step on the root logger
                    quantize_dynamic(fp32, made, weight_type=QuantType.QInt8, per_channel=True)
            self._check(made)
            return made

        self.exported = build_once(path, export, f"{stem}.lock")
        if self.exported:
            logger.info("Exported the query text model to %s", path)
        return path

    def _session(self, path: Path) -> Any:
        return cpu_session(path, self.threads)

    def _check(self, path: Path) -> None:
        """Refuse an export whose vectors differ from the torch model's."""
        session = self._session(path)
        texts = list(PROBES)
        got = self._run(session, texts)
        expected = self.text.encode(texts, query=True)
        cosine = float(np.min(np.sum(got * expected, axis=1)))
        if not cosine >= MIN_COSINE[self.int8]:
            raise RuntimeError(f"the exported model disagrees with torch (cosine {cosine:.4f})")

    def load(self) -> None:
        """The session; a cached file that ONNX Runtime cannot open is exported again."""
        self.path = self.prepare()
        lock = f"{self.path.stem.removesuffix('-int8')}.lock"
        self.session = open_or_rebuild(self.path, self.prepare, self._session, lock, made=self.exported)

    def _run(self, session: Any, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(session.run(None, self.text.tokenize(texts, query=True))[0], dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The texts' vectors, in batches of the text model's ``batch_size`` (as the torch path
        does): one batch of thousands of texts pads them all to the longest and holds every
        layer's activations at once (4,645 captions through e5's 12 layers took 16 GB)."""
        if self.session is None:
            self.load()
        if not texts:
            return self._run(self.session, [""])[:0]
        size = max(1, self.text.batch_size)
        return np.concatenate([self._run(self.session, texts[i : i + size]) for i in range(0, len(texts), size)])

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search words (this model only encodes those): ``encode()``."""
        return self.encode(texts)


_query_encoders: dict[tuple[int, bool, str, int | None], OnnxQueryEncoder | None] = {}
_lock = threading.Lock()


def cpu_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads (None:
    ``intra_op_threads()``) whose idle threads never spin: a web process waits on the database
    between queries, and a worker's decoding threads share the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or intra_op_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def intra_op_threads() -> int:
    """torch's thread count where torch is loaded (a worker sets it), else the cores this
    process may use (what torch would pick), without importing torch for it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.get_num_threads())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def query_encoder(
    text: SentenceEncoder, *, runtime: str, int8: bool, cache_dir: str | None, threads: int | None = None
) -> Any:
    """What encodes search queries for ``text``: an ``OnnxQueryEncoder`` when ``runtime``
    allows one and it loads, else ``text`` itself. Decided once per process and setting."""
    if runtime == "torch" or not text.device.startswith("cpu"):
        return text
    key = (id(text), int8, str(cache_dir), threads)
    with _lock:
        if key not in _query_encoders:
            _query_encoders[key] = _load_query_encoder(
                text, runtime=runtime, int8=int8, cache_dir=cache_dir, threads=threads
            )
        found = _query_encoders[key]
    return found if found is not None else text


def configured_query_encoder(text: SentenceEncoder) -> Any:
    """``query_encoder`` for ``text`` as ``QUERY_RUNTIME``, ``QUERY_INT8``, ``QUERY_THREADS`` and
    ``MODEL_CACHE_DIR`` say."""
    threads = semantic_settings.QUERY_THREADS
    return query_encoder(
        text,
        runtime=semantic_settings.QUERY_RUNTIME,
        int8=bool(semantic_settings.QUERY_INT8),
        cache_dir=str(configured_cache_dir()),
        threads=None if threads is None else max(1, int(threads)),
    )


def _load_query_encoder(
    text: SentenceEncoder, *, runtime: str, int8: bool, cache_dir: str | None, threads: int | None
) -> Any:
    if not onnx_available():
        if runtime == "onnx":
            logger.warning("QUERY_RUNTIME is 'onnx' but onnxruntime is not installed; search uses torch.")
        return None
    folder = Path(cache_dir) if cache_dir else None
    if int8:
        encoder = OnnxQueryEncoder(text, int8=True, cache_dir=folder, threads=threads)
        try:
            encoder.load()
            return encoder
        except Exception as exc:  # e.g. quantisation moved the vectors too far: try float32
            logger.warning("Search queries use float32 weights; the int8 query model could not be used: %s", exc)
    encoder = OnnxQueryEncoder(text, cache_dir=folder, threads=threads)
    try:
        encoder.load()
    except Exception as exc:  # any failure leaves search working on torch
        logger.warning("Search queries stay on torch; the ONNX query model could not be used: %s", exc)
        return None
    return encoder


@on_change
def reset() -> None:
    """Forget the loaded query encoders (settings changed; tests)."""
    with _lock:
        _query_encoders.clear()
