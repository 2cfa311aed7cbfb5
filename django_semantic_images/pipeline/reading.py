"""Reading and decoding: a row's file read (within ``MAX_FILE_BYTES``), hashed and decoded in the
decode threads (Pillow, or the device for JPEGs), or its stored visual vector for a text-side change."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.exceptions import SuspiciousFileOperation
from django.db import models

from ..conf import semantic_settings
from ..device_jpeg import Decoder, JpegHeader, decode_on_device, default_decoder, device_header
from ..encoders.base import Encoder
from ..fields import EmbeddingStatus, ImageEmbeddingField
from ..imaging import ImageDecodeError, decode_image
from .failures import StorageGone, TransientError
from .rows import primary_rows

logger = logging.getLogger(__name__)


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
class _Item:
    """One row on its way through the pipeline. Its file and texts are read in the calling
    thread (they may come through relations: the database is not used from the decode threads)."""

    instance: models.Model
    file: Any
    texts: list[str]
    digest: str = ""
    pixels: np.ndarray | None = None
    error: str = ""
    transient: bool = False  # ``error`` may pass (storage): the row is tried again, a bounded number of times
    gone: bool = False  # ``error`` says the storage itself is not there (``StorageGone``), not this file
    data: bytes = b""  # a JPEG left for the device to decode (``header`` set)
    header: JpegHeader | None = None
    stored_visual: np.ndarray | None = None  # set: only the text side is computed again
    stored_norm: float = 0.0


def text_only_candidates(
    rows: Sequence[models.Model], field: ImageEmbeddingField, encoder: Encoder, force: bool
) -> list[Any]:
    """The rows whose semantic vector can be rebuilt from their stored visual vector and norm,
    without their image: made by an encoder with the same image part as ``encoder``'s but
    another identity (a text-side change), with a norm stored and no input changed since (a
    change clears the norm), and not ``force``d."""
    image = encoder.image_identity
    if force or image is None:
        return []
    identity = encoder.identity
    norm, stored, status = field.column("visual_norm"), field.column("encoder"), field.column("status")
    deferred = rows[0].get_deferred_fields() if rows else set()
    if {norm, stored, status} & deferred:
        return []
    return [
        row.pk
        for row in rows
        if getattr(row, norm) is not None
        and getattr(row, status) in (EmbeddingStatus.EMBEDDED, EmbeddingStatus.PENDING)
        and getattr(row, stored)
        and getattr(row, stored) != identity
        and encoder.image_part(getattr(row, stored)) == image
    ]


def stored_visuals(model: type[models.Model], field: ImageEmbeddingField, pks: Sequence[Any]) -> dict[Any, np.ndarray]:
    """The stored visual vectors of these rows (float32; halfvec ones widened), where present."""
    found = primary_rows(model).filter(pk__in=list(pks)).values_list("pk", field.visual_field)
    vectors = {}
    for pk, value in found:
        if value is not None:
            value = value.to_numpy() if hasattr(value, "to_numpy") else value
            vectors[pk] = np.asarray(value, dtype=np.float32)
    return vectors


def content_hash(data: bytes, texts: Sequence[str]) -> str:
    """SHA-256 of the image bytes and the text fields: what the vectors depend on."""
    h = hashlib.sha256(data)
    for text in texts:
        h.update(b"\0")
        h.update(text.encode("utf-8"))
    return h.hexdigest()


def _read(file: Any) -> bytes:
    """The stored file's bytes; over ``MAX_FILE_BYTES`` an ``ImageDecodeError``, the file not read
    whole (its size asked of the storage first, and never more than the limit read)."""
    if not file:
        raise ImageDecodeError("The row has no image file.")
    limit = int(semantic_settings.MAX_FILE_BYTES)
    try:
        size = _stored_size(file)
        if size is not None and size > limit:
            raise _too_large(file, size, limit)
        file.open("rb")
        try:
            data = file.read(limit + 1)
        finally:
            file.close()
        if len(data) > limit:  # a storage that gave no size, or a file grown since
            raise _too_large(file, None, limit)
        return data
    except FileNotFoundError:
        if storage_folder_missing(file):  # a mount or volume not there: every file of it is "missing"
            raise StorageGone(f"The storage's folder is not there (reading {file.name!r}).") from None
        raise ImageDecodeError(f"The image file {file.name!r} does not exist in storage.") from None
    except SuspiciousFileOperation:  # e.g. "../x.jpg": storage refuses the name itself
        raise ImageDecodeError(f"The image file name {file.name!r} is not allowed by the storage.") from None
    except PermissionError as exc:
        logger.warning("Reading %r: %s", file.name, exc)  # the server's path goes to the log only
        raise ImageDecodeError(f"The image file {file.name!r} cannot be read: permission denied.") from None
    except OSError as exc:  # storage briefly unavailable: worth a retry
        logger.warning("Reading %r: %s", file.name, exc)
        raise TransientError(f"Storage error reading {file.name!r}: {os_reason(exc)}") from exc


def storage_folder_missing(file: Any) -> bool:
    """Whether ``file``'s storage keeps its files in a folder (``FileSystemStorage.location``) that
    is not there: a network mount or a volume missing, not one missing file."""
    location = getattr(getattr(file, "storage", None), "location", None)
    return isinstance(location, (str, os.PathLike)) and not os.path.isdir(location)


def _stored_size(file: Any) -> int | None:
    """The file's size as its storage tells it, or None for a storage that cannot say."""
    try:
        return int(file.size)
    except NotImplementedError:
        return None


