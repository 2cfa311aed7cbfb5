"""Thumbnails of stored images, made by sorl-thumbnail (the ``thumbnails`` extra) when the site
installs it: the API's ``thumbnail_url``, the admin's thumbnails and the example's public page.

A thumbnail fits in a ``THUMBNAIL_SIZE`` square (never enlarged) and is made on first use, then
served from storage: sorl-thumbnail's key-value store (by default its database table behind
Django's cache) remembers it. Without ``sorl.thumbnail`` in ``INSTALLED_APPS`` there are none.
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps

from .conf import semantic_settings

logger = logging.getLogger(__name__)

#: The app a site adds to ``INSTALLED_APPS`` to have thumbnails.
SORL_APP = "sorl.thumbnail"


def thumbnails_enabled() -> bool:
    """Whether sorl-thumbnail is installed and in ``INSTALLED_APPS`` (its store needs its table)."""
    return apps.is_installed(SORL_APP)


def thumbnail_geometry() -> str:
    """sorl-thumbnail's geometry for ``THUMBNAIL_SIZE``: fit in that square, keep the proportions."""
    size = int(semantic_settings.THUMBNAIL_SIZE)
    return f"{size}x{size}"


def thumbnail_url(file: Any) -> str | None:
    """The URL of ``file``'s thumbnail, made now if it is not stored yet; None when there are no
    thumbnails (sorl-thumbnail not installed), no file, or a file that is missing or not an image.

    A failure is logged, never raised: a listing shows the rest of its pictures.
    """
    if not file or not thumbnails_enabled():
        return None
    from sorl.thumbnail import get_thumbnail

    try:
        thumbnail = get_thumbnail(file, thumbnail_geometry(), upscale=False)
        # sorl-thumbnail answers a source it cannot read with an image that was never made
        # (and has no size): that is no thumbnail.
        if thumbnail.size is None:
            return None
        return thumbnail.url
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on a broken file; a listing must go on
        logger.warning("No thumbnail for %s.", getattr(file, "name", file), exc_info=True)
        return None
