"""The one embedding pipeline: read, decode, encode in batches, write.

Signals, Celery tasks, management commands and the example site all call
``embed_instances``. A row whose content hash and encoder identity are
unchanged is skipped; a row whose file cannot be read or decoded is marked
``failed`` with the reason, and the rest of its batch goes on. A row whose own
file fails with another error (a storage fault) is marked ``failed`` with
``TRANSIENT_PREFIX`` and a try count: the sweep tries it again, ``TRANSIENT_ATTEMPTS``
times in all. So is a row that fails alone with an unexpected error (a database error on its
write, the encoder's own error), once its batch, rolled back, is done again row by row.
A row from an encoder that differs only on the text side (same image part of
the identity, a stored norm) gets its semantic vector rebuilt from its stored
visual vector and norm, without its image being read (``text_only_candidates``).

Workers first *claim* their rows (``claim_rows``): a claim names the task and
holds for ``LEASE`` seconds, renewed after every batch, and a claimed row is
written only by its holder. The sweep takes back rows whose lease ran out, counting a
try on each. A run without a claim (in-process, the commands) counts its tries itself,
before the work (``count_tries``), so a row that kills the process is given up too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.exceptions import FieldDoesNotExist, SuspiciousFileOperation
from django.db import DatabaseError, InterfaceError, OperationalError, models, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from .conf import semantic_settings
from .device_jpeg import Decoder, JpegHeader, decode_on_device, default_decoder, device_header
from .encoders.base import Encoder, ImageEmbeddings
from .fields import EmbeddingStatus, ImageEmbeddingField, get_embedding_field
from .fusion import COMMON_SCALE, fuse
from .imaging import ImageDecodeError, decode_image

logger = logging.getLogger(__name__)


#: Times a batch is mixed again when a learned bridge is installed meanwhile, before trying later.
MIX_ATTEMPTS = 3


class TransientError(Exception):
    """A fault that may pass (storage or database briefly gone): retry later."""


#: ``embedding_error`` of a row whose retries ran out on a fault that may pass;
#: the sweep queues such rows again (a permanently bad image is never retried).
TRANSIENT_PREFIX = "Temporary failure, will be retried: "
#: ``embedding_error`` of a row failed for good after ``TRANSIENT_ATTEMPTS`` such faults; the
#: fault's own words follow.
GAVE_UP_PREFIX = "Gave up after "


def public_reason(error: str) -> str:
    """A failed row's ``error`` as the site's visitors may read it (the public APIs): the reason
    about the file, or for a temporary fault only that (its own words, about the site's storage
    or database, may name servers: they stay with the staff), also once the tries ran out."""
    if error.startswith(TRANSIENT_PREFIX):
        return "a temporary error; it will be tried again."
    if error.startswith(GAVE_UP_PREFIX):
        return "temporary errors, too many times; it is not tried again until it is re-embedded."
    return error or "no reason was recorded"


#: A row whose own file fails with a fault that may pass is tried this many times, then failed for good.
TRANSIENT_ATTEMPTS = 5

#: Seconds before the sweep sends again a row after its n-th passing fault: ``TRANSIENT_BACKOFF``
#: times 4 ** (n - 1), at most ``TRANSIENT_BACKOFF_MAX``, less up to a half at random (rows that failed
#: together come back spread out): about 1, 4, 16 and 60 minutes, so the tries span over an hour.
TRANSIENT_BACKOFF = 60.0
TRANSIENT_BACKOFF_MAX = 3600.0

#: The try count in a transient error: ``TRANSIENT_PREFIX`` "(attempt 2 of 5) " reason.
ATTEMPT = re.compile(r"\(attempt (\d+) of \d+\) ")

#: The reason counted (``transient_error``) on a row the sweep takes back from a task whose lease ran
#: out while it held the row: its worker died or hung with it. A row that kills or hangs every worker
#: that takes it (a "poison" row) is failed for good after ``TRANSIENT_ATTEMPTS`` such tries.
WORKER_LOST = "the worker embedding it stopped before it finished (killed, out of memory, crashed or hung)"

#: A task embeds up to this many batches: its own rows, then other waiting rows.
TOP_UP_BATCHES = 2

#: Faults worth retrying: they may pass without anyone changing the row.
TRANSIENT_ERRORS = (TransientError, OperationalError, InterfaceError)


def claim_token(task_id: str | None) -> str:
    """Names the claiming task: host, process and task id."""
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or 'local'}"[:255]


def primary_rows(model: type[models.Model]) -> models.QuerySet[Any]:
    """``model``'s rows on the database they are written to, every row: through its base
    manager, as Django reaches related rows (a default manager that hides some rows, say the
    unpublished ones, must not leave them without vectors).

    The pipeline and the sweep read what they are about to write there: under a router that
    sends reads to a replica, a lagging replica would hide the rows just saved or just claimed.
    """
    return model._base_manager.using(router.db_for_write(model))


def primary_manager(model: type[models.Model]) -> models.QuerySet[Any]:
    """``model``'s default manager on the database its rows are written to: for the hooks a
    model's manager provides (``add_missing_rows``)."""
    return model._default_manager.using(router.db_for_write(model))


