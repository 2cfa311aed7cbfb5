"""The default encoder: EfficientNet-Lite0 + all-MiniLM-L6-v2, bridged by ConSE.

ConSE (Norouzi et al., ICLR 2014) puts an image into the text space as the
probability-weighted mean of the text embeddings of its top-T ImageNet classes.
A learned bridge (a linear map from CNN features to the text space, trained on
a site's own captions) can be blended in; see ``bridges.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .base import Encoder, ImageEmbeddings, l2_normalize
from .bridges import BridgeStore, LearnedBridge, default_bridge_dir
from .labels import imagenet_classes
from .text import shared_sentence_encoder

CROP = 224
RESIZE = 256


class ConSEEncoder(Encoder):
    """CNN visual vectors (1280-d) and ConSE semantic vectors in MiniLM's space (384-d).

    Options (``SEMANTIC_IMAGES["ENCODER_OPTIONS"]``):
      ``top_k``: classes mixed per image (T); ``prompt``: template for a class name;
      ``text_model``: a local folder or hub name for the BERT model;
      ``bridge``: ``"auto"`` (default) uses the bridge installed in ``BRIDGE_DIR`` by
      ``semantic_images_train_bridge`` and follows later installs; a path names one
      bridge file (``.npz``); None uses ConSE alone.
    """

    name = "conse-lite0-minilm"
    visual_dimensions = 1280
    semantic_dimensions = 384
    version = 1

    def __init__(
        self,
        device: str = "auto",
        top_k: int = 10,
        prompt: str = "a photo of a {name}.",
        text_model: str | None = None,
        bridge: str | None = "auto",
    ) -> None:
        super().__init__(device)
        self.top_k = top_k
        self.prompt = prompt
        self.text_model = text_model
        self.bridge_path = bridge
        self.bridge: LearnedBridge | None = None
        self._store: BridgeStore | None = None
        self._store_stamp: int | None = None
        if bridge == "auto":
            directory = default_bridge_dir()
            self._store = BridgeStore(directory) if directory else None
            self.refresh_bridge()
        elif bridge:
            self.bridge = LearnedBridge.load(bridge)
        self.cnn = None
        self.text = None
        self.label_vectors: np.ndarray | None = None

    def refresh_bridge(self) -> None:
        """Follow the store's pointer: pick up a newly installed (or removed) bridge."""
        if self._store is None:
            return
        stamp = self._store.stamp()
        if stamp != self._store_stamp:
            self.bridge = self._store.current()
            self._store_stamp = stamp

    @property
    def identity(self) -> str:
        self.refresh_bridge()
        recipe = f"{self.version}|{self.top_k}|{self.prompt}|{self.text_model or 'minilm-l6-v2'}"
        ident = f"{self.name}:{hashlib.sha1(recipe.encode()).hexdigest()[:8]}"
        if self.bridge is not None:
            ident += f"+bridge:{self.bridge.version}"
        return ident

    def label_texts(self) -> list[str]:
        return [self.prompt.format(name=c.name, lemmas=", ".join(c.lemmas), gloss=c.gloss) for c in imagenet_classes()]

    def load(self) -> None:
        import torch

        from .efficientnet_lite import load_lite0

        cnn = load_lite0().to(self.device)
        if self.device.startswith("cuda"):
            cnn = cnn.half().to(memory_format=torch.channels_last)
        self.cnn = cnn
        self.text = shared_sentence_encoder(self.text_model, self.device)
        self.label_vectors = self.text.encode(self.label_texts())

    def preprocess(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        w, h = image.size
        scale = RESIZE / min(w, h)
        image = image.resize((max(CROP, round(w * scale)), max(CROP, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - CROP) // 2, (h - CROP) // 2
        image = image.crop((left, top, left + CROP, top + CROP))
        arr = np.asarray(image, dtype=np.float32)
        return ((arr - 127.0) / 128.0).transpose(2, 0, 1)

    def encode_pixels(self, pixels: np.ndarray) -> ImageEmbeddings:
        import torch

        self.ensure_loaded()
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        if self.device.startswith("cuda"):
            x = x.half().contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            feats = self.cnn.features(x)
            probs = self.cnn._fc(feats).float().softmax(-1)
        feats_np = feats.float().cpu().numpy()
        probs_np = probs.cpu().numpy()
        visual = l2_normalize(feats_np)
        semantic = self.conse(probs_np)
        self.refresh_bridge()
        bridge = self.bridge
        if bridge is not None:
            semantic = bridge.apply(visual, semantic)
        return ImageEmbeddings(
            visual=visual,
            semantic=semantic,
            labels=self.top_labels(probs_np),
        )

    def conse(self, probs: np.ndarray) -> np.ndarray:
        """Convex combination of the top-T class embeddings, weighted by probability."""
        assert self.label_vectors is not None
        k = min(self.top_k, probs.shape[1])
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(probs, top, axis=1)
        mixed = np.einsum("nk,nkd->nd", weights, self.label_vectors[top])
        return l2_normalize(mixed)

    @staticmethod
    def top_labels(probs: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        classes = imagenet_classes()
        order = np.argsort(-probs, axis=1)[:, :k]
        return [[(classes[j].name, float(p[j])) for j in row] for p, row in zip(probs, order, strict=True)]

    def features_and_probs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw pooled features and class probabilities (used to train bridges)."""
        import torch

        self.ensure_loaded()
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        with torch.inference_mode():
            feats = self.cnn.features(x)
            probs = self.cnn._fc(feats).float().softmax(-1)
        return feats.float().cpu().numpy(), probs.cpu().numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.ensure_loaded()
        return self.text.encode(list(texts))
