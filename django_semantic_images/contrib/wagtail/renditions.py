"""Thumbnails for a page of images read with their renditions (Wagtail's ``prefetch_renditions``).

Wagtail's ``{% image %}`` tag calls ``image.get_rendition(filter)``, which parses the filter's
spec again for every image and writes each rendition into Wagtail's renditions cache, even one
that the page's query has just read from the database. ``Image.get_renditions`` (the plural,
Wagtail's own) skips that write for prefetched renditions. The chooser's ranked page gives its
images a ``get_rendition`` that goes through it, with one parsed filter per spec for the page:
the same renditions and the same HTML, without a cache write (a pickle of the rendition and its
image, or a round trip to a shared cache) per thumbnail.

Wagtail's tag draws an image whose file is missing as "not found", but lets through the error of a
file that is present and cannot be read (cut short, corrupt: the images the embeddings report lists
as failed), a 500 for the whole page. ``guard_renditions`` draws those as missing ones too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from PIL import Image
from wagtail.images.models import Filter, SourceImageIOError

logger = logging.getLogger(__name__)

#: What a rendition of a file that is present but unreadable raises: Pillow's "image file is
#: truncated" and Willow's unrecognised format (both ``OSError``), other decoders' errors.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


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


def not_found(image: Any) -> Any:
    """The rendition Wagtail's image tag draws for a missing file (``get_rendition_or_not_found``)."""
    found = image.renditions.model(image=image, width=0, height=0)
    found.file.name = "not-found"
    return found


def readable_rendition(get_rendition: Callable[[Any], Any], image: Any, filter: Filter | str) -> Any:
    """``get_rendition(filter)``, or ``not_found(image)`` when its file cannot be read (logged)."""
    try:
        return get_rendition(filter)
    except SourceImageIOError:
        raise  # a missing file: Wagtail's tag draws it as not found itself
    except UNREADABLE as exc:
        logger.warning("The file of image %s cannot be read for a rendition: %s", image.pk, exc)
        return not_found(image)


def guard_renditions(images: Iterable[Any]) -> None:
    """Draw each of ``images`` whose file cannot be read as Wagtail draws a missing one, instead of
    failing the page (its ``get_rendition`` goes through ``readable_rendition``)."""
    for image in images:
        image.get_rendition = partial(readable_rendition, image.get_rendition, image)