def tries_counted(error: str) -> int:
    """How many tries a row's ``error`` counts (``TRANSIENT_PREFIX`` "(attempt n of 5)"), else 0."""
    if not error.startswith(TRANSIENT_PREFIX):
        return 0
    found = ATTEMPT.match(error, len(TRANSIENT_PREFIX))
    return int(found.group(1)) if found else 1


def transient_error(previous: str, reason: str) -> str:
    """The error to store for a fault that may pass, counting the tries in ``previous``: it starts
    with ``TRANSIENT_PREFIX`` (the sweep tries again) until ``TRANSIENT_ATTEMPTS`` ran out."""
    tries = tries_counted(previous) + 1
    if tries >= TRANSIENT_ATTEMPTS:
        return f"{GAVE_UP_PREFIX}{tries} attempts: {reason}"
    return f"{TRANSIENT_PREFIX}(attempt {tries} of {TRANSIENT_ATTEMPTS}) {reason}"


#: The longest reason kept from an unexpected error (a database's DETAIL may quote a whole row).
REASON_CHARS = 500


def error_reason(exc: BaseException) -> str:
    """An unexpected error as a failed row's reason: its type and its message's first line, cut
    at ``REASON_CHARS``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:REASON_CHARS]


def transient_retry_at(error: str) -> Any:
    """Until when the sweep leaves a row that failed with ``error`` (stored in its ``lease_until``):
    its backoff after that many passing faults (``TRANSIENT_BACKOFF``); None for any other error."""
    found = ATTEMPT.match(error, len(TRANSIENT_PREFIX)) if error.startswith(TRANSIENT_PREFIX) else None
    if found is None:
        return None
    wait = min(TRANSIENT_BACKOFF * 4 ** (int(found.group(1)) - 1), TRANSIENT_BACKOFF_MAX)
    return lease_until(wait * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret


def transient_state(field: ImageEmbeddingField, previous: str, reason: str) -> dict[str, Any]:
    """The columns of a row that failed for a reason that may pass: failed, the tries counted
    (``transient_error``), no holder, and left to its backoff (``transient_retry_at``)."""
    error = transient_error(previous, reason)
    return {
        field.column("status"): EmbeddingStatus.FAILED,
        field.column("error"): error,
        field.column("claimed_by"): "",
        field.column("lease_until"): transient_retry_at(error),
    }


def mark_transient_failure(
    model: Any, pks: list[Any], field: str | None, exc: BaseException, reason: str | None = None
) -> None:
    """Retries ran out: record why (``reason``, else ``exc``'s message), in a form the sweep
    recognises, on rows still pending and free (the tries are counted, and the sweep waits out a
    backoff: see ``transient_state``)."""
    emb = get_embedding_field(model, field)
    status, error = emb.column("status"), emb.column("error")
    try:
        rows = primary_rows(model).filter(
            free_filter(emb, timezone.now()), pk__in=pks, **{status: EmbeddingStatus.PENDING}
        )
        for pk, previous in list(rows.values_list("pk", error)):
            rows.filter(pk=pk).update(**transient_state(emb, previous or "", reason or str(exc)))
    except DatabaseError:  # the database is the fault: the rows stay pending and the sweep finds them
        logger.warning("Could not mark %s %s as failed; they stay pending.", model._meta.label, pks)


def lease_until(seconds: float | None = None) -> Any:
    """The end of a lease taken now (``LEASE`` seconds by default)."""
    return timezone.now() + timedelta(seconds=semantic_settings.LEASE if seconds is None else seconds)


def free_filter(field: ImageEmbeddingField, now: Any) -> Q:
    """Rows no worker holds: unclaimed, or claimed with a lease that ran out."""
    return Q(**{field.column("claimed_by"): ""}) | Q(**{f"{field.column('lease_until')}__lt": now})


def held_filter(field: ImageEmbeddingField, now: Any) -> Q:
    """Rows released with a hold (``release_rows``): a lease longer than a sent task's. They wait
    for their own task's retry, or for the sweep; another task's top-up leaves them alone."""
    return Q(**{f"{field.column('lease_until')}__gt": now + timedelta(seconds=1.5 * semantic_settings.LEASE)})


def suspect_filter(field: ImageEmbeddingField) -> Q:
    """Rows taken back from a worker that stopped with them (``WORKER_LOST``), until one embeds them:
    each is sent in a task of its own and embedded alone (no other task's top-up takes it, and its
    task takes no other rows), so a row that kills its worker takes no other row down with it."""
    return Q(**{f"{field.column('error')}__endswith": WORKER_LOST})


def failed_for_good_filter(field: ImageEmbeddingField) -> Q:
    """Rows whose file could not be decoded (a reason that will not pass by itself)."""
    return Q(**{field.column("status"): EmbeddingStatus.FAILED}) & ~Q(
        **{f"{field.column('error')}__startswith": TRANSIENT_PREFIX}
    )


def claim_rows(
    model: type[models.Model],
    pks: Sequence[Any],
    token: str,
    *,
    field: str | None = None,
    top_up: int = 0,
    force: bool = False,
) -> list[Any]:
    """Claim rows for the task ``token``; returns the primary keys it now holds.

    It gets those of ``pks`` that no other task holds (a row whose file already
    failed to decode only with ``force``), then up to ``top_up`` other pending rows,
    oldest first. Each row has one holder: the UPDATE re-checks its condition on a
    row another claim changed meanwhile, and the top-up skips rows being claimed.
    Rows whose worker stopped with them (``suspect_filter``) are embedded alone: only a
    task of that row alone claims one, and it takes no other rows; the top-up takes no
    row still claimed by a worker whose lease ran out (the sweep takes it back, counting a try).
    """
    emb = get_embedding_field(model, field)
    manager = primary_rows(model)
    now = timezone.now()
    values = {emb.column("claimed_by"): token, emb.column("lease_until"): lease_until()}
    own = free_filter(emb, now) if force else free_filter(emb, now) & ~failed_for_good_filter(emb)
    if len(pks) > 1:  # a row whose worker stopped with it goes in a task of its own (the sweep sends it so)
        own &= ~suspect_filter(emb)
    manager.filter(own, pk__in=list(pks)).update(**values)
    waiting: list[Any] = []
    alone = (  # a row that goes alone: this task takes no other
        top_up > 0
        and len(pks) == 1
        and manager.filter(suspect_filter(emb), pk=pks[0], **{emb.column("claimed_by"): token}).exists()
    )
    if top_up > 0 and not alone:
        with transaction.atomic(using=manager.db):
            waiting = list(
                manager.select_for_update(skip_locked=True)
                # Unclaimed only: rows of a worker that died are the sweep's, which counts the try.
                .filter(**{emb.column("claimed_by"): "", emb.column("status"): EmbeddingStatus.PENDING})
                .exclude(held_filter(emb, now))
                .exclude(suspect_filter(emb))
                .exclude(pk__in=list(pks))
                .order_by(F(emb.column("updated_at")).asc(nulls_first=True), "pk")
                .values_list("pk", flat=True)[:top_up]
            )
            if waiting:
                manager.filter(pk__in=waiting).update(**values)
    return list(
        manager.filter(pk__in=[*pks, *waiting], **{emb.column("claimed_by"): token})
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def renew_lease(model: type[models.Model], pks: Sequence[Any], token: str, *, field: str | None = None) -> int:
    """Extend the lease of the rows ``token`` still holds; returns how many."""
    emb = get_embedding_field(model, field)
    return (
        primary_rows(model)
        .filter(pk__in=list(pks), **{emb.column("claimed_by"): token})
        .update(**{emb.column("lease_until"): lease_until()})
    )


def release_rows(
    model: type[models.Model], pks: Sequence[Any], token: str, *, field: str | None = None, hold: float | None = None
) -> int:
    """Give up the claim on rows ``token`` still holds.

    ``hold`` (seconds, at least twice ``LEASE``) keeps the sweep, and other tasks' top-ups
    (``held_filter``), away from them that long: a retry that will come back for them, or rows a
    task failed on; None leaves them due at once if they are still pending.
    """
    emb = get_embedding_field(model, field)
    until = None if hold is None else lease_until(max(hold, 2 * semantic_settings.LEASE))
    return (
        primary_rows(model)
        .filter(pk__in=list(pks), **{emb.column("claimed_by"): token})
        .update(**{emb.column("claimed_by"): "", emb.column("lease_until"): until})
    )


def count_tries(
    model: type[models.Model], field: ImageEmbeddingField, pks: Sequence[Any]
) -> tuple[dict[Any, tuple[str, str]], dict[Any, str]]:
    """Before a run without a claim (in-process, the commands) embeds ``pks``: count a try on each
    row not failed, committed before the work, as the sweep counts one on a worker's lost claim
    (``WORKER_LOST``). A process that dies mid-embedding (killed, out of memory, a crash in a
    native library) leaves the count; the next run embeds the row alone (``embed_instances``);
    a row whose ``TRANSIENT_ATTEMPTS`` tries all stopped so is failed with that reason instead.

    Returns the rows counted, ``{pk: (error before, error stored)}`` (``uncount_tries`` puts the
    first back on those the work left alone), and the rows given up, ``{pk: reason}``.
    """
    error, status = field.column("error"), field.column("status")
    rows = primary_rows(model).filter(pk__in=list(pks)).exclude(**{status: EmbeddingStatus.FAILED})
    counted: dict[Any, tuple[str, str]] = {}
    gave_up: dict[Any, str] = {}
    for pk, previous in list(rows.values_list("pk", error)):
        tries = tries_counted(previous or "")
        if tries < TRANSIENT_ATTEMPTS:
            counted[pk] = (
                previous or "",
                f"{TRANSIENT_PREFIX}(attempt {tries + 1} of {TRANSIENT_ATTEMPTS}) {WORKER_LOST}",
            )
            continue
        reason = f"{GAVE_UP_PREFIX}{tries} attempts: {WORKER_LOST}"
        failed = {
            status: EmbeddingStatus.FAILED,
            error: reason,
            field.column("claimed_by"): "",
            field.column("lease_until"): None,
        }
        if rows.filter(pk=pk, **{error: previous}).update(**failed):
            logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, pk, reason)
            gave_up[pk] = reason
    groups: dict[tuple[str, str], list[Any]] = {}
    for pk, change in counted.items():
        groups.setdefault(change, []).append(pk)
    for (previous, stored), group in groups.items():  # mostly one: rows without an error
        rows.filter(pk__in=group, **{error: previous}).update(**{error: stored})
    return counted, gave_up


def uncount_tries(model: type[models.Model], field: ImageEmbeddingField, counted: dict[Any, tuple[str, str]]) -> None:
    """The work on ``count_tries``' rows is over: those it did not write (unchanged, or changed
    meanwhile) get their error back."""
    error = field.column("error")
    groups: dict[tuple[str, str], list[Any]] = {}
    for pk, change in counted.items():
        groups.setdefault(change, []).append(pk)
    for (previous, stored), group in groups.items():
        primary_rows(model).filter(pk__in=group, **{error: stored}).update(**{error: previous})


def suspects_alone(
    rows: list[models.Model], field: ImageEmbeddingField, batch_size: int
) -> tuple[list[list[Any]], int]:
    """``rows`` in batches for a run without a claim: those a stopped run was embedding (their
    error ends with ``WORKER_LOST``) come last, one per batch, the fewest tries first, so a row
    that kills the process takes no other row down with it. Returns the batches and the index
    of the first one alone (no batch is read ahead of it or while it is embedded)."""
    error = field.column("error")
    lost = [r for r in rows if (r.__dict__.get(error) or "").endswith(WORKER_LOST)]
    others = [r for r in rows if not (r.__dict__.get(error) or "").endswith(WORKER_LOST)]
    lost.sort(key=lambda r: tries_counted(r.__dict__.get(error) or ""))  # stable: the rows' order within a count
    batches = [others[start : start + batch_size] for start in range(0, len(others), batch_size)]
    return [*batches, *([r] for r in lost)], len(batches)


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
    #: Of ``embedded``, the rows rebuilt from their stored CNN output (their images not read).
    text_only: list[Any] = field(default_factory=list)

    def merge(self, other: EmbedReport) -> None:
        self.embedded += other.embedded
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.text_only += other.text_only

    def __str__(self) -> str:
        text = f"{len(self.embedded)} embedded, {len(self.skipped)} unchanged, {len(self.failed)} failed"
        if self.text_only:
            text += f" ({len(self.text_only)} from their stored CNN output, images not read)"
        return text


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
        raise ImageDecodeError(f"The image file {file.name!r} does not exist in storage.") from None
    except SuspiciousFileOperation:  # e.g. "../x.jpg": storage refuses the name itself
        raise ImageDecodeError(f"The image file name {file.name!r} is not allowed by the storage.") from None
    except PermissionError as exc:
        logger.warning("Reading %r: %s", file.name, exc)  # the server's path goes to the log only
        raise ImageDecodeError(f"The image file {file.name!r} cannot be read: permission denied.") from None
    except OSError as exc:  # storage briefly unavailable: worth a retry
        logger.warning("Reading %r: %s", file.name, exc)
        raise TransientError(f"Storage error reading {file.name!r}: {os_reason(exc)}") from exc


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
    except TransientError as exc:
        item.error, item.transient = str(exc), True
    except Exception as exc:  # noqa: BLE001 - e.g. a storage backend's own error: this row's failure, not the batch's
        item.error, item.transient = f"{type(exc).__name__}: {exc}", True
    return item


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


def embed_instances(
    instances: Iterable[models.Model],
    *,
    field: str | None = None,
    force: bool = False,
    batch_size: int | None = None,
    encoder: Encoder | None = None,
    progress: Callable[[int], Any] | None = None,
    claim: str | None = None,
) -> EmbedReport:
    """Embed ``instances`` (a queryset or list of one model's rows) and save the results.

    Batch *n + 1* is read and decoded in a thread pool while batch *n* is encoded,
    so decoding overlaps inference. ``progress(k)`` is called after each batch of ``k`` rows.
    Raises ``TransientError`` when every file of a batch failed with a fault that may pass
    (storage looks gone), or every row of a batch failed alone with another error (see
    ``_embed_batch``), or a database error that may pass; rows written before the fault keep
    their vectors. A batch that fails with another error is done again row by row: a row that
    fails alone is marked ``failed`` with the error, and the others are written.
    With ``claim`` (the token of ``claim_rows``) a row is written only while that claim holds it,
    and the lease of the rows still to come is renewed after each batch.
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
    if claim is None:  # no claim for the sweep to take back: the run counts its tries itself
        chunks, alone_from = suspects_alone(rows, field_obj, batch_size)
    else:
        chunks = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
        alone_from = len(chunks)
    pool = ThreadPoolExecutor(max_workers=decode_threads(), thread_name_prefix="semantic-images-decode")
    decoder = jpeg_decoder(encoder)
    counted: dict[Any, tuple[str, str]] = {}  # the tries counted on rows not written yet

    def submit(chunk: list[models.Model]) -> tuple[list[_Item], list[Future]]:
        if claim is None:
            tried, gave_up = count_tries(model, field_obj, [r.pk for r in chunk])
            counted.update(tried)
            report.failed.update(gave_up)
            chunk = [r for r in chunk if r.pk not in gave_up]
        items = [_Item(r, field_obj.file(r), field_obj.texts(r)) for r in chunk]
        candidates = text_only_candidates(chunk, field_obj, encoder, force)
        visuals = stored_visuals(model, field_obj, candidates) if candidates else {}
        futures: list[Future] = []
        for item in items:
            visual = visuals.get(item.instance.pk)
            if visual is not None and visual.shape == (encoder.visual_dimensions,):
                item.stored_visual = visual
                item.stored_norm = float(getattr(item.instance, field_obj.column("visual_norm")))
                done: Future = Future()
                done.set_result(item)  # nothing to read: the image is not opened
                futures.append(done)
            else:
                futures.append(pool.submit(_prepare, item, field_obj, encoder, force, decoder is not None))
        return items, futures

    try:
        upcoming = submit(chunks[0])
        for index in range(len(chunks)):
            items, futures = upcoming
            ahead = index + 1 < alone_from  # a row embedded alone is read neither ahead nor beside another
            if ahead:
                upcoming = submit(chunks[index + 1])  # decode the next batch while this one encodes
            prepared = [f.result() for f in futures]
            work = [it for it in prepared if it is not None]
            if work and all(it.transient for it in work):  # every file of the batch: storage looks gone
                raise TransientError(work[0].error)
            report.merge(_embed_batch(model, field_obj, encoder, items, prepared, claim, decoder, database))
            for item in items:  # the batch is written: its bytes and pixels are no longer needed
                item.data, item.pixels = b"", None
            if counted:
                uncount_tries(
                    model,
                    field_obj,
                    {it.instance.pk: counted.pop(it.instance.pk) for it in items if it.instance.pk in counted},
                )
            if claim is not None and index + 1 < len(chunks):
                later = [row.pk for chunk in chunks[index + 1 :] for row in chunk]
                renew_lease(model, later, claim, field=field_obj.name)
            if progress is not None:
                progress(len(chunks[index]))
            if not ahead and index + 1 < len(chunks):
                upcoming = submit(chunks[index + 1])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if counted:  # the run stopped with an error (not a dead process): its rows' own errors back
            try:
                uncount_tries(model, field_obj, counted)
            except DatabaseError:  # the database is the fault: the tries stay counted
                logger.warning("Could not take back the tries counted on %s %s.", model._meta.label, list(counted))
    return report


def _embed_batch(
    model: type[models.Model],
    field: ImageEmbeddingField,
    encoder: Encoder,
    items: list[_Item],
    prepared: list[_Item | None],
    claim: str | None,
    decoder: Decoder | None,
    database: str,
) -> EmbedReport:
    """Encode and write one batch, in one transaction (one commit per batch, not one per row).

    An unexpected error (not a fault that may pass: a database error on one row, the encoder's
    own error) rolls the batch back; its rows are then done one at a time, each in a transaction
    of its own, so the others are written, and a row that fails alone is marked ``failed`` with
    the error, counted as a fault that may pass (``transient_error``: the sweep tries it again, a
    bounded number of times). When every row fails alone the fault looks like the encoder's or
    the database's, not a row's: a ``TransientError`` (retried with its task, as storage gone).
    """
    loaded = [dict(it.instance.__dict__) for it in items]  # what a rolled-back write changed on them
    try:
        with transaction.atomic(using=database):
            return _encode_and_write(model, field, encoder, items, prepared, claim, decoder)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # noqa: BLE001 - the batch's rows are tried one by one below
        label, reason = model._meta.label, error_reason(exc)
        logger.warning("Embedding a batch of %s failed (%s); its rows are tried one at a time.", label, reason)
        for item, state in zip(items, loaded, strict=True):
            item.instance.__dict__.clear()
            item.instance.__dict__.update(state)
    report = EmbedReport()
    alone: dict[Any, Exception] = {}
    for item, prep in zip(items, prepared, strict=True):
        if prep is None:
            report.skipped.append(item.instance.pk)
            continue
        state = dict(item.instance.__dict__)
        try:
            with transaction.atomic(using=database):
                report.merge(_encode_and_write(model, field, encoder, [item], [prep], claim, decoder))
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - this row's failure
            item.instance.__dict__.clear()
            item.instance.__dict__.update(state)
            alone[item.instance.pk] = exc
    work = [prep for prep in prepared if prep is not None]
    if alone and len(alone) == len(work):
        first = next(iter(alone.values()))
        raise TransientError(f"Every row of the batch failed: {error_reason(first)}") from first
    for prep in work:
        if prep.instance.pk in alone:
            report.merge(_fail_alone(model, field, prep, alone[prep.instance.pk], claim, database))
    return report


def _fail_alone(
    model: type[models.Model],
    field: ImageEmbeddingField,
    item: _Item,
    exc: Exception,
    claim: str | None,
    database: str,
) -> EmbedReport:
    """Mark the row of ``item`` failed for the unexpected error ``exc``, counted as a fault that
    may pass (its vectors, if any, stay). If even that write is refused, it is logged: the row's
    claim runs out and the sweep takes it back."""
    report = EmbedReport()
    previous = getattr(item.instance, field.column("error"), "") or ""
    state = transient_state(field, previous, error_reason(exc))  # the sweep waits out its backoff
    reason = state[field.column("error")]
    try:
        with transaction.atomic(using=database):
            written = _write(model, field, item, state, claim)
    except DatabaseError as error:
        logger.warning("Could not mark %s pk=%s failed: %s", model._meta.label, item.instance.pk, error)
        return report
    if written:
        logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, item.instance.pk, reason)
        report.failed[item.instance.pk] = reason
    return report