def _too_large(file: Any, size: int | None, limit: int) -> ImageDecodeError:
    """The reason for a stored file over ``MAX_FILE_BYTES``."""
    how_big = f"{size:,} bytes" if size is not None else "larger than that"
    return ImageDecodeError(
        f"The image file {file.name!r} is {how_big}; the limit is {limit:,} bytes (MAX_FILE_BYTES)."
    )


def os_reason(exc: OSError) -> str:
    """An ``OSError``'s reason without the server's path (``strerror``: "Is a directory")."""
    return exc.strerror or type(exc).__name__


def jpeg_decoder(encoder: Encoder) -> Decoder | None:
    """The device decoder for ``encoder``'s JPEGs as ``JPEG_DECODER`` says; None: Pillow decodes."""
    choice = semantic_settings.JPEG_DECODER
    if choice not in ("auto", "device", "pillow"):
        raise ValueError(f"JPEG_DECODER must be 'auto', 'device' or 'pillow', not {choice!r}")
    if choice == "pillow" or not hasattr(encoder, "preprocess_tensor"):
        return None
    if choice == "auto" and not encoder.device.startswith("cuda"):
        return None
    return default_decoder(encoder.device)


def _prepare(
    item: _Item, field: ImageEmbeddingField, encoder: Encoder, force: bool, on_device: bool = False
) -> _Item | None:
    """Read, hash and decode one row (runs in a thread pool). None means: unchanged.
    With ``on_device``, a JPEG the device can decode is only checked here (its header)."""
    instance = item.instance
    try:
        data = _read(item.file)
        item.digest = content_hash(data, item.texts)
        if (
            not force
            and getattr(instance, field.column("status")) == EmbeddingStatus.EMBEDDED
            and getattr(instance, field.column("hash")) == item.digest
            and getattr(instance, field.column("encoder")) == encoder.identity
        ):
            return None
        if on_device:
            header = device_header(data, max_pixels=semantic_settings.MAX_IMAGE_PIXELS)
            if header is not None:
                item.data, item.header = data, header
                return item
        item.pixels = _decode(data, encoder)
    except ImageDecodeError as exc:
        item.error = str(exc)
    except StorageGone as exc:
        item.error, item.transient, item.gone = str(exc), True, True
    except TransientError as exc:
        item.error, item.transient = str(exc), True
    except Exception as exc:  # noqa: BLE001 - e.g. a storage backend's own error: this row's failure, not the batch's
        item.error, item.transient = f"{type(exc).__name__}: {exc}", True
    return item


def storage_looks_gone(prepared: Sequence[_Item | None]) -> _Item | None:
    """The item of a read batch that says the storage itself is gone, not one of its files: its
    folder is not there, or every file of a batch of several failed to read for a reason that may
    pass. A file read fine (also one found unchanged: None) says the storage is there, and a batch of
    one file says nothing of it: such a row fails alone, counted, as one among others. None: no such item."""
    work = [it for it in prepared if it is not None]
    gone = [it for it in work if it.gone]
    if gone:
        return gone[0]
    if len(work) > 1 and len(work) == len(prepared) and all(it.transient for it in work):
        return work[0]
    return None


def _decode(data: bytes, encoder: Encoder) -> np.ndarray:
    """Pillow's decoding and the encoder's preprocessing of one file."""
    image = decode_image(
        data,
        min_side=getattr(encoder, "input_side", 256),
        max_side=semantic_settings.MAX_IMAGE_SIDE,
        max_pixels=semantic_settings.MAX_IMAGE_PIXELS,
    )
    return encoder.preprocess(image)


def _batch_pixels(encoder: Encoder, good: list[_Item], decoder: Decoder | None) -> tuple[Any, list[_Item]]:
    """The batch's model input, and the items in it. JPEGs left for the device are decoded
    there now; one the device decoder rejects goes through Pillow (and fails there with a
    reason, if it is bad)."""
    on_device = [it for it in good if it.header is not None]
    if not on_device or decoder is None:
        return np.stack([it.pixels for it in good if it.pixels is not None]), good
    import torch

    tensors = decode_on_device(
        [it.data for it in on_device],
        [it.header for it in on_device if it.header is not None],
        decoder=decoder,
        device=encoder.device,
        preprocess=encoder.preprocess_tensor,  # type: ignore[attr-defined]
    )
    by_item = {id(it): t for it, t in zip(on_device, tensors, strict=True)}
    batch, kept = [], []
    for item in good:
        tensor = by_item.get(id(item))
        if item.header is not None and tensor is None:
            try:
                item.pixels = _decode(item.data, encoder)
            except ImageDecodeError as exc:
                item.error = str(exc)
                continue
        if tensor is None:
            tensor = torch.from_numpy(item.pixels).to(encoder.device)
        batch.append(tensor)
        kept.append(item)
    return torch.stack(batch) if batch else None, kept
