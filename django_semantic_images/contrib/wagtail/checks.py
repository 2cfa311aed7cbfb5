"""System checks of the Wagtail integration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Tags, register
from django.core.checks import Warning as CheckWarning
from django.utils.module_loading import import_string

from ...checks import photo_search_session_check
from .forms import ReadableImageField

FORM_BASE = "django_semantic_images.contrib.wagtail.forms.ImageForm"


@register(Tags.compatibility)
def image_form_base(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W006: Wagtail's image form lets a file Pillow cannot read to the end through as a server
    error (single upload) or a row failed without a reason (multiple upload); this app's form base
    refuses it with the reason under the field."""
    base = getattr(settings, "WAGTAILIMAGES_IMAGE_FORM_BASE", "")
    try:
        form = import_string(base) if base else None
    except ImportError:
        return []  # Wagtail itself fails on it, with its own message
    if isinstance(getattr(form, "declared_fields", {}).get("file"), ReadableImageField):
        return []
    return [
        CheckWarning(
            "Wagtail's image upload answers a truncated or corrupt file with a server error.",
            hint=f'Set WAGTAILIMAGES_IMAGE_FORM_BASE = "{FORM_BASE}" (or declare '
            "file = ReadableImageField(...) from the same module on your own form base), so that such a "
            "file is refused with the reason under the field.",
            id="semantic_images.W006",
        )
    ]


@register(Tags.compatibility)
def photo_search_sessions(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W008: the Images listing's search by photo needs a session stored on the server."""
    return photo_search_session_check("Wagtail's Images listing (search by photo)")
