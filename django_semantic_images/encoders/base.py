"""The encoder interface: what the pipeline and the queries need from a model."""

from __future__ import annotations

import abc
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class ImageEmbeddings:
    """Vectors for a batch of images, one row per image, each row L2-normalised."""

    visual: np.ndarray
    semantic: np.ndarray
    # Per image, the model's confident labels as (label, probability), best first.
    labels: list[list[tuple[str, float]]] = field(default_factory=list)
    # Per image, the length of the visual vector before it was normalised (stored as
    # ``<field>_visual_norm``), when the encoder can rebuild the semantic vector from the two
    # (``Encoder.encode_stored``); None otherwise.
    norms: np.ndarray | None = None


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def normalize_parts(x: np.ndarray, parts: Sequence[int] | None) -> np.ndarray:
    """Rows cut into consecutive pieces of these widths, each piece scaled to unit length, the
    whole then to unit length (each piece ``1 / sqrt(len(parts))`` long). ``parts`` None: the
    plain ``l2_normalize``. A query that is zero outside one piece then ranks such rows exactly as
    that piece alone would (``RoutedConSEEncoder``)."""
    x = np.atleast_2d(x)
    if not parts:
        return l2_normalize(x)
    if sum(parts) != x.shape[-1]:
        raise ValueError(f"Parts {tuple(parts)} do not add up to the width {x.shape[-1]}.")
    bounds = np.cumsum([0, *parts])
    pieces = [l2_normalize(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return (np.concatenate(pieces, axis=1) / np.sqrt(len(parts))).astype(np.float32)


#: What an encoder that cannot load raises (weights or a text model missing, a wheel not installed, a file
#: cut short): the admin, the API and Wagtail's views then say so (and log it) instead of a 500.
ENCODER_UNAVAILABLE = (OSError, ImportError, RuntimeError)
#: Device files of a GPU that torch could use (NVIDIA, ROCm, WSL's GPU paravirtualisation).
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` becomes ``"cuda"`` when torch sees a GPU, else ``"cpu"``.

    On Linux without any GPU device file torch cannot see one either: the answer is
    ``"cpu"`` without importing torch (1-2 s and 200 MB that a word search never needs).
    """
    if device != "auto":
        return device
    if sys.platform.startswith("linux") and "torch" not in sys.modules:
        if not any(os.path.exists(path) for path in GPU_DEVICE_FILES):
            return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder(abc.ABC):
    """Turns images into a visual and a semantic vector, and text into the semantic space.

    Two images compare by their visual vectors; text compares with images by the
    semantic vectors. Construction is cheap: weights load on first use, once per
    process, guarded by a lock so that threads share one copy. An encoder may load
    in parts (``ensure_part``): what a word search needs first, the image model on the
    first image; ``ensure_loaded()`` loads everything (a worker does, at start).
    """

    #: Short, stable name stored with every vector (the identity adds versions).
    name: str = "encoder"
    visual_dimensions: int
    semantic_dimensions: int
    #: Widths of the pieces of a semantic vector that are normalised apart (``normalize_parts``),
    #: e.g. two text spaces side by side; None: one space.
    semantic_parts: tuple[int, ...] | None = None
    #: How much of the common text direction the alt-text fusion removes, one per part (or one
    #: in all); None: ``fusion.COMMON_SCALE``.
    common_scales: tuple[float, ...] | None = None

    #: Query texts whose vectors are kept (paging through results re-asks the same words).
    query_cache_size = 1024

    def __init__(self, device: str = "auto") -> None:
        self.device_setting = device
        self._device: str | None = None
        self._lock = threading.RLock()
        self.loaded_parts: set[str] = set()
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def device(self) -> str:
        """Where the weights run (``DEVICE`` resolved on first use)."""
        if self._device is None:
            self._device = resolve_device(self.device_setting)
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        self._device = value

    @property
    def identity(self) -> str:
        """What produced a vector; vectors from another identity are stale."""
        return self.name

    @property
    def image_identity(self) -> str | None:
        """What made the visual vector and its norm (the image model, its weights and its
        preprocessing), as the part of ``identity`` before the first ``:``; None when this
        encoder cannot rebuild its semantic vectors from stored ones (``encode_stored``).

        A row whose stored identity has this image part, and a stored norm, gets new semantic
        vectors after a text-side change (text model, class prompts, bridge) without its image
        being read (``pipeline.embed_instances``). An encoder must change this part whenever
        its visual vectors would change.
        """
        return None

    @staticmethod
    def image_part(identity: str) -> str:
        """The image part of a stored identity (see ``image_identity``)."""
        return identity.split(":", 1)[0]

    def encode_stored(self, visual: np.ndarray, norms: np.ndarray) -> np.ndarray:
        """Semantic vectors (before the words are fused) from stored visual vectors and their
        norms, without the image model; only for an encoder with an ``image_identity``."""
        raise NotImplementedError(f"{type(self).__name__} cannot rebuild semantic vectors from stored ones.")

    def ensure_part(self, part: str, loader: Callable[[], None]) -> None:
        """Run ``loader`` once per process for ``part`` (thread-safe; parts may nest)."""
        if part in self.loaded_parts:
            return
        with self._lock:
            if part not in self.loaded_parts:
                loader()
                self.loaded_parts.add(part)

    def ensure_loaded(self) -> None:
        """Load all the weights once (thread-safe)."""
        self.ensure_part("all", self.load)

    @abc.abstractmethod
    def load(self) -> None:
        """Load the weights (called once, by ``ensure_loaded``)."""

    def reads(self, text: str) -> bool:
        """Whether the text model can read ``text`` (its letters' script; ``ConSEEncoder``
        asks its text model). A search whose words it cannot read falls back to keyword
        matching (``query.text_search``). The default reads everything."""
        return True

    def reads_parts(self, text: str) -> tuple[bool, ...]:
        """Whether each part of the semantic space (``semantic_parts``; one without) reads ``text``:
        an editor's words are fused only into the parts that read them (``fusion.fuse_texts``).
        The default: ``reads`` for every part."""
        return (self.reads(text),) * len(self.semantic_parts or (0,))

    def missing_requirements(self) -> list[str]:
        """What this encoder needs and the site lacks (packages, a matching bridge), one line
        each (a system check reports them at start). The default needs nothing more."""
        return []

    def prepare(self) -> list[str]:
        """Build what this encoder derives once from its weights and keeps in
        ``MODEL_CACHE_DIR`` (``manage.py semantic_images_prepare``); returns what it made
        or found, one line each. The default has nothing to prepare."""
        return []

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image to the model's input array (CPU work, thread-safe)."""

    @abc.abstractmethod
    def encode_pixels(self, pixels: np.ndarray) -> ImageEmbeddings:
        """A stacked batch of ``preprocess`` outputs to vectors."""

    @abc.abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts to semantic vectors, shape ``(len(texts), semantic_dimensions)``."""

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search texts to semantic vectors; an encoder may give queries a faster path
        (the ConSE encoder's ONNX Runtime one) whose vectors rank like ``encode_texts``'s
        (measured, e.g. ``benchmarks/query_runtime.py``): stored vectors stay comparable."""
        return self.encode_texts(texts)

    def encode_images(self, images: Sequence[Image.Image]) -> ImageEmbeddings:
        """Decoded RGB images to vectors (preprocess + encode in one call)."""
        if not images:
            return ImageEmbeddings(
                np.zeros((0, self.visual_dimensions), np.float32),
                np.zeros((0, self.semantic_dimensions), np.float32),
            )
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))

    def encode_visual(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images to visual vectors only, what a search by photo ranks by; an encoder
        may skip the semantic side here (ConSE: its mixture and learned bridge)."""
        return self.encode_images(images).visual

    def clear_query_cache(self) -> None:
        """Forget cached query vectors."""
        with self._cache_lock:
            self._query_cache.clear()

    def cached_text_vector(self, text: str) -> np.ndarray | None:
        """``encode_text(text)`` when it is cached (nothing is encoded), else None."""
        with self._cache_lock:
            cached = self._query_cache.get(text)
            if cached is not None:
                self._query_cache.move_to_end(text)
            return cached

    def encode_text(self, text: str) -> np.ndarray:
        """One query text to one semantic vector (recent queries are cached)."""
        cached = self.cached_text_vector(text)
        if cached is not None:
            return cached
        vector = self.encode_queries([text])[0]
        vector.setflags(write=False)
        with self._cache_lock:
            self._query_cache[text] = vector
            while len(self._query_cache) > self.query_cache_size:
                self._query_cache.popitem(last=False)
        return vector
