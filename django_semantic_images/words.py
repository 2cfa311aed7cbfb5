"""Search words: read as every search reads them (``search_words``), refused when too long
(``too_long``), matched as keywords (``keyword_matches``, in either Unicode form: ``spellings``)
where the text model cannot read them, with a note saying so (``unreadable_note``)."""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Iterable, Sequence
from functools import reduce

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Q
from django.db.models.constants import LOOKUP_SEP
from django.utils.translation import gettext as _

from .conf import semantic_settings
from .encoders.text import BLANK_RUN, letter_scripts


def keyword_matches(queryset: models.QuerySet, words: str, fields: Sequence[str]) -> models.QuerySet:
    """The rows of ``queryset`` holding every whitespace-separated term of ``words`` in one of
    ``fields`` (``icontains``, the term composed or decomposed: a text stored in NFD is found by
    words read in NFC; no fields: no rows), each row once. A field across a relation
    (``tags__name``) is matched per term in a subquery, so each term may match another related
    row (a photo tagged "кот" and "собака" is found by "кот собака"; one join shared by every
    term wanted a single tag holding both)."""
    terms = words.split()
    if not fields or not terms:
        return queryset.none()
    direct = [name for name in fields if LOOKUP_SEP not in name]
    related = [name for name in fields if LOOKUP_SEP in name]
    rows = queryset.model._base_manager.all()
    match = Q()
    for term in terms:
        forms = spellings(term)
        found = [Q(**{f"{name}__icontains": form}) for name in direct for form in forms]
        if related:
            across = reduce(operator.or_, (Q(**{f"{name}__icontains": form}) for name in related for form in forms))
            found.append(Q(pk__in=rows.filter(across).values("pk")))
        match &= reduce(operator.or_, found)
    return queryset.filter(match)


def spellings(words: str) -> list[str]:
    """``words`` (read composed, as ``search_words`` reads them) and, where it differs, their
    decomposed form (NFD: "e" and a combining accent, as macOS file names and some imports store
    "é"): the forms a keyword match looks for, since a stored text is compared as it is."""
    return list(dict.fromkeys((words, unicodedata.normalize("NFD", words))))


def keyword_columns(model: type[models.Model], paths: Sequence[str]) -> list[str]:
    """The ``paths`` (an embedding field's ``text_fields``) that name a column of ``model`` or of a
    row it leads to, which a keyword match can filter on: a property of the model (which
    ``text_fields`` takes too) is none, and is left out."""
    found = []
    for path in paths:
        current = model
        try:
            for part in path.split(LOOKUP_SEP):
                field = current._meta.get_field(part)
                current = field.related_model if isinstance(field.related_model, type) else current
        except FieldDoesNotExist:
            continue
        found.append(path)
    return found


#: The first words of Unicode letter names that are acronyms, kept as written in a note.
SCRIPT_ACRONYMS = frozenset({"CJK", "NKO"})


def search_words(text: str) -> str:
    """``text`` as every search takes it: in Unicode's composed form (NFC: "e" and a combining
    acute accent are "é", as stored texts are written), each run of blank characters
    (``BLANK_CLASS``: whitespace, NUL, zero-width) one space, the ends trimmed; "" for blank text
    (nothing to search for). One text, one query vector (and cache entry), language and keyword match.

    Text holding a lone surrogate (U+D800-U+DFFF: no character, which no text model can read) is a
    ``ValueError``; the search boxes and the APIs never pass one (their requests are UTF-8).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"The search text is not valid Unicode: it holds a lone surrogate ({ascii(text[exc.start])})."
        ) from None
    return BLANK_RUN.sub(" ", unicodedata.normalize("NFC", text)).strip(" ")


def too_long(name: str, words: Iterable[str]) -> str | None:
    """The message of a 400 naming ``name`` when one of ``words`` (the search texts sent as ``name``)
    is longer than ``MAX_QUERY_LENGTH`` (the admin's and Wagtail's search boxes, as the APIs), else None.
    In the active language, as the pages that show it."""
    limit = int(semantic_settings.MAX_QUERY_LENGTH)
    if any(len(text) > limit for text in words):
        return _("%(name)s: the search text is longer than %(limit)d characters.") % {"name": name, "limit": limit}
    return None


def unreadable_note(words: str, fields: Sequence[str]) -> str:
    """What a search whose script the text model cannot read says it did instead (for words in
    Latin letters the model does not know, e.g. fullwidth ones, that it does not know them), in
    the active language."""
    # Unicode's names in title case ("CYRILLIC" as "Cyrillic"), acronyms as written ("CJK").
    names = {s if s in SCRIPT_ACRONYMS else s.title() for s in letter_scripts(words)}
    scripts = sorted(names - {"Latin"})
    where = ", ".join(f.rsplit("__", 1)[-1] for f in fields) if fields else _("no text field")
    if not scripts:
        return _(
            "The text model does not know most of these words' letters, so they were matched as keywords "
            "in %(fields)s (results not ranked by meaning)."
        ) % {"fields": where}
    return _(
        "The text model cannot read %(scripts)s script, so these words were matched as keywords "
        "in %(fields)s (results not ranked by meaning)."
    ) % {"scripts": ", ".join(scripts), "fields": where}