def _encode_and_write(
    model: type[models.Model],
    field: ImageEmbeddingField,
    encoder: Encoder,
    items: list[_Item],
    prepared: list[_Item | None],
    claim: str | None = None,
    decoder: Decoder | None = None,
) -> EmbedReport:
    report = EmbedReport()
    now = timezone.now()
    good = [it for it in prepared if it is not None and not it.error]
    for item, prep in zip(items, prepared, strict=True):
        if prep is None:
            report.skipped.append(item.instance.pk)
    stored = [it for it in good if it.stored_visual is not None]
    good = [it for it in good if it.stored_visual is None]
    pixels: Any = None
    vectors: ImageEmbeddings | None = None
    parts: list[np.ndarray] = []  # the semantic vectors before the words: full rows, then text-only ones
    if good:
        pixels, good = _batch_pixels(encoder, good, decoder)
    identity = encoder.identity
    for _attempt in range(MIX_ATTEMPTS):
        parts = []
        if good:
            vectors = encoder.encode_pixels(pixels)
            parts.append(vectors.semantic)
        if stored:  # a text-side change: the stored CNN output, mixed again; the image is not read
            visual = np.stack([it.stored_visual for it in stored if it.stored_visual is not None])
            norms = np.array([it.stored_norm for it in stored], dtype=np.float32)
            parts.append(encoder.encode_stored(visual, norms))
        # A learned bridge installed while the batch was mixed: the vectors may be the old bridge's,
        # so mix it again rather than store them under the new identity (they would never be stale).
        if not (good or stored) or encoder.identity == identity:
            break
        identity = encoder.identity
    else:
        raise TransientError(f"The encoder's identity kept changing while a batch was embedded (now {identity}).")
    done = good + stored
    if done:
        texts = [" . ".join(it.texts) for it in done]
        with_text = [i for i, t in enumerate(texts) if t]
        semantic = np.concatenate(parts)
        if with_text:
            text_vectors = encoder.encode_texts([texts[i] for i in with_text])
            semantic[with_text] = fuse(
                semantic[with_text],
                text_vectors,
                semantic_settings.TEXT_WEIGHT,
                common=getattr(encoder, "common_text_direction", None),
                parts=getattr(encoder, "semantic_parts", None),
                scale=getattr(encoder, "common_scales", None) or COMMON_SCALE,
            )
        state = {
            field.column("encoder"): identity,
            field.column("status"): EmbeddingStatus.EMBEDDED,
            field.column("error"): "",
            field.column("updated_at"): now,
        }
        for i, item in enumerate(done):
            values = {field.semantic_field: semantic[i], **state}
            if vectors is not None and i < len(good):  # a text-only row keeps its visual side
                values |= {
                    field.visual_field: vectors.visual[i],
                    field.column("visual_norm"): None if vectors.norms is None else float(vectors.norms[i]),
                    field.column("hash"): item.digest,
                    field.column("labels"): [
                        {"label": name, "probability": round(p, 4)}
                        for name, p in (vectors.labels[i] if vectors.labels else [])
                    ],
                }
            updated = _write(model, field, item, values, claim)
            if updated:
                report.embedded.append(item.instance.pk)
                if item.stored_visual is not None:
                    report.text_only.append(item.instance.pk)
    for maybe in prepared:
        if maybe is not None and maybe.error and maybe.transient:
            item = maybe
            previous = getattr(item.instance, field.column("error"), "") or ""
            failure = transient_state(field, previous, item.error)
            reason = str(failure[field.column("error")])
            if _write(model, field, item, failure, claim):  # its vectors, if any, stay; it waits its backoff
                logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, item.instance.pk, reason)
                report.failed[item.instance.pk] = reason
        elif maybe is not None and maybe.error:
            item = maybe
            failed = _write(
                model,
                field,
                item,
                {
                    field.visual_field: None,
                    field.column("visual_norm"): None,
                    field.semantic_field: None,
                    field.column("encoder"): encoder.identity,
                    field.column("hash"): item.digest,
                    field.column("status"): EmbeddingStatus.FAILED,
                    field.column("error"): item.error,
                    field.column("updated_at"): now,
                    field.column("labels"): [],
                },
                claim,
            )
            if failed:
                logger.warning("Embedding %s pk=%s failed: %s", model._meta.label, item.instance.pk, item.error)
                report.failed[item.instance.pk] = item.error
    return report


