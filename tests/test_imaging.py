"""Decoding images in threads leaves every other thread's warnings alone."""

from __future__ import annotations

import base64
import io
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import override_settings
from PIL import Image, features

from django_semantic_images.imaging import ImageDecodeError, decode_image, preview_data_url
from tests.conftest import image_bytes


def test_decoding_in_a_thread_pool_keeps_another_threads_warnings():
    data = image_bytes(Image.new("RGB", (640, 480), (200, 30, 30)))
    done = threading.Event()
    emitted, raised = [0], []

    def warn_until_done() -> None:
        while not done.is_set():
            try:
                warnings.warn("another thread's warning", Image.DecompressionBombWarning, stacklevel=1)
                emitted[0] += 1
                time.sleep(0.0002)
            except Exception as exc:  # a filter of the decoding threads turned it into an error
                raised.append(exc)

    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        filters_before = list(warnings.filters)
        other = threading.Thread(target=warn_until_done)
        other.start()
        with ThreadPoolExecutor(max_workers=4) as pool:
            sizes = [image.size for image in pool.map(lambda _: decode_image(data, max_side=64), range(200))]
        done.set()
        other.join()
        filters_after = list(warnings.filters)
    assert sizes == [(64, 48)] * 200
    assert raised == []
    assert emitted[0] > 0
    mine = [w for w in recorded if str(w.message) == "another thread's warning"]
    assert len(mine) == emitted[0]
    assert filters_after == filters_before


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    data = image_bytes(Image.new("RGB", (300, 200)))
    with pytest.raises(ImageDecodeError, match="over the limit of 50,000 pixels"):
        decode_image(data, max_pixels=50_000)


def test_query_images_follow_the_sites_limits(settings):
    """``query_image``: one reading of a search-by-photo image, with the configured limits."""
    from django_semantic_images.imaging import query_image

    data = image_bytes(Image.new("RGB", (300, 200), (10, 120, 200)))
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": len(data) - 1, "MAX_IMAGE_SIDE": 64}
    with pytest.raises(ImageDecodeError, match=f"limit of {len(data) - 1:,} bytes"):
        query_image(data)
    assert max(query_image(data, max_bytes=None).size) == 64  # the site's own paths: no byte limit
    settings.SEMANTIC_IMAGES = {"MAX_IMAGE_PIXELS": 300 * 200 - 1}
    with pytest.raises(ImageDecodeError, match="over the limit of 59,999 pixels"):
        query_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_grey_image_keeps_its_tones(fmt):
    """Pillow's conversion of 16-bit grey to RGB clips at 255: a gradient came out 99.6% white."""
    import io

    import numpy as np

    gradient = np.linspace(0, 65535, 200 * 300).reshape(200, 300).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(gradient).save(buf, fmt)
    decoded = np.asarray(decode_image(buf.getvalue(), max_side=300), dtype=np.float64)
    assert decoded.shape == (200, 300, 3)
    assert (decoded == 255).mean() < 0.01
    assert abs(decoded.mean() - 127.5) < 2  # the gradient's middle grey, not white


def test_a_float_grey_image_keeps_its_tones():
    import io

    import numpy as np

    ramp = np.linspace(0, 1, 200 * 300).reshape(200, 300).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, "TIFF")
    decoded = np.asarray(decode_image(buf.getvalue(), max_side=300), dtype=np.float64)
    assert abs(decoded.mean() - 127.5) < 2  # not black (Pillow's conversion: 0 or 1 of 255)


def test_a_file_a_pillow_plugin_refuses_with_another_error_is_a_decode_error():
    from tests.conftest import dds_pillow_cannot_decode

    with pytest.raises(ImageDecodeError, match="Unknown pixel format"):  # Pillow's DDS plugin: NotImplementedError
        decode_image(dds_pillow_cannot_decode())


def corrupt_avif(part: str = "picture") -> bytes:
    """An AVIF broken by a disk or transfer fault, on which Pillow's AVIF plugin raises
    ``RuntimeError``: its coded ``picture`` zeroed (when the pixels are decoded: "Decoding of color
    planes failed"), or its ``index`` of items lost (when the file is opened: "Missing or empty
    image item")."""
    import io

    buf = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").save(buf, "AVIF")
    data = buf.getvalue()
    if part == "index":
        return data.replace(b"iloc", b"xxxx", 1)
    start = data.find(b"mdat") + 4
    return data[:start] + bytes(len(data) - start)


needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")


@needs_avif
@pytest.mark.parametrize(
    ("part", "reason"), [("picture", "Decoding of color planes failed"), ("index", "Missing or empty image item")]
)
def test_a_corrupt_avif_is_a_decode_error_with_the_reason(part, reason):
    """Pillow's AVIF plugin fails with RuntimeError, which no caller expected: a search by that
    photo was a 500, and in a batch it stopped every image's embedding."""
    with pytest.raises(ImageDecodeError, match=f"truncated or corrupt: .*{reason}"):
        decode_image(corrupt_avif(part))


@needs_avif
def test_the_device_path_leaves_a_corrupt_avif_to_pillow():
    """A GPU worker reads each file's header first: a RuntimeError there stopped the batch."""
    from django_semantic_images.device_jpeg import device_header

    assert device_header(corrupt_avif("index"), max_pixels=50_000_000) is None


