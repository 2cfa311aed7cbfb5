"""Reading an image safely: bounded size, EXIF orientation, JPEG draft decoding.

Every way a file can be bad ends in ``ImageDecodeError`` with a reason an editor
can read; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import base64
import io
import re
import struct
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .conf import semantic_settings


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; ``str(exc)`` is the reason."""


#: Formats Pillow opens that are never read here: EPS is PostScript, a program that Pillow hands to
#: Ghostscript to draw (an interpreter run on the uploaded bytes, with a history of sandbox escapes).
REFUSED_FORMATS = frozenset({"EPS"})


def readable_formats() -> list[str]:
    """The formats ``Image.open`` may try: every one Pillow (and any plugin registered since) opens,
    except ``REFUSED_FORMATS``."""
    Image.init()
    return [name for name in Image.OPEN if name not in REFUSED_FORMATS]


#: How many times its shorter side an image's longer side may be when the CNN's input is made from
#: it. The CNN reads a centred square of the shorter side, so the ends of a longer panorama or strip
#: are cut off before the resize, which would otherwise scale them too (a 1 x 1024 strip resized to
#: 256 x 262,144 pixels: 200 MB and 0.4 s for one search by photo).
MAX_ASPECT = 4


def centre_box(width: int, height: int, max_aspect: int = MAX_ASPECT) -> tuple[int, int, int, int] | None:
    """The centred (left, top, right, bottom) part of a ``width`` x ``height`` image whose longer side is
    at most ``max_aspect`` times its shorter side; None when the whole image is."""
    short, long = min(width, height), max(width, height)
    if long <= max_aspect * short:
        return None
    start = (long - max_aspect * short) // 2
    end = start + max_aspect * short
    return (start, 0, end, height) if width > height else (0, start, width, end)