def inputs_unchanged(model: type[models.Model], field: ImageEmbeddingField, item: _Item) -> Q:
    """The row still holds the inputs ``item`` was embedded from: its image file, and the values
    of the text fields that are its own columns (texts read through a relation or a property
    change on another row, whose saves ask for the work)."""
    stored = getattr(item.file, "name", "") or ""
    # No file: an empty name, a NULL column, or an empty relation ("image__file" across a null key).
    same = (
        Q(**{field.image_field: stored})
        if stored
        else Q(**{field.image_field: ""}) | Q(**{f"{field.image_field}__isnull": True})
    )
    loaded = item.instance.__dict__
    for attr in field.text_fields:
        try:
            column = model._meta.get_field(attr)
        except FieldDoesNotExist:  # a relation path or a property
            continue
        if not isinstance(column, models.Field) or not column.concrete or column.attname not in loaded:
            continue
        value = loaded[column.attname]
        same &= Q(**{f"{column.attname}__isnull": True}) if value is None else Q(**{column.attname: value})
    return same


def not_marked_since(field: ImageEmbeddingField, item: _Item) -> Q:
    """The row's "pending since" (``updated_at``) is still the one ``item`` was loaded with: no save
    changed its inputs since (a save sets it, even one that put a new file under the same name, on a
    storage that overwrites, where the name alone looks unchanged), no re-embed or sweep marked it
    again and no other run wrote it. No condition when the column was not loaded."""
    column = field.column("updated_at")
    loaded = item.instance.__dict__
    if column not in loaded:
        return Q()
    value = loaded[column]
    return Q(**{f"{column}__isnull": True}) if value is None else Q(**{column: value})