@pytest.mark.filterwarnings("ignore")  # Pillow warns of each broken header it reads around
def test_mangled_files_of_many_formats_fail_only_with_a_reason():
    """Bytes cut short or overwritten, in each format this Pillow writes: ``decode_image`` answers
    an image or ``ImageDecodeError``, never another exception (a 500, or a stopped batch). A
    fixed seed; about half a second."""
    import io
    import random

    base = Image.radial_gradient("L").resize((48, 40)).convert("RGB")
    formats = [("JPEG", "RGB"), ("PNG", "P"), ("GIF", "P"), ("WEBP", "RGB"), ("TIFF", "RGB"), ("BMP", "RGB")]
    formats += [("ICO", "RGBA"), ("AVIF", "RGB"), ("JPEG2000", "RGB"), ("SPIDER", "F")]
    rng = random.Random(0)
    unexpected = []
    for fmt, mode in formats:
        buf = io.BytesIO()
        try:
            base.convert(mode).save(buf, fmt)
        except (KeyError, OSError):  # no encoder for it in this Pillow
            continue
        data = buf.getvalue()
        for _ in range(300):
            mangled = bytearray(data)
            if rng.random() < 0.3:
                mangled = mangled[: rng.randrange(1, len(mangled))]
            else:
                for _ in range(rng.randint(1, 8)):
                    mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            try:
                decode_image(bytes(mangled))
            except ImageDecodeError:
                pass
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                unexpected.append(f"{fmt}: {type(exc).__name__}: {exc}")
    assert unexpected == []


def test_the_preview_of_a_search_by_photo_is_a_small_jpeg_on_white():
    """The admin's and Wagtail's search by photo show the same small preview: within the side,
    proportions kept, a transparent area white (not the black of a plain RGB conversion)."""
    image = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    image.paste((200, 0, 0, 255), (0, 0, 200, 200))  # left half opaque red, right half transparent
    url = preview_data_url(image, side=100)
    assert url.startswith("data:image/jpeg;base64,")
    preview = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert preview.format == "JPEG" and preview.size == (100, 50)
    red, right = preview.convert("RGB").getpixel((20, 25)), preview.convert("RGB").getpixel((80, 25))
    assert red[0] > 150 and red[1] < 60, red
    assert min(right) > 230, right  # the transparent half


def icon_holding(width: int, height: int) -> bytes:
    """An ICO file (a few hundred bytes) whose one entry is a PNG declaring ``width`` x ``height``
    pixels, its pixel data not compressed data: decoding it fails, so a refusal that names the pixel limit
    was made before any pixel was decoded. Pillow decodes an icon's image in ``Image.open``."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    png += chunk(b"IDAT", b"not zlib data") + chunk(b"IEND", b"")
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


@pytest.mark.filterwarnings("ignore")  # Pillow warns that the icon's image is not its directory's size
def test_an_icons_image_over_the_pixel_limit_is_refused_before_it_is_decoded():
    """A 9000 x 9000 picture in a small ICO: Pillow decodes it as it opens the file (81 MB for
    this one, 700 MB at Pillow's own limit), before any size can be asked; it is refused first,
    by the pixel limit, on every path that opens an upload or a stored file."""
    from django_semantic_images.device_jpeg import device_header
    from django_semantic_images.thumbnail_engine import Engine

    data = icon_holding(9000, 9000)
    assert len(data) < 2_000
    reason = "over the limit of 1,000,000 pixels"
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data, max_pixels=1_000_000)
    with pytest.raises(ImageDecodeError, match=reason):
        device_header(data, max_pixels=1_000_000)
    with override_settings(SEMANTIC_IMAGES={"MAX_IMAGE_PIXELS": 1_000_000}):
        with pytest.raises(ImageDecodeError, match=reason):
            Engine().get_image(io.BytesIO(data))


@pytest.mark.parametrize(("mode", "key"), [("RGB", (255, 0, 255)), ("L", 7)])
def test_a_png_whose_transparency_is_one_colour_is_white_there(mode, key):
    """A PNG without alpha may name one colour transparent (its tRNS chunk): that colour's pixels
    are composited onto white like any other transparency, not read as the colour itself."""
    picture = Image.new(mode, (600, 400), key)
    picture.paste(0 if mode == "L" else (0, 0, 0), (0, 0, 300, 400))  # the left half opaque black
    buf = io.BytesIO()
    picture.save(buf, "PNG", transparency=key)
    decoded = decode_image(buf.getvalue(), max_side=60)
    assert decoded.size == (60, 40)
    assert decoded.getpixel((5, 20)) == (0, 0, 0)
    assert decoded.getpixel((55, 20)) == (255, 255, 255)


def test_a_jpeg_with_a_second_picture_is_decoded_at_a_reduced_scale_too():
    """A JPEG carrying a second picture (an MPF index: a phone's HDR gain map or depth map, a 3D
    camera's other eye), which Pillow opens as "MPO": its main picture is decoded as the same JPEG
    without the second one is, at a reduced DCT scale, not at full size."""
    import numpy as np

    photo = Image.radial_gradient("L").resize((1600, 1200)).convert("RGB")
    plain, multi = io.BytesIO(), io.BytesIO()
    photo.save(plain, "JPEG")
    photo.save(multi, "MPO", save_all=True, append_images=[photo.resize((160, 120))])
    assert Image.open(io.BytesIO(multi.getvalue())).format == "MPO"
    expected = decode_image(plain.getvalue())
    decoded = decode_image(multi.getvalue())
    assert expected.size == (400, 300)  # 1/4 scale: the shorter side at least 256
    assert decoded.size == expected.size
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))
