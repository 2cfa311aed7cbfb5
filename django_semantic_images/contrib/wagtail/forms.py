"""An image form base whose file field refuses a truncated or corrupt image with a form error.

Wagtail's image field reads the upload's size with Pillow; a file that is cut short (an interrupted
upload, a broken camera card) raises ``OSError`` there, which Wagtail does not catch: the editor
gets a server error and, in a multiple upload, that file's row fails without a reason. With

    WAGTAILIMAGES_IMAGE_FORM_BASE = "django_semantic_images.contrib.wagtail.forms.ImageForm"

the same upload is refused with "The file is not a readable image (...)" under the field, and
the other files of a multiple upload go on. Files Wagtail accepts but this app cannot decode are
saved and marked ``failed`` with the reason (docs/wagtail.md).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from wagtail.images.fields import WagtailImageField
from wagtail.images.forms import BaseImageForm


class ReadableImageField(WagtailImageField):
    """Wagtail's image field; a file Pillow cannot read to the end is a validation error,
    whatever Pillow or its format plugin raises."""

    def check_image_pixel_size(self, f: Any) -> None:
        try:
            super().check_image_pixel_size(f)
        except ValidationError:
            raise  # Wagtail's own: too many pixels
        except Exception as exc:  # noqa: BLE001 - OSError "image file is truncated", AVIF's RuntimeError ...
            raise ValidationError(
                _("The file is not a readable image (%(reason)s). Upload it again, or another copy."),
                code="invalid_image",
                params={"reason": exc},
            ) from exc


class ImageForm(BaseImageForm):
    """Wagtail's image form with :class:`ReadableImageField` as its file field."""

    file = ReadableImageField(label=capfirst(_("file")))