def texts_elsewhere(model: type[models.Model], field: ImageEmbeddingField, item: _Item) -> bool:
    """Does one of ``item``'s texts come from outside the row's loaded columns (a relation path,
    a property, a deferred column), where ``inputs_unchanged`` cannot compare it?"""
    loaded = item.instance.__dict__
    for attr in field.text_fields:
        try:
            column = model._meta.get_field(attr)
        except FieldDoesNotExist:
            return True
        if not isinstance(column, models.Field) or not column.concrete or column.attname not in loaded:
            return True
    return False


def texts_unchanged(model: type[models.Model], field: ImageEmbeddingField, item: _Item) -> bool:
    """Are the row's texts, read again now, those ``item`` was embedded from? The row is locked
    until the batch commits (not the rows its texts come from), so an edit that marks it pending
    meanwhile waits, and its own embedding comes after this write."""
    rows = primary_rows(model).select_for_update(of=("self",)).filter(pk=item.instance.pk)
    related = field.related_paths()
    if related:
        rows = rows.select_related(*related)
    current = rows.defer(field.visual_field, field.semantic_field).first()
    return current is not None and field.texts(current) == item.texts


def _write(
    model: type[models.Model], field: ImageEmbeddingField, item: _Item, values: dict[str, Any], claim: str | None
) -> bool:
    """Store ``values`` and end the row's claim, unless its inputs changed meanwhile (a newer
    task will embed it: a run without a claim, e.g. in-process or the reindex command, never
    writes vectors of texts an editor has changed since, even texts read through a relation or
    a property, such as a Wagtail image's, nor of a file replaced under the same name: the row
    was marked pending since) or, with ``claim``, the row is no longer held by that claim (an
    edit ends the claim)."""
    values = {field.column("claimed_by"): "", field.column("lease_until"): None, **values}
    unchanged = inputs_unchanged(model, field, item)
    if claim is not None:
        unchanged &= Q(**{field.column("claimed_by"): claim})
    elif texts_elsewhere(model, field, item) and not texts_unchanged(model, field, item):
        return False
    else:
        unchanged &= not_marked_since(field, item)
    updated = primary_rows(model).filter(unchanged, pk=item.instance.pk).update(**values)
    for name, value in values.items():
        setattr(item.instance, name, value)
    return bool(updated)


def embed_pks(model: type[models.Model], pks: Sequence[Any], **kwargs: Any) -> EmbedReport:
    """Embed the rows of ``model`` with these primary keys (missing rows are ignored).

    The old vectors are not loaded: the pipeline needs only the image, texts and state
    (and the rows that image and texts are read through, in the same query).
    """
    field_obj = get_embedding_field(model, kwargs.get("field"))
    rows = primary_rows(model).filter(pk__in=list(pks))
    related = field_obj.related_paths()
    if related:  # select_related() without names would follow every foreign key (deprecated in Django 6.1)
        rows = rows.select_related(*related)
    rows = rows.defer(field_obj.visual_field, field_obj.semantic_field).order_by("pk")
    return embed_instances(rows, **kwargs)
