"""Thumbnails for a page of images read with their renditions (Wagtail's ``prefetch_renditions``).

Wagtail's ``{% image %}`` tag calls ``image.get_rendition(filter)``, which parses the filter's
spec again for every image and writes each rendition into Wagtail's renditions cache, even one
that the page's query has just read from the database. ``Image.get_renditions`` (the plural,
Wagtail's own) skips that write for prefetched renditions. The chooser's ranked page gives its
images a ``get_rendition`` that goes through it, with one parsed filter per spec for the page:
the same renditions and the same HTML, without a cache write (a pickle of the rendition and its
image, or a round trip to a shared cache) per thumbnail.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any

from wagtail.images.models import Filter


def rendition(image: Any, filters: dict[str, Filter], filter: Filter | str) -> Any:
    """``image.get_rendition(filter)`` through ``get_renditions``; ``filters`` holds the page's
    parsed filters by spec (a plain ``Filter`` of the same spec is taken from it)."""
    if isinstance(filter, str) or type(filter) is Filter:
        spec = filter if isinstance(filter, str) else filter.spec
        if spec not in filters:
            filters[spec] = Filter(spec=spec)
        filter = filters[spec]
    [found] = type(image).get_renditions(image, filter).values()
    return found


def share_renditions(images: Iterable[Any]) -> None:
    """Give each of ``images`` (one page) a ``get_rendition`` going through ``rendition``."""
    filters: dict[str, Filter] = {}
    for image in images:
        image.get_rendition = partial(rendition, image, filters)
