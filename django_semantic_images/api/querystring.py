"""Checks on the raw query string: valid UTF-8, no parameter the endpoint does not know, each
single-valued parameter given once, and no empty filter."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

from rest_framework.exceptions import ValidationError


def ensure_utf8(request: Any) -> None:
    """Refuse a query string whose percent-decoded bytes are not UTF-8.

    Django decodes such bytes with replacement characters, which would silently
    search for the wrong words.
    """
    raw = request.META.get("QUERY_STRING", "")
    if not raw:
        return
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "surrogateescape")
    for part in data.replace(b"+", b" ").split(b"&"):
        try:
            unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            message = "The query string is not valid UTF-8; percent-encode UTF-8 bytes."
            raise ValidationError({"detail": message}) from None


def ensure_known(params: Iterable[str], allowed: Iterable[str], where: str = "query string") -> None:
    """Refuse parameters outside ``allowed``, naming them and the ones that are accepted."""
    allowed = set(allowed)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValidationError(
            {
                "detail": f"Unsupported parameter(s) in the {where}: {', '.join(unknown)}. "
                f"Accepted: {', '.join(sorted(allowed)) or 'none'}."
            }
        )


def ensure_filled(params: Any, names: Iterable[str]) -> None:
    """Refuse an empty value for a filter parameter (django-filter would silently ignore it)."""
    empty = sorted(name for name in names if name in params and not any(v.strip() for v in params.getlist(name)))
    if empty:
        raise ValidationError({name: ["This filter is empty; leave it out or give a value."] for name in empty})


def ensure_single(params: Any, names: Iterable[str]) -> None:
    """Refuse a single-valued parameter given more than once (``?owner=3&owner=``).

    Django's ``QueryDict.get`` and django-filter read only the last value, so a repeat
    would silently replace the first: widen a filtered search, or search for other words.
    """
    repeated = {name: len(params.getlist(name)) for name in names if len(params.getlist(name)) > 1}
    if repeated:
        raise ValidationError(
            {name: [f"Give {name} once; it was given {count} times."] for name, count in sorted(repeated.items())}
        )
