"""The one embedding pipeline: read, decode, encode in batches, write.

Signals, Celery tasks, management commands and the example site all call
``embed_instances``. A row whose content hash and encoder identity are
unchanged is skipped; a row whose file cannot be read or decoded is marked
``failed`` with the reason, and the rest of its batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import models, router, transaction
from django.utils import timezone

from .conf import semantic_settings
from .encoders.base import Encoder
from .fields import EmbeddingStatus, ImageEmbeddingField, get_embedding_field
from .fusion import fuse
from .imaging import ImageDecodeError, decode_image

logger = logging.getLogger(__name__)


class TransientError(Exception):
    """A fault that may pass (storage or database briefly gone): retry later."""


#: ``embedding_error`` of a row whose retries ran out on a fault that may pass;
#: the sweep queues such rows again (a permanently bad image is never retried).
TRANSIENT_PREFIX = "Temporary failure, will be retried: "


def decode_threads() -> int:
    """Threads that read and decode images while the model encodes the previous batch."""
    configured = semantic_settings.DECODE_THREADS
    if configured:
        return int(configured)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(2, min(8, cores))


@dataclass
class EmbedReport:
    embedded: list[Any] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    failed: dict[Any, str] = field(default_factory=dict)

    def merge(self, other: EmbedReport) -> None:
        self.embedded += other.embedded
        self.skipped += other.skipped
        self.failed.update(other.failed)

    def __str__(self) -> str:
        return f"{len(self.embedded)} embedded, {len(self.skipped)} unchanged, {len(self.failed)} failed"


@dataclass
class _Item:
    instance: models.Model
    file_name: str
    digest: str = ""
    pixels: np.ndarray | None = None
    error: str = ""


def content_hash(data: bytes, texts: Sequence[str]) -> str:
    """SHA-256 of the image bytes and the text fields: what the vectors depend on."""
    h = hashlib.sha256(data)
    for text in texts:
        h.update(b"\0")
        h.update(text.encode("utf-8"))
    return h.hexdigest()


def _read(instance: models.Model, field: ImageEmbeddingField) -> bytes:
    file = getattr(instance, field.image_field)
    if not file:
        raise ImageDecodeError("The row has no image file.")
    try:
        file.open("rb")
        try:
            return file.read()
        finally:
            file.close()
    except FileNotFoundError:
        raise ImageDecodeError(f"The image file {file.name!r} does not exist in storage.") from None
    except PermissionError as exc:
        raise ImageDecodeError(f"The image file cannot be read: {exc}") from None
    except OSError as exc:  # storage briefly unavailable: worth a retry
        raise TransientError(f"Storage error reading {file.name!r}: {exc}") from exc


def _prepare(item: _Item, field: ImageEmbeddingField, encoder: Encoder, force: bool) -> _Item | None:
    """Read, hash and decode one row (runs in a thread pool). None means: unchanged."""
    instance = item.instance
    try:
        data = _read(instance, field)
        item.digest = content_hash(data, field.texts(instance))
        if (
            not force
            and getattr(instance, field.column("status")) == EmbeddingStatus.EMBEDDED
            and getattr(instance, field.column("hash")) == item.digest
            and getattr(instance, field.column("encoder")) == encoder.identity
        ):
            return None
        image = decode_image(
            data,
            min_side=getattr(encoder, "input_side", 256),
            max_side=semantic_settings.MAX_IMAGE_SIDE,
            max_pixels=semantic_settings.MAX_IMAGE_PIXELS,
        )
        item.pixels = encoder.preprocess(image)
    except ImageDecodeError as exc:
        item.error = str(exc)
    return item


def embed_instances(
    instances: Iterable[models.Model],
    *,
    field: str | None = None,
    force: bool = False,
    batch_size: int | None = None,
    encoder: Encoder | None = None,
    progress: Callable[[int], Any] | None = None,
) -> EmbedReport:
    """Embed ``instances`` (a queryset or list of one model's rows) and save the results.

    Batch *n + 1* is read and decoded in a thread pool while batch *n* is encoded,
    so decoding overlaps inference. ``progress(k)`` is called after each batch of ``k`` rows.
    Raises ``TransientError`` (or a database error) for faults worth retrying; rows
    written before the fault keep their vectors.
    """
    report = EmbedReport()
    batch_size = batch_size or semantic_settings.BATCH_SIZE
    rows = list(instances)
    if not rows:
        return report
    model = type(rows[0])
    field_obj = get_embedding_field(model, field)
    encoder = encoder or field_obj.get_encoder()
    database = router.db_for_write(model)
    chunks = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    pool = ThreadPoolExecutor(max_workers=decode_threads(), thread_name_prefix="semantic-images-decode")

    def submit(chunk: list[models.Model]) -> tuple[list[_Item], list[Future]]:
        items = [_Item(r, getattr(getattr(r, field_obj.image_field), "name", "") or "") for r in chunk]
        return items, [pool.submit(_prepare, it, field_obj, encoder, force) for it in items]

    try:
        upcoming = submit(chunks[0])
        for index in range(len(chunks)):
            items, futures = upcoming
            if index + 1 < len(chunks):
                upcoming = submit(chunks[index + 1])  # decode the next batch while this one encodes
            prepared = [f.result() for f in futures]
            with transaction.atomic(using=database):  # one commit per batch, not one per row
                report.merge(_encode_and_write(model, field_obj, encoder, items, prepared))
            if progress is not None:
                progress(len(items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def _encode_and_write(
    model: type[models.Model],
    field: ImageEmbeddingField,
    encoder: Encoder,
    items: list[_Item],
    prepared: list[_Item | None],
) -> EmbedReport:
    report = EmbedReport()
    now = timezone.now()
    good = [it for it in prepared if it is not None and not it.error]
    for item, prep in zip(items, prepared, strict=True):
        if prep is None:
            report.skipped.append(item.instance.pk)
    if good:
        vectors = encoder.encode_pixels(np.stack([it.pixels for it in good]))
        texts = [" . ".join(field.texts(it.instance)) for it in good]
        with_text = [i for i, t in enumerate(texts) if t]
        semantic = vectors.semantic
        if with_text:
            text_vectors = encoder.encode_texts([texts[i] for i in with_text])
            semantic = semantic.copy()
            semantic[with_text] = fuse(
                semantic[with_text],
                text_vectors,
                semantic_settings.TEXT_WEIGHT,
                common=getattr(encoder, "common_text_direction", None),
            )
        for i, item in enumerate(good):
            updated = _write(
                model,
                field,
                item,
                {
                    field.visual_field: vectors.visual[i],
                    field.semantic_field: semantic[i],
                    field.column("encoder"): encoder.identity,
                    field.column("hash"): item.digest,
                    field.column("status"): EmbeddingStatus.EMBEDDED,
                    field.column("error"): "",
                    field.column("updated_at"): now,
                    field.column("labels"): [
                        {"label": name, "probability": round(p, 4)}
                        for name, p in (vectors.labels[i] if vectors.labels else [])
                    ],
                },
            )
            if updated:
                report.embedded.append(item.instance.pk)
    for item in prepared:
        if item is not None and item.error:
            logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, item.instance.pk, item.error)
            _write(
                model,
                field,
                item,
                {
                    field.visual_field: None,
                    field.semantic_field: None,
                    field.column("encoder"): encoder.identity,
                    field.column("hash"): item.digest,
                    field.column("status"): EmbeddingStatus.FAILED,
                    field.column("error"): item.error,
                    field.column("updated_at"): now,
                    field.column("labels"): [],
                },
            )
            report.failed[item.instance.pk] = item.error
    return report


def _write(model: type[models.Model], field: ImageEmbeddingField, item: _Item, values: dict[str, Any]) -> bool:
    """Store ``values`` unless the row's image changed meanwhile (a newer task will embed it)."""
    updated = model._default_manager.filter(pk=item.instance.pk, **{field.image_field: item.file_name}).update(**values)
    for name, value in values.items():
        setattr(item.instance, name, value)
    return bool(updated)


def embed_pks(model: type[models.Model], pks: Sequence[Any], **kwargs: Any) -> EmbedReport:
    """Embed the rows of ``model`` with these primary keys (missing rows are ignored).

    The old vectors are not loaded: the pipeline needs only the image, texts and state.
    """
    field_obj = get_embedding_field(model, kwargs.get("field"))
    rows = (
        model._default_manager.filter(pk__in=list(pks))
        .defer(field_obj.visual_field, field_obj.semantic_field)
        .order_by("pk")
    )
    return embed_instances(rows, **kwargs)
