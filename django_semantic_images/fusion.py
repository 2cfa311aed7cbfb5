"""Fusing an editor's words (title, alt text) with the picture's semantic vector.

An image with words is one vector, searched in the same cosine index as images
without words, so its scores must stay comparable with theirs. A plain mix of
the two vectors is not: every sentence shares a large common direction with
every query ("a ... of a ..."), so *any* query scores high against *any* image
with words, and those images crowd the others out of the first places
(docs/relevance.md measures it). The rule here removes that shared direction
from the words before mixing, a little more than all of it, so the words count
by what they say about this image, not by being words:

    fused = normalise((1 - w) * image + w * normalise(text - COMMON_SCALE * common))

``common`` is the encoder's ``common_text_direction`` (for ConSE: the mean of the
class prompts' vectors); without one, the rule is the plain weighted mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .conf import semantic_settings
from .encoders.base import Encoder, l2_normalize, normalize_parts

#: ``TEXT_WEIGHT``'s default: vectors mixed with it keep the identity they had before the weight was part of it.
DEFAULT_TEXT_WEIGHT = 0.5


def weight_identity() -> tuple[str, ...]:
    """What the encoder identity names of ``TEXT_WEIGHT``: nothing at the default, else the weight
    (the stored vectors of rows with words depend on it, so a change makes them stale)."""
    weight = semantic_settings.TEXT_WEIGHT
    try:
        weight = float(weight)
    except (TypeError, ValueError):  # not a number: the check E012 names it; the identity still reads
        pass
    return () if weight == DEFAULT_TEXT_WEIGHT else (f"text_weight={weight!r}",)


#: How much of the common direction is removed from the words (tuned on Flickr8k train:
#: 1.0 removes it exactly; 1.5 also offsets the higher baseline score of text).
COMMON_SCALE = 1.5


def specific_part(text: np.ndarray, common: np.ndarray | None, scale: float = COMMON_SCALE) -> np.ndarray:
    """Text vectors without (``scale`` times) the direction every description shares, renormalised."""
    text = l2_normalize(np.atleast_2d(text))
    if common is None:
        return text
    return l2_normalize(text - scale * np.asarray(common, dtype=np.float32)[None, :])


def fuse(
    image_semantic: np.ndarray,
    text: np.ndarray,
    text_weight: float,
    *,
    common: np.ndarray | None = None,
    scale: float | Sequence[float] = COMMON_SCALE,
    parts: Sequence[int] | None = None,
) -> np.ndarray:
    """Rows are images: ``(1 - w) * image + w * specific part of the words``, renormalised.

    ``text_weight`` 0 keeps the picture alone, 1 the words alone. ``parts`` (an encoder's
    ``semantic_parts``: text spaces side by side) fuses each piece on its own, with its piece
    of ``common`` and its ``scale`` (one per piece, or one for all), and joins them as
    ``normalize_parts`` does: each piece ranks as that text space alone would.
    """
    scales = [float(x) for x in scale] if isinstance(scale, Sequence) else None
    if parts:
        scales = scales or [float(scale)] * len(parts)  # type: ignore[arg-type]
        if len(scales) != len(parts):
            raise ValueError(f"{len(scales)} scales for {len(parts)} parts.")
        bounds = np.cumsum([0, *parts])
        pieces = [
            fuse(
                np.atleast_2d(image_semantic)[:, a:b],
                np.atleast_2d(text)[:, a:b],
                text_weight,
                common=None if common is None else np.asarray(common)[a:b],
                scale=piece_scale,
            )
            for a, b, piece_scale in zip(bounds[:-1], bounds[1:], scales, strict=True)
        ]
        return (np.concatenate(pieces, axis=1) / np.sqrt(len(parts))).astype(np.float32)
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must be within [0, 1], got {text_weight}")
    image_semantic = np.atleast_2d(image_semantic)
    text = np.atleast_2d(text)
    if image_semantic.shape != text.shape:
        raise ValueError(f"Cannot fuse image vectors {image_semantic.shape} with text vectors {text.shape}.")
    if scales is not None:
        if len(scales) != 1:
            raise ValueError(f"{len(scales)} scales for one text space.")
        scale = scales[0]
    words = specific_part(text, common, float(scale))  # type: ignore[arg-type]
    return l2_normalize((1.0 - text_weight) * l2_normalize(image_semantic) + text_weight * words)


#: How a row's texts (title, alt text ...) are joined into the one text that is encoded.
TEXT_JOIN = " . "
#: Whether a text model reads a text is judged on this many characters at most, its beginning: the
#: model reads no more (``MAX_LENGTH`` tokens: 128 for MiniLM, 512 for e5), and ``reads()`` keeps it.
READS_PREFIX = 4096


def fuse_texts(
    encoder: Encoder, semantic: np.ndarray, texts: Sequence[Sequence[str]], text_weight: float
) -> np.ndarray:
    """``semantic`` (one row per image, as the encoder made it) with each row's ``texts`` fused in
    (``fuse``, with the encoder's common direction, parts and scales): into each part of the space
    the texts that part's text model reads (``Encoder.reads_parts``), joined. A part that reads
    none of a row's texts keeps the picture alone: a text model's vector of words in a script it
    cannot read is noise, which only moved the picture away from every query."""
    semantic = np.atleast_2d(semantic)
    parts = tuple(encoder.semantic_parts or ())
    bounds = np.cumsum([0, *(parts or (semantic.shape[1],))])
    joined = []  # per row, per part: the texts it reads, joined ("" for none)
    for row in texts:
        reads = [encoder.reads_parts(text[:READS_PREFIX]) for text in row]
        joined.append(
            [TEXT_JOIN.join(t for t, r in zip(row, reads, strict=True) if r[p]) for p in range(len(bounds) - 1)]
        )
    unique = sorted({text for row in joined for text in row if text})
    if not unique:
        return semantic
    encoded = dict(zip(unique, encoder.encode_texts(unique), strict=True))
    words = np.zeros_like(semantic, dtype=np.float32)
    for i, row in enumerate(joined):
        for p, text in enumerate(row):
            if text:
                words[i, bounds[p] : bounds[p + 1]] = encoded[text][bounds[p] : bounds[p + 1]]
    with_text = [i for i, row in enumerate(joined) if any(row)]
    out = semantic.copy()
    out[with_text] = fuse(
        semantic[with_text],
        words[with_text],
        text_weight,
        common=getattr(encoder, "common_text_direction", None),
        parts=parts or None,
        scale=encoder.common_scales or COMMON_SCALE,
    )
    alone = normalize_parts(semantic, parts or None)  # what weight 0 gives: the picture alone
    for i in with_text:
        for p, text in enumerate(joined[i]):
            if not text:
                out[i, bounds[p] : bounds[p + 1]] = alone[i, bounds[p] : bounds[p + 1]]
    return out
