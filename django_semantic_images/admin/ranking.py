"""What the changelist is ranked by: the search box's words, a row's picture, or an uploaded photo.

The visual rankings travel in the query string (``similar_to=<pk>``, ``photo=<token>``),
so pagination, sorting and list filters keep them. An uploaded photo's visual
vector is kept in the editor's own session (float16, about 3.4 KB), under a token.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import models
from django.http import HttpRequest

from ..fields import ImageEmbeddingField

SIMILAR_VAR = "similar_to"
PHOTO_VAR = "photo"
RANKING_VARS = (SIMILAR_VAR, PHOTO_VAR)

SESSION_KEY = "semantic_images:photo_queries"
#: How many uploaded query photos a session remembers.
MAX_STORED_PHOTOS = 5


@dataclass
class VisualRanking:
    """A changelist ranked by likeness to one picture."""

    #: None when there is nothing to compare with (unknown row, expired upload): no results.
    vector: list[float] | None
    #: "similar" (a row of the table) or "photo" (an uploaded picture).
    kind: str
    #: The row whose neighbours are listed, for "similar".
    source: models.Model | None = None
    #: A small data: URL of the uploaded picture, for "photo".
    thumbnail: str = ""
    name: str = ""


def store_photo_query(request: HttpRequest, vector: np.ndarray, *, thumbnail: str, name: str, made_for: str) -> str:
    """Keep an uploaded photo's vector in the session; return its token.

    ``made_for`` names the vectors it was made to be compared with (``field_key``): the session's
    tokens serve every admin, and another model's or field's encoder makes other vectors.
    """
    token = secrets.token_urlsafe(8)
    stored: dict[str, Any] = dict(request.session.get(SESSION_KEY, {}))
    packed = base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")
    stored[token] = {"vector": packed, "thumbnail": thumbnail, "name": name, "made_for": made_for}
    for old in list(stored)[:-MAX_STORED_PHOTOS]:
        del stored[old]
    request.session[SESSION_KEY] = stored
    return token


def field_key(field: ImageEmbeddingField) -> str:
    """What a stored photo vector was made for: the model, the embedding field and its visual dimensions."""
    model = field.model
    assert model is not None  # a field the admin found on its model
    dimensions = getattr(model._meta.get_field(field.visual_field), "dimensions", None)
    return f"{model._meta.label}.{field.name}:{dimensions}"


def load_photo_query(request: HttpRequest, token: str, made_for: str) -> VisualRanking | None:
    """The stored photo query for ``token``, or None when this session has no such token, or
    has it for other vectors than ``made_for`` (another admin's model or field)."""
    entry = request.session.get(SESSION_KEY, {}).get(token)
    if not entry or entry.get("made_for") != made_for:
        return None
    vector = np.frombuffer(base64.b64decode(entry["vector"]), dtype=np.float16).astype(np.float32)
    return VisualRanking(vector=vector.tolist(), kind="photo", thumbnail=entry["thumbnail"], name=entry["name"])
