"""Training a bridge from a site's own captioned images, and checking it on held-out ones.

The inputs come from the database: each embedded row's stored visual vector and
the words of its text fields (every non-empty line of a field is one
description). A linear map from visual vectors into the text space is trained
with a symmetric InfoNCE loss; before it is installed it must beat the encoder's
current semantic vectors on held-out images (text -> image recall).
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from django.db import models

from .encoders.base import l2_normalize
from .encoders.bridges import LearnedBridge, transform_visual
from .encoders.conse import ConSEEncoder
from .encoders.text import NOT_BLANK
from .fields import (
    MARKUP,
    EmbeddingStatus,
    ImageEmbeddingField,
    choice_labels,
    get_embedding_field,
    is_column,
    words_of,
)
from .imaging import ImageDecodeError, decode_image
from .metrics import RetrievalScores, retrieval_scores

logger = logging.getLogger(__name__)

Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


def no_progress(items: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
    return items


@dataclass
class CaptionedImages:
    """Images (by primary key) with their visual vectors and descriptions."""

    keys: list[Any]
    visual: np.ndarray  # (images, visual_dim), L2-normalised
    texts: list[str]
    owner: np.ndarray  # (texts,) index of the image each description belongs to

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, index: np.ndarray) -> CaptionedImages:
        """The images at ``index`` (renumbered) with their descriptions."""
        remap = {int(old): new for new, old in enumerate(index)}
        keep = [i for i, o in enumerate(self.owner) if int(o) in remap]
        return CaptionedImages(
            keys=[self.keys[i] for i in index],
            visual=self.visual[index],
            texts=[self.texts[i] for i in keep],
            owner=np.array([remap[int(self.owner[i])] for i in keep], dtype=np.int64),
        )

    def compact(self, index: np.ndarray, block: int = 4096) -> CaptionedImages:
        """Keep only the images at ``index`` (ascending), in place; returns ``self``.

        Rows move forward ``block`` at a time, so the only copy is one block's.
        """
        index = np.asarray(index, dtype=np.int64)
        if len(index) and np.any(np.diff(index) <= 0):
            raise ValueError("compact() needs ascending, distinct indexes.")
        remap = np.full(len(self.keys), -1, dtype=np.int64)
        remap[index] = np.arange(len(index))
        for start in range(0, len(index), block):
            rows = index[start : start + block]
            self.visual[start : start + len(rows)] = self.visual[rows]
        if self.visual.flags.owndata:
            self.visual.resize((len(index), self.visual.shape[1]), refcheck=False)  # in place
        else:
            self.visual = self.visual[: len(index)].copy()
        new_owner = remap[self.owner]
        keep = new_owner >= 0
        self.texts = [t for t, k in zip(self.texts, keep, strict=True) if k]
        self.owner = new_owner[keep]
        self.keys = [self.keys[i] for i in index]
        return self


def _as_values(rows: models.QuerySet, field: ImageEmbeddingField) -> Any:
    """``rows`` read whole, each as ``(pk, visual vector, *its texts)``: the texts as the stored
    vectors read them (``ImageEmbeddingField.texts``, which follows properties and relations)."""
    return _RowTexts(rows.select_related(*field.related_paths()), field)


class _RowTexts:
    """``values_list``'s slicing and ``iterator()`` for rows whose texts need the row itself."""

    def __init__(self, rows: models.QuerySet, field: ImageEmbeddingField) -> None:
        self.rows, self.field = rows, field

    def __getitem__(self, index: slice) -> _RowTexts:
        return _RowTexts(self.rows[index], self.field)

    def iterator(self, chunk_size: int) -> Iterator[tuple[Any, ...]]:
        for row in self.rows.iterator(chunk_size=chunk_size):
            yield (row.pk, getattr(row, self.field.visual_field), *self.field.texts(row))


def descriptions(instance_texts: Sequence[str]) -> list[str]:
    """Each line of each text field that is not blank (``NOT_BLANK``, as for search words and the
    fused alt text: zero-width characters alone are blank) is one description of the image, read
    as the image's vectors read it (``words_of``); a field holding HTML (a rich text field's) is one
    description, its words alone."""
    lines = (line for text in map(str, instance_texts) for line in _lines(text))
    return [words for words in map(words_of, lines) if NOT_BLANK.search(words)]


def _lines(text: str) -> list[str]:
    """``text``'s lines, or the whole of it when it holds markup (a tag may span lines)."""
    return [text] if MARKUP.search(text) else text.splitlines()


