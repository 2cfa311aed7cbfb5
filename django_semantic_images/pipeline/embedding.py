"""The embedding itself: rows in batches, read ahead in threads, encoded, and written one
transaction per batch (``embed_instances``, ``embed_pks``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import DatabaseError, models, router, transaction
from django.utils import timezone

from ..conf import semantic_settings
from ..device_jpeg import Decoder
from ..encoders.base import Encoder, ImageEmbeddings
from ..fields import EmbeddingStatus, ImageEmbeddingField, get_embedding_field
from ..fusion import fuse_texts
from .claims import renew_lease
from .failures import NOT_FINITE, TRANSIENT_ERRORS, ZERO_VECTOR, TransientError, error_reason, transient_state
from .reading import (
    _batch_pixels,
    _Item,
    _prepare,
    decode_threads,
    jpeg_decoder,
    storage_looks_gone,
    stored_visuals,
    text_only_candidates,
)
from .rows import primary_rows
from .tries import count_tries, suspects_alone, uncount_tries
from .writing import _write

logger = logging.getLogger(__name__)


#: Times a batch is mixed again when a learned bridge is installed meanwhile, before trying later.
MIX_ATTEMPTS = 3


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
    Raises ``TransientError`` when the storage looks gone (``storage_looks_gone``: its folder is
    not there, or every file of a batch of several failed with a fault that may pass; one file
    that fails so, alone in its batch or among others, fails its row alone, counted), or every
    row of a batch failed alone with another error (see ``_embed_batch``), or a database error
    that may pass; rows written before the fault keep their vectors. A batch that fails with
    another error is done again row by row: a row that fails alone is marked ``failed`` with the
    error, and the others are written.
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
            gone = storage_looks_gone(prepared)  # else a file that failed to read fails its row alone
            if gone is not None:
                raise TransientError(gone.error)
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
    bounded number of times). When every row of several fails alone the fault looks like the
    encoder's or the database's, not a row's: a ``TransientError`` (retried with its task, as
    storage gone). The only row to write (a batch of one, or beside rows found unchanged) fails
    alone, as a row among others.
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
    if alone and len(alone) == len(work) > 1:  # one row failing says nothing of the encoder or database
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
        semantic = fuse_texts(encoder, np.concatenate(parts), [it.texts for it in done], semantic_settings.TEXT_WEIGHT)
        state = {
            field.column("encoder"): identity,
            field.column("status"): EmbeddingStatus.EMBEDDED,
            field.column("error"): "",
            field.column("updated_at"): now,
        }
        for i, item in enumerate(done):
            picture = vectors.visual[i] if vectors is not None and i < len(good) else None
            if not np.isfinite(semantic[i]).all() or (picture is not None and not np.isfinite(picture).all()):
                item.error = NOT_FINITE  # failed for good below, without vectors
                continue
            if not semantic[i].any() or (picture is not None and not picture.any()):
                item.error = ZERO_VECTOR  # failed for good below, without vectors
                continue
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
