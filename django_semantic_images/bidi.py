"""Sentences that name something a user typed (a title, a file name, an id), as HTML.

A right-to-left name (Arabic, Hebrew) put into a left-to-right sentence as plain text takes the
quotes and punctuation around it into its own direction, scrambling the sentence. Each name goes
in a ``<bdi>`` (as the templates do), escaped, so the messages and form errors built in Python
read as the sentence says and carry no markup of their own.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeData, SafeString, mark_safe


def isolate(value: object) -> SafeString:
    """``value`` escaped, in a ``<bdi>``."""
    return format_html("<bdi>{}</bdi>", value)


def name_in_sentence(text: str, names: Mapping[str, object], values: Mapping[str, object] | None = None) -> SafeString:
    """``text % {...}`` (a translated sentence with ``%(key)s`` placeholders) as safe HTML: the
    sentence and each of ``values`` escaped, each of ``names`` escaped and isolated (``isolate``).
    Numbers in ``values`` stay numbers, for ``%(n)d``."""
    filled: dict[str, object] = {key: isolate(value) for key, value in names.items()}
    for key, value in (values or {}).items():
        if isinstance(value, (int, float)):
            filled[key] = value
        else:
            filled[key] = conditional_escape(value if isinstance(value, (str, SafeData)) else str(value))
    return mark_safe(conditional_escape(text) % filled)  # every part is escaped above
