"""sorl-thumbnail's Pillow engine, which also reads greyscale images of more than 8 bits, and never EPS.

Pillow opens a 16-bit greyscale PNG (or TIFF) as mode ``"I;16"`` (some as ``"I"``), a float TIFF as
``"F"``, and sorl-thumbnail converts them to RGB as they are: Pillow clips every value above 255
(nearly all of a 16-bit picture: all white) and rounds floats from 0 to 1 to black. sorl-thumbnail
has no option for it, so this subclass scales them to 8 bits first, as the pipeline reads them
(``imaging.to_8bit``). sorl-thumbnail turns a picture upright by its EXIF orientation only where
Pillow offers ``_getexif()`` (JPEG, PNG, WebP): an AVIF (whose rotation Pillow gives as that tag)
came out on its side; this engine turns it too. A transparent file under a photo's extension (a PNG
saved as ``.jpg``, an ``.ico``), whose thumbnail is a JPEG (``thumbnails.TRANSPARENT_FORMATS``), is
put onto white, as the pipeline does (sorl-thumbnail's own engine made the transparent part black).
Everything else is sorl-thumbnail's own. A site opts in with
``THUMBNAIL_ENGINE = "django_semantic_images.thumbnail_engine.Engine"`` (the example site does);
the app does not swap sorl-thumbnail's engine behind the site's back.

It opens only the formats the pipeline reads (``imaging.readable_formats``): not EPS, which
Pillow draws by running Ghostscript on the file's PostScript; and, as the pipeline, no file over
``MAX_FILE_BYTES`` (not read: its storage is asked for the size first) and no image over
``MAX_IMAGE_PIXELS`` (sorl-thumbnail decodes the whole picture, in the request that lists it first:
a 150-megapixel panorama needs some 450 MB, 3 bytes a pixel). Such a file gets no thumbnail.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import ExifTags, Image, ImageOps
from sorl.thumbnail.engines.pil_engine import Engine as PillowEngine

from .conf import semantic_settings
from .imaging import ImageDecodeError, readable_formats, refuse_large_icon, to_8bit, to_rgb

#: Pillow's modes of greyscale wider than 8 bits: 16-bit, 32-bit integers ("I", as Pillow opens some
#: 16-bit files) and floats ("F"), scaled to 8 bits as ``imaging.to_8bit`` does.
WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
#: Pillow's modes with an alpha channel (a palette or colour key is ``"transparency"`` in ``info``).
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class Engine(PillowEngine):
    """sorl-thumbnail's ``pil_engine.Engine``, with wide greyscale scaled to 8 bits (mode ``"L"``, as the pipeline),
    every format's orientation tag followed, and the formats of ``readable_formats`` only."""

    def get_image(self, source: Any) -> Image.Image:
        """The source opened (not decoded yet, unless turned upright by its orientation tag); an
        ``ImageDecodeError`` over ``MAX_FILE_BYTES`` (not read) or ``MAX_IMAGE_PIXELS``."""
        data = read_within_limit(source, int(semantic_settings.MAX_FILE_BYTES))
        limit = int(semantic_settings.MAX_IMAGE_PIXELS)
        refuse_large_icon(data, limit)
        image: Image.Image = Image.open(io.BytesIO(data), formats=readable_formats())
        width, height = image.size
        if width * height > limit:
            raise ImageDecodeError(f"The image is {width}x{height} pixels, over the limit of {limit:,} pixels.")
        if not hasattr(image, "_getexif") and image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            # sorl-thumbnail reads the orientation through _getexif() (JPEG, PNG, WebP): turn the
            # others (an AVIF's rotation) upright here, as the pipeline does (exif_transpose).
            image = ImageOps.exif_transpose(image)
        return image

    def _colorspace(self, image: Image.Image, colorspace: str, format: str) -> Any:  # noqa: A002 - sorl's name
        if image.mode in WIDE_GREY:
            image = to_8bit(image)
        if colorspace == "RGB" and format == "JPEG" and (image.mode in ALPHA_MODES or "transparency" in image.info):
            image = to_rgb(image.convert("RGBA"))  # onto white, as the pipeline; sorl-thumbnail's RGB made it black
        return super()._colorspace(image, colorspace, format)


def read_within_limit(source: Any, limit: int) -> bytes:
    """sorl-thumbnail's ``source.read()``, unless the file is over ``limit`` bytes (``MAX_FILE_BYTES``):
    then an ``ImageDecodeError``, its storage asked for the size first (as the pipeline does), so such a
    file is not read into the web process; one whose storage cannot say is refused once read."""
    storage, name = getattr(source, "storage", None), getattr(source, "name", None)
    size = None
    if storage is not None and name:
        try:
            size = int(storage.size(name))
        except NotImplementedError:
            size = None
    if size is not None and size > limit:
        raise ImageDecodeError(f"The image file is {size:,} bytes; the limit is {limit:,} bytes (MAX_FILE_BYTES).")
    data = source.read()
    if len(data) > limit:
        raise ImageDecodeError(f"The image file is over the limit of {limit:,} bytes (MAX_FILE_BYTES).")
    return data
