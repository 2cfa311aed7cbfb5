"""JPEGs decoded on the GPU (a GPU worker): torchvision's ``decode_jpeg`` on the device.

On a GPU worker the CNN takes a millisecond or two per image and decoding on the CPU
sets the pace (a 12 MP JPEG entropy-decodes in ~14 ms on one core, even at 1/8 scale).
nvJPEG decodes a batch of JPEGs on the device; the full-size pictures are then turned
upright, resized (bicubic, antialiased, like Pillow's) and cropped there, and go to the
CNN without coming back to the host.

Pillow still reads every file's header first, so the limits and the reasons are those
of ``imaging.decode_image``: an image over ``MAX_IMAGE_PIXELS`` is refused before any
pixel is decoded, and its EXIF orientation is read there. Only baseline RGB or greyscale
JPEGs go to the device; everything else (PNG, WebP, CMYK or progressive JPEGs), and any
file the device decoder rejects, is decoded by Pillow as before, so a bad file still
fails with a reason an editor can read.

The vectors differ a little from the CPU path's (that one decodes at a reduced DCT scale
before resizing); ``benchmarks/gpu.sh`` measures by how much. Testable on a CPU: the
decoder is torchvision's ``decode_jpeg`` on any device, or ``pillow_decoder`` (the same
contract: bytes in, full-size ``uint8`` (3, H, W) tensors out) where torchvision is absent.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .imaging import ImageDecodeError, centre_box, readable_formats, refuse_large_icon

logger = logging.getLogger(__name__)

#: EXIF's orientation tag.
ORIENTATION = 0x0112

#: What a batch decoder does: JPEG bytes (``uint8`` 1-d tensors) to ``uint8`` (3, H, W) tensors.
Decoder = Callable[[list[Any]], list[Any]]


@dataclass(frozen=True)
class JpegHeader:
    """What Pillow read from a JPEG's header: enough to decode it elsewhere."""

    width: int
    height: int
    orientation: int


def device_header(data: bytes, *, max_pixels: int) -> JpegHeader | None:
    """The header of a JPEG the device can decode; None for anything else (Pillow decodes it).

    Raises ``ImageDecodeError`` as ``decode_image`` does for an empty file or one over
    ``max_pixels``, so such a file fails with the same reason either way.
    """
    if not data:
        raise ImageDecodeError("The file is empty (0 bytes).")
    refuse_large_icon(data, max_pixels)
    try:
        opened = Image.open(io.BytesIO(data), formats=readable_formats())
    except Exception:  # noqa: BLE001 - not an image, or a plugin's own error (AVIF's RuntimeError)
        return None  # Pillow's path (decode_image) gives the reason
    width, height = opened.size
    if width * height > max_pixels:
        raise ImageDecodeError(f"The image is {width}x{height} pixels, over the limit of {max_pixels:,} pixels.")
    if opened.format != "JPEG" or opened.mode not in ("RGB", "L") or opened.info.get("progressive"):
        return None
    if width < 1 or height < 1:
        return None
    try:
        orientation = int(opened.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: Pillow's path decides what it means
        return None
    return JpegHeader(width, height, orientation if 1 <= orientation <= 8 else 1)


def upright(image: Any, orientation: int) -> Any:
    """A (C, H, W) tensor turned as ``PIL.ImageOps.exif_transpose`` turns the picture."""
    import torch

    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-1).flip(-2)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(image, -1, dims=(-2, -1))
    if orientation == 7:
        return image.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(image, 1, dims=(-2, -1))
    return image


def resize_and_crop(image: Any, *, resize: int, crop: int) -> Any:
    """A ``uint8`` (3, H, W) tensor resized so its shorter side is ``resize`` (bicubic,
    antialiased), centre-cropped to ``crop``; ``uint8`` values as float32, like Pillow's."""
    import torch

    height, width = image.shape[-2:]
    box = centre_box(width, height)  # as ``preprocess``: the ends of a long strip are cut off first
    if box is not None:
        left, top, right, bottom = box
        image = image[..., top:bottom, left:right]
        height, width = image.shape[-2:]
    scale = resize / min(width, height)
    size = (max(crop, round(height * scale)), max(crop, round(width * scale)))
    work = image[None].to(torch.float32)
    resized = torch.nn.functional.interpolate(work, size=size, mode="bicubic", antialias=True, align_corners=False)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    return resized[0, :, top : top + crop, left : left + crop].float().round().clamp(0, 255)


def torchvision_decoder(device: str) -> Decoder:
    """torchvision's batched ``decode_jpeg`` on ``device`` (nvJPEG on a GPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(blobs: list[Any]) -> list[Any]:
        out = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
        return list(out) if isinstance(out, list | tuple) else [out]

    return decode


def pillow_decoder(blobs: list[Any]) -> list[Any]:
    """The decoder's contract with Pillow (full size, RGB): for a CPU without torchvision."""
    import torch

    images = []
    for blob in blobs:
        with Image.open(io.BytesIO(blob.numpy().tobytes())) as opened:
            rgb = np.asarray(opened.convert("RGB"))
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
    return images


def default_decoder(device: str) -> Decoder | None:
    """torchvision's decoder on ``device`` when torchvision is installed and works; else None."""
    try:
        return torchvision_decoder(device)
    except Exception as exc:  # noqa: BLE001 - not installed, or built for another torch
        logger.info("JPEGs are decoded by Pillow: torchvision's decode_jpeg is not available (%s).", exc)
        return None


def decode_on_device(
    blobs: Sequence[bytes],
    headers: Sequence[JpegHeader],
    *,
    decoder: Decoder,
    device: str,
    preprocess: Callable[[Any], Any],
) -> list[Any]:
    """Each JPEG (with its ``device_header``) decoded by ``decoder``, turned upright and
    given to ``preprocess`` (the encoder's ``preprocess_tensor``) on ``device``: per file the
    model's input tensor, or None where the decoder failed (the caller decodes that file
    with Pillow, which gives the reason)."""
    import torch

    tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    try:
        decoded: list[Any] = decoder(tensors)
    except Exception:  # noqa: BLE001 - one bad file fails the batch: decode one by one
        decoded = []
        for tensor in tensors:
            try:
                decoded.append(decoder([tensor])[0])
            except Exception:  # noqa: BLE001 - Pillow will give this file's reason
                decoded.append(None)
    out: list[Any] = []
    for image, header in zip(decoded, headers, strict=True):
        if image is None:
            out.append(None)
            continue
        out.append(preprocess(upright(image.to(device), header.orientation)))
    return out


def batch_size_for(device: str, *, per_image_bytes: int = 48 * 2**20, cap: int = 256, floor: int = 16) -> int:
    """Images a batch can hold on ``device``: half its free memory over ``per_image_bytes``
    (a 12 MP JPEG decoded is 36 MB; its resize in float32 another 144 MB, one at a time),
    between ``floor`` and ``cap``; ``floor`` off a GPU."""
    if not device.startswith("cuda"):
        return floor
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(max(floor, min(cap, free // 2 // per_image_bytes)))