#: An ICO file's first bytes (reserved 0, type 1: icon) and a PNG's.
ICON_MAGIC = b"\0\0\1\0"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def icon_image_sizes(data: bytes) -> list[tuple[int, int]]:
    """The sizes an ICO file's images give in their own headers (a PNG's, a bitmap's), not in the
    file's directory (at most 256 x 256); empty for any other file. Pillow decodes an icon's
    largest image as it opens the file, before its size can be asked."""
    if not data.startswith(ICON_MAGIC) or len(data) < 6:
        return []
    (count,) = struct.unpack_from("<H", data, 4)
    sizes = []
    for entry in range(6, min(6 + 16 * count, len(data) - 15), 16):
        (offset,) = struct.unpack_from("<I", data, entry + 12)
        head = data[offset : offset + 24]
        if head.startswith(PNG_MAGIC) and len(head) == 24:
            width, height = struct.unpack_from(">II", head, 16)
        elif len(head) >= 12 and struct.unpack_from("<I", head)[0] == 12:  # OS/2 bitmap header
            width, height = struct.unpack_from("<HH", head, 4)
        elif len(head) >= 12:  # Windows bitmap header: its height counts the mask too
            width, height = (abs(side) for side in struct.unpack_from("<ii", head, 4))
        else:
            continue
        sizes.append((width, height if head.startswith(PNG_MAGIC) else height // 2))
    return sizes


def refuse_large_icon(data: bytes, max_pixels: int) -> None:
    """``ImageDecodeError`` for an ICO file holding an image over ``max_pixels``, before Pillow
    opens (and so decodes) it."""
    for width, height in icon_image_sizes(data):
        if width * height > max_pixels:
            raise ImageDecodeError(f"The image is {width}x{height} pixels, over the limit of {max_pixels:,} pixels.")


#: Pillow's formats that are JPEGs, decoded in draft mode: "MPO" is a JPEG with more pictures after
#: its main one (an MPF index: a phone's HDR gain map or depth map), as many phones now write.
JPEG_FORMATS = frozenset({"JPEG", "MPO"})


# Pillow's DecompressionBombError: "Image size (N pixels) exceeds limit of M pixels, ..."
PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")


def decode_image(
    data: bytes,
    *,
    min_side: int = 256,
    max_side: int = 1024,
    max_pixels: int = 50_000_000,
) -> Image.Image:
    """Decode ``data`` into an upright RGB image whose longest side is at most ``max_side``.

    JPEGs are decoded in draft mode at the smallest DCT scale that keeps the
    shorter side at least ``min_side``, so a 12-megapixel photo is never
    decoded at full size. Images over ``max_pixels`` are refused before decoding, with
    a message naming ``max_pixels`` (not Pillow's own ``Image.MAX_IMAGE_PIXELS``).
    """
    if not data:
        raise ImageDecodeError("The file is empty (0 bytes).")
    refuse_large_icon(data, max_pixels)
    try:
        # No warnings filter here: warnings.catch_warnings() changes process-wide state and is not
        # thread-safe (decoding runs in a thread pool). The pixel count is checked before any pixel
        # is decoded instead; Pillow's own bomb check (Image.MAX_IMAGE_PIXELS) still raises
        # DecompressionBombError above twice its limit.
        opened = Image.open(io.BytesIO(data), formats=readable_formats())
        width, height = opened.size
        if width * height > max_pixels:
            raise ImageDecodeError(f"The image is {width}x{height} pixels, over the limit of {max_pixels:,} pixels.")
        if width < 1 or height < 1:
            raise ImageDecodeError("The image has no pixels.")
        if opened.format in JPEG_FORMATS:
            scale = max(1, min(width, height) // max(min_side, 1))
            opened.draft("RGB", (max(1, width // scale), max(1, height // scale)))
        opened.load()
        image = ImageOps.exif_transpose(opened)
        if image.mode != "P" and keyed_transparency(image):  # before the resize, which would blend the key colour in
            image = image.convert("RGBA")
        if image.mode.startswith("I;16"):  # Pillow's reduce(), thumbnail()'s first step at 4x, refuses them
            image = to_8bit(image)
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
        return to_rgb(image)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("The file is not an image in a format we can read.") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(bomb_message(str(exc), max_pixels)) from None
    except Exception as exc:  # noqa: BLE001 - any format plugin's failure on bad bytes
        # OSError, SyntaxError, ValueError, EOFError, MemoryError ... and what a plugin raises
        # besides: Pillow's AVIF decoder a RuntimeError ("Decoding of color planes failed"), its DDS
        # plugin a NotImplementedError ("Unknown pixel format flags").
        raise ImageDecodeError(f"The image data is truncated or corrupt: {exc}") from None


def bomb_message(pillow_message: str, max_pixels: int) -> str:
    """The reason for an image Pillow refused as a decompression bomb, naming ``max_pixels``."""
    found = PILLOW_PIXELS.search(pillow_message)
    if found is None:
        return f"The image has too many pixels, over the limit of {max_pixels:,} pixels."
    pixels = int(found.group(1))
    if pixels > max_pixels:
        return f"The image has {pixels:,} pixels, over the limit of {max_pixels:,} pixels."
    # max_pixels is above Pillow's own hard limit (twice PIL.Image.MAX_IMAGE_PIXELS).
    ceiling = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    return (
        f"The image has {pixels:,} pixels, over Pillow's limit of {ceiling:,} pixels "
        "(twice PIL.Image.MAX_IMAGE_PIXELS, which the site must raise to accept it)."
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white, and 16-bit and float grey scaled to 8 bits."""
    if image.mode == "RGB" and not keyed_transparency(image):
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = to_8bit(image)
    if image.mode in ("RGBA", "LA") or keyed_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def keyed_transparency(image: Image.Image) -> bool:
    """Whether ``image`` has no alpha but names a transparent palette index or colour (a GIF's, or a
    PNG's tRNS chunk, which an RGB or grey PNG uses for one colour)."""
    return image.mode in ("P", "L", "RGB") and "transparency" in image.info


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit grey (``L``), its range scaled, not clipped.

    Pillow's own conversion clips at 255, which turns a 16-bit PNG or TIFF white. The range:
    16 bits for ``I;16`` modes, and for ``I`` when a value is over 255; 0-1 for ``F`` unless a
    value is over 1 (then its brightest value).
    """
    wide = image if image.mode in ("I", "F") else image.convert("I")
    extrema: Any = wide.getextrema()  # (lowest, highest) of the one band
    high = float(extrema[1])
    if image.mode.startswith("I;16") or (wide.mode == "I" and high > 255):
        top = 65535.0 if high <= 65535 else high
    elif wide.mode == "F":
        top = 1.0 if high <= 1.0 else high
    else:
        top = 255.0
    scale = 255.0 / top if top > 0 else 1.0
    return wide.point(lambda v: v * scale).convert("L")


def read_bytes(source: IO[bytes] | bytes | str, max_bytes: int | None = None) -> bytes:
    """All bytes of a file object, path or buffer, refusing more than ``max_bytes``."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str):
        with open(source, "rb") as fh:
            data = fh.read(max_bytes + 1 if max_bytes else -1)
    else:
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except (OSError, ValueError):
                pass
        data = source.read(max_bytes + 1 if max_bytes else -1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageDecodeError(f"The file is larger than the limit of {max_bytes:,} bytes.")
    return data


def load_query_image(source: IO[bytes] | bytes | str | Image.Image, **limits: int) -> Image.Image:
    """A query image from a PIL image, a path, bytes or an uploaded file."""
    if isinstance(source, Image.Image):
        return to_rgb(ImageOps.exif_transpose(source))
    max_bytes = limits.pop("max_bytes", None)
    return decode_image(read_bytes(source, max_bytes), **limits)


#: ``query_image``'s default byte limit: the ``MAX_UPLOAD_BYTES`` setting.
UPLOAD_LIMIT = -1


def query_image(source: IO[bytes] | bytes | str | Image.Image, *, max_bytes: int | None = UPLOAD_LIMIT) -> Image.Image:
    """A query image (search by photo) within the site's limits: ``MAX_IMAGE_SIDE`` and
    ``MAX_IMAGE_PIXELS``, and ``max_bytes`` (``MAX_UPLOAD_BYTES`` unless given; None: the
    file's size is not limited, e.g. a path the site's own code names).

    The one way the admin, the API and the ranking expressions read a query image;
    bad input raises :class:`ImageDecodeError` with a message for the person who sent it.
    """
    limits = dict(max_side=int(semantic_settings.MAX_IMAGE_SIDE), max_pixels=int(semantic_settings.MAX_IMAGE_PIXELS))
    if max_bytes is not None:
        limits["max_bytes"] = int(semantic_settings.MAX_UPLOAD_BYTES) if max_bytes == UPLOAD_LIMIT else max_bytes
    return load_query_image(source, **limits)


def preview_data_url(image: Image.Image, side: int = 160) -> str:
    """A small JPEG of ``image`` (a query image) as a ``data:`` URL: the picture a search by photo
    shows above its results, kept in the session, never stored as a file."""
    small = to_rgb(image.copy())
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