#: The fewest images a bridge trains on: each step contrasts a batch's images with each other.
MIN_TRAIN_IMAGES = 2

#: The fewest images held out: the check ranks each description among the held-out images.
MIN_HELD_OUT = 2

#: Rows read per query when collecting training data.
CHUNK_SIZE = 2000


def collect_captioned(
    queryset: models.QuerySet,
    field: ImageEmbeddingField | None = None,
    *,
    chunk_size: int = CHUNK_SIZE,
    image_identity: str | None = None,
) -> CaptionedImages:
    """The embedded rows of ``queryset`` that have words, with their stored visual vectors.

    ``image_identity`` (an encoder's): only rows whose visual vectors that image model made (stored
    identity ``<image_identity>:...``); rows not yet re-embedded after a change of CNN or ``flip`` hold
    another network's features, which a bridge for this one must not learn from.

    Rows are read ``chunk_size`` at a time in primary-key order (one query per chunk, each
    starting after the last key of the one before), into a float32 array allocated once for
    the rows counted first (grown if more arrive meanwhile), normalised chunk by chunk. So the
    memory held is the result plus one chunk: no per-row arrays, no second copy when stacking.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    field = field or get_embedding_field(queryset.model)
    rows = queryset.filter(
        **{field.column("status"): EmbeddingStatus.EMBEDDED, f"{field.visual_field}__isnull": False}
    ).order_by("pk")
    if image_identity is not None:
        rows = rows.filter(**{f"{field.column('encoder')}__startswith": f"{image_identity}:"})
    dim = queryset.model._meta.get_field(field.visual_field).dimensions
    visual = np.empty((rows.count(), dim), dtype=np.float32)
    keys: list[Any] = []
    texts: list[str] = []
    owner = array("q")
    columns = ("pk", field.visual_field, *field.text_fields)
    model = queryset.model
    labels = [choice_labels(model, path) or {} for path in field.text_fields]
    # Columns are read as values; a property or a relation among the text fields needs the row itself.
    as_values = all(is_column(model, path) for path in field.text_fields)
    last = None
    while True:
        chunk = rows if last is None else rows.filter(pk__gt=last)
        page = chunk.values_list(*columns) if as_values else _as_values(chunk, field)
        start, read = len(keys), 0
        # Rows are converted one at a time as they are iterated: a chunk never exists as Python lists.
        for pk, vector, *words in page[:chunk_size].iterator(chunk_size=chunk_size):
            read, last = read + 1, pk
            words = [found.get(w, w) for found, w in zip(labels, words, strict=True)] if as_values else words
            lines = descriptions([str(w) if w else "" for w in words])
            if not lines:
                continue
            if len(keys) == len(visual):  # rows added since they were counted
                visual.resize((max(2 * len(visual), len(keys) + chunk_size), dim), refcheck=False)
            visual[len(keys)] = vector
            owner.extend([len(keys)] * len(lines))
            texts += lines
            keys.append(pk)
        visual[start : len(keys)] = l2_normalize(visual[start : len(keys)])
        if read < chunk_size:
            break
    visual.resize((len(keys), dim), refcheck=False)  # in place: no copy of the result
    if not keys:
        visual = np.zeros((0, 0), np.float32)
    return CaptionedImages(
        keys, visual, texts, np.frombuffer(owner, dtype=np.int64) if owner else np.zeros(0, np.int64)
    )


def split_holdout(
    data: CaptionedImages, fraction: float, seed: int = 0, *, max_held: int | None = None, in_place: bool = False
) -> tuple[CaptionedImages, CaptionedImages]:
    """Images (not descriptions) split at random into a training and a held-out part.

    At least ``MIN_HELD_OUT`` and at most ``max_held`` (when that is larger) images are held out
    (the rest train). ``in_place`` turns ``data``
    itself into the training part, moving its rows in blocks: no second copy of the vectors.
    A ValueError when fewer than ``MIN_TRAIN_IMAGES`` would be left to train on.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The held-out fraction must be between 0 and 1, got {fraction}.")
    order = np.random.default_rng(seed).permutation(len(data))
    n_held = max(MIN_HELD_OUT, round(len(data) * fraction))
    if max_held is not None:
        n_held = max(MIN_HELD_OUT, min(n_held, max_held))
    n_held = min(n_held, len(data))
    if len(data) - n_held < MIN_TRAIN_IMAGES:
        raise ValueError(
            f"Holding out {n_held} of {len(data)} images leaves {len(data) - n_held} to train on; at least "
            f"{MIN_TRAIN_IMAGES} are needed, and {MIN_HELD_OUT} held out to check the bridge (more images, or a "
            "smaller held-out fraction)."
        )
    held = data.subset(np.sort(order[:n_held]))
    train_index = np.sort(order[n_held:])
    return (data.compact(train_index) if in_place else data.subset(train_index)), held


