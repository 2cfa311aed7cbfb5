"""Checks on the raw query string: valid UTF-8, no parameter the endpoint does not know, each
single-valued parameter given once, no empty filter, numbers written as the schema says, and
true/false filters given true or false."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

from rest_framework.exceptions import ValidationError

# What the OpenAPI schema's ``integer`` and ``number`` mean in a query string: ASCII digits,
# an optional leading '-', for numbers a decimal point and exponent. Python's int()/float() and
# Django's form fields also take " 5", "+5", "5_0", "٥", "1.0" (an integer field), "nan", "inf".
INTEGER = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
INTEGER_MESSAGE = "{name} must be a whole number: ASCII digits, optionally after a '-'."
NUMBER_MESSAGE = "{name} must be a plain decimal number such as 0.25 or -1."
TOO_LONG_MESSAGE = "{name} has too many digits to be read as a whole number."
INTEGER_LIST_MESSAGE = "{name} must be whole numbers separated by commas, such as 3,5 or -1,7."
BOOLEAN_MESSAGE = "{name} must be true or false."
NUMBER_LIST_MESSAGE = "{name} must be plain decimal numbers separated by commas, such as 0.25,-1."
NOT_UTF8_MESSAGE = "{name} is not valid UTF-8; percent-encode UTF-8 bytes."


def strict_integer(name: str, raw: str, message: str | None = None) -> int:
    """``raw`` as an int if it is written as the schema's ``integer``, else a 400 naming ``name``."""
    if INTEGER.fullmatch(raw) is None:
        raise ValidationError({name: [message or INTEGER_MESSAGE.format(name=name)]})
    try:
        return int(raw)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits(), 4,300)
        raise ValidationError({name: [TOO_LONG_MESSAGE.format(name=name)]}) from None


def strict_number(name: str, raw: str, message: str | None = None) -> float:
    """``raw`` as a finite float if it is written as the schema's ``number``, else a 400 naming ``name``."""
    value = float(raw) if NUMBER.fullmatch(raw) is not None else None
    if value is None or value in (float("inf"), float("-inf")):  # 1e999 overflows
        raise ValidationError({name: [message or NUMBER_MESSAGE.format(name=name)]})
    return value


def ensure_numeric(
    params: Any, integers: Iterable[str], numbers: Iterable[str] = (), lists: Collection[str] = ()
) -> None:
    """Refuse any value of an ``integer`` or ``number`` parameter not written as the schema says;
    a parameter in ``lists`` is a comma-separated list of them (``?ids=3,5``), each checked."""
    checks = ((integers, strict_integer, INTEGER_LIST_MESSAGE), (numbers, strict_number, NUMBER_LIST_MESSAGE))
    for names, strict, list_message in checks:
        for name in names:
            for raw in params.getlist(name):
                if name not in lists:
                    strict(name, raw)
                    continue
                for item in raw.split(","):  # as django-filter's BaseCSVWidget splits it
                    strict(name, item, list_message.format(name=name))


def ensure_boolean(params: Any, widgets: Iterable[tuple[str, Any]]) -> None:
    """Refuse a value of a true/false filter that its widget reads as neither: django-filter then
    leaves the filter out, so ``?published=yes`` would silently list every row."""
    for name, widget in widgets:
        for raw in params.getlist(name):
            if widget.value_from_datadict({name: raw}, {}, name) is None:
                raise ValidationError({name: [BOOLEAN_MESSAGE.format(name=name)]})


def ensure_utf8(request: Any) -> None:
    """Refuse a query string whose percent-decoded bytes are not UTF-8, naming the first parameter
    whose value is not (``not_utf8_names``).

    Django decodes such bytes with replacement characters, which would silently
    search for the wrong words.
    """
    for name in not_utf8_names(request.META.get("QUERY_STRING", "")):
        if name is None:
            raise ValidationError({"detail": NOT_UTF8_MESSAGE.format(name="The query string")})
        raise ValidationError({name: [NOT_UTF8_MESSAGE.format(name=name)]})


def not_utf8_names(raw: str) -> Iterator[str | None]:
    """The name of each parameter of the query string ``raw`` whose percent-decoded value is not
    UTF-8, in order; None for one whose name is not UTF-8 (or empty) either."""
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "surrogateescape")
    for part in data.replace(b"+", b" ").split(b"&"):
        try:
            unquote_to_bytes(part).decode("utf-8")
        except UnicodeDecodeError:
            try:
                yield unquote_to_bytes(part.partition(b"=")[0]).decode("utf-8") or None
            except UnicodeDecodeError:
                yield None


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
