"""Object ids as a caller wrote them, kept only where a model's primary key can hold them.

A forged id that no row can have (text or a UUID on an integer key, a NUL character) would
reach a filter as given and fail there (a ``ValueError``, or PostgreSQL refusing a NUL): a 500.
Left out, it finds nothing, as an id that no row has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models


def well_formed_keys(model: type[models.Model], values: Iterable[Any]) -> list[Any]:
    """``values`` as ``model``'s primary key reads them (``to_python``), without those it cannot hold."""
    field = model._meta.pk
    assert field is not None
    keys = []
    for value in values:
        if isinstance(value, str) and "\x00" in value:
            continue
        try:
            keys.append(field.to_python(value))
        except (ValidationError, ValueError, TypeError):
            continue
    return keys