@dataclass
class TrainingOptions:
    epochs: int = 10
    temperature: float = 0.05
    dropout: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    conse_weight: float = 0.2
    seed: int = 0
    #: Bridges trained (seeds ``seed``, ``seed + 1``, ...) and averaged into one linear map.
    ensemble: int = 1
    #: ``"sqrt"``: train on the square roots of the visual vectors (``encoders.bridges.transform_visual``);
    #: the bridge must then carry ``meta["visual_transform"] = "sqrt"`` to apply it at embed time.
    visual_transform: str = ""


def fit_linear_bridge(
    visual: np.ndarray,
    text_vectors: np.ndarray,
    owner: np.ndarray,
    options: TrainingOptions,
    progress: Progress = no_progress,
    parts: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of a linear map visual -> text space, trained with symmetric InfoNCE.

    Each (image, description) pair is a positive; the other images and descriptions of
    the batch are negatives (other descriptions of the same image are masked out).
    ``options.ensemble`` > 1 trains that many (seeds ``seed``, ``seed + 1``, ...) and averages their
    weights; ``options.visual_transform`` ("sqrt") trains on transformed visual vectors.
    ``parts`` (the encoder's ``semantic_parts``): the projection is normalised piece by piece,
    as ``LearnedBridge.project`` will, and the targets are every piece (both text models'
    vectors of each description).
    """
    if options.ensemble < 1:
        raise ValueError(f"ensemble must be at least 1, got {options.ensemble}.")
    if len(np.unique(owner)) < MIN_TRAIN_IMAGES or options.batch_size < 2:
        # No batch would hold two images: no step would be taken, and the map would be its random start.
        raise ValueError(
            f"A bridge trains on at least {MIN_TRAIN_IMAGES} images and batches of at least 2 descriptions "
            f"(got {len(np.unique(owner))} images, batch size {options.batch_size})."
        )
    visual = transform_visual(visual, options.visual_transform)
    single = replace(options, ensemble=1, visual_transform="")
    fits = [
        _fit_one(visual, text_vectors, owner, replace(single, seed=options.seed + k), progress, parts)
        for k in range(options.ensemble)
    ]
    # The mean of linear maps is a linear map: an ensemble costs nothing more at embed time.
    weight = np.mean([w for w, _ in fits], axis=0)
    bias = np.mean([b for _, b in fits], axis=0)
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ValueError(
            f"The training diverged (weights of NaN or infinity) at learning rate {options.learning_rate:g} "
            f"and temperature {options.temperature:g}: lower the learning rate."
        )
    return weight.astype(np.float32), bias.astype(np.float32)


def _fit_one(
    visual: np.ndarray,
    text_vectors: np.ndarray,
    owner: np.ndarray,
    options: TrainingOptions,
    progress: Progress,
    parts: Sequence[int] | None,
) -> tuple[np.ndarray, np.ndarray]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    gen = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    model = nn.Linear(visual.shape[1], text_vectors.shape[1])
    dropout = nn.Dropout(options.dropout)
    x_all = torch.from_numpy(np.ascontiguousarray(visual, np.float32))
    y_all = torch.from_numpy(np.ascontiguousarray(text_vectors, np.float32))
    owners = torch.from_numpy(np.asarray(owner, np.int64))
    n = len(owners)
    steps_per_epoch = max(1, -(-n // options.batch_size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    total = max(1, options.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, options.learning_rate, total_steps=total)
    model.train()
    with torch.enable_grad():
        for _epoch in progress(range(options.epochs), options.epochs, "training bridge"):
            for batch in shuffled_batches(n, options.batch_size, gen):
                img = owners[batch]
                z = model(dropout(x_all[img]))
                if parts:
                    pieces = torch.split(z, list(parts), dim=-1)
                    z = torch.cat([F.normalize(p, dim=-1) for p in pieces], dim=-1) / len(parts) ** 0.5
                else:
                    z = F.normalize(z, dim=-1)
                loss = caption_infonce(z, y_all[batch], img, options.temperature)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
    weight = model.weight.detach().numpy().T.copy()
    bias = model.bias.detach().numpy().copy()
    return weight.astype(np.float32), bias.astype(np.float32)


def shuffled_batches(n: int, batch_size: int, gen: Any) -> Iterator[Any]:
    """One epoch's batches of the indices ``0..n-1`` (torch tensors) in a random order drawn from the
    torch generator ``gen``; a last batch of one pair is left out (the contrastive loss needs two)."""
    import torch

    perm = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        batch = perm[start : start + batch_size]
        if len(batch) >= 2:
            yield batch


def caption_infonce(z: Any, y: Any, owners: Any, temperature: float) -> Any:
    """Symmetric InfoNCE between a batch's projected images ``z`` and their descriptions' text
    vectors ``y`` (torch tensors, row i of each a pair; ``owners[i]`` the image of pair i): the
    other pairs are negatives, except other descriptions of the same image, which are masked."""
    import torch
    from torch.nn import functional as F

    logits = z @ y.T / temperature
    others_same = (owners[:, None] == owners[None, :]) & ~torch.eye(len(owners), dtype=torch.bool)
    # -inf, not a large negative number: at a small temperature every real logit may lie below any such
    # number (-1e4 at 1e-5 and cosines under -0.1), and the masked pairs then took the whole softmax.
    logits = logits.masked_fill(others_same, float("-inf"))
    target = torch.arange(len(owners))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def semantic_without_words(
    encoder: ConSEEncoder,
    model: type[models.Model],
    keys: Sequence[Any],
    field: ImageEmbeddingField,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """ConSE vectors and visual vectors of these rows' pictures alone (the CNN runs again).

    Held-out images must be judged by their pixels only: their stored semantic vectors
    already contain the words they are tested on. Unreadable rows are left out.
    """
    from .conf import semantic_settings
    from .pipeline.failures import TransientError
    from .pipeline.reading import _read

    conse_rows: list[np.ndarray] = []
    visual_rows: list[np.ndarray] = []
    kept: list[Any] = []
    instances = {obj.pk: obj for obj in model._default_manager.filter(pk__in=list(keys))}
    pending: list[tuple[Any, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        feats, probs = encoder.features_and_probs(np.stack([p for _, p in pending]))
        conse_rows.append(encoder.conse(probs))
        visual_rows.append(l2_normalize(feats))
        kept.extend(k for k, _ in pending)
        pending.clear()

    for key in keys:
        instance = instances.get(key)
        if instance is None:
            continue
        try:
            image = decode_image(
                _read(field.file(instance)),
                min_side=getattr(encoder, "input_side", 256),
                max_side=semantic_settings.MAX_IMAGE_SIDE,
                max_pixels=semantic_settings.MAX_IMAGE_PIXELS,
            )
        except (ImageDecodeError, TransientError) as exc:  # undecodable, or the storage failed to read it
            logger.warning("Held-out image pk=%s left out: %s", key, exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a storage backend's own error (botocore's ClientError), as the pipeline
            logger.warning("Held-out image pk=%s left out: %s: %s", key, type(exc).__name__, exc)
            continue
        pending.append((key, encoder.preprocess(image)))
        if len(pending) >= batch_size:
            flush()
    flush()
    if not kept:
        dim = encoder.semantic_dimensions
        return np.zeros((0, dim), np.float32), np.zeros((0, encoder.visual_dimensions), np.float32), kept
    return np.concatenate(conse_rows), np.concatenate(visual_rows), kept


@dataclass
class BridgeCheck:
    """A candidate bridge's held-out scores against those of the vectors in use."""

    candidate: RetrievalScores
    current: RetrievalScores
    held_out_images: int
    held_out_queries: int

    @property
    def better(self) -> bool:
        """Installed only when it finds more right pictures in the top 5 (ties: by mean rank)."""
        if self.candidate.r5 != self.current.r5:
            return self.candidate.r5 > self.current.r5
        return self.candidate.mean_rank < self.current.mean_rank


def check_bridge(
    candidate: LearnedBridge,
    current: LearnedBridge | None,
    conse: np.ndarray,
    visual: np.ndarray,
    query_vectors: np.ndarray,
    owner: np.ndarray,
    seed: int = 0,
) -> BridgeCheck:
    """Text -> image recall on held-out images, with the candidate and with what is in use."""
    now = current.apply(visual, conse) if current is not None else conse
    new = candidate.apply(visual, conse)
    return BridgeCheck(
        candidate=retrieval_scores(query_vectors, new, owner, seed=seed),
        current=retrieval_scores(query_vectors, now, owner, seed=seed),
        held_out_images=len(visual),
        held_out_queries=len(owner),
    )
