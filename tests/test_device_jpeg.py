"""JPEGs decoded on the encoder's device (a GPU worker's path), tested on the CPU.

torchvision's ``decode_jpeg`` runs on a CPU too; where the installed torchvision cannot
load (the PyPI wheels are built for CUDA torch, this project's CPU test machines have the
CPU torch), ``pillow_decoder`` stands in with the same contract (bytes in, full-size
``uint8`` (3, H, W) tensors out). Everything after the decoder, and the pipeline around
it, is the code a GPU worker runs.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from django_semantic_images import device_jpeg, pipeline
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.fields import EmbeddingStatus
from django_semantic_images.imaging import ImageDecodeError, decode_image
from django_semantic_images.pipeline import reading

DECODER = device_jpeg.default_decoder("cpu") or device_jpeg.pillow_decoder


def jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=92, **options)
    return buf.getvalue()


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[device_jpeg.ORIENTATION] = orientation
    return jpeg(image, exif=exif)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_the_picture_as_pillow_does(orientation):
    rng = np.random.default_rng(orientation)
    picture = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))  # not square: turns show
    data = with_orientation(picture, orientation)
    header = device_jpeg.device_header(data, max_pixels=10_000)
    assert header is not None and (header.width, header.height, header.orientation) == (50, 30, orientation)
    decoded = device_jpeg.pillow_decoder([torch.frombuffer(bytearray(data), dtype=torch.uint8)])
    turned = device_jpeg.upright(decoded[0], orientation).permute(1, 2, 0).numpy()
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(turned, expected)


def test_only_plain_jpegs_go_to_the_device_and_the_limits_hold():
    picture = Image.new("RGB", (64, 48), (200, 30, 30))
    assert device_jpeg.device_header(jpeg(picture), max_pixels=10_000) == device_jpeg.JpegHeader(64, 48, 1)
    png = io.BytesIO()
    picture.save(png, "PNG")
    assert device_jpeg.device_header(png.getvalue(), max_pixels=10_000) is None  # Pillow decodes it
    assert device_jpeg.device_header(jpeg(picture.convert("CMYK")), max_pixels=10_000) is None
    assert device_jpeg.device_header(jpeg(picture, progressive=True), max_pixels=10_000) is None
    assert device_jpeg.device_header(b"not an image", max_pixels=10_000) is None
    with pytest.raises(ImageDecodeError, match="over the limit of 1,000 pixels"):
        device_jpeg.device_header(jpeg(picture), max_pixels=1_000)
    with pytest.raises(ImageDecodeError, match="empty"):
        device_jpeg.device_header(b"", max_pixels=1_000)


def test_device_decoding_keeps_the_vectors_within_tolerance(sample_paths):
    """The documented tolerance of the device path against Pillow's: cosine >= 0.99 for
    both vectors (0.996 / 0.998 measured on 12 MP photos), the same best label."""
    encoder = ConSEEncoder(device="cpu", bridge=None)
    blobs = [p.read_bytes() for p in sample_paths.values() if p.suffix == ".jpg"]
    headers = [device_jpeg.device_header(b, max_pixels=50_000_000) for b in blobs]
    assert len(blobs) >= 4 and all(headers)
    tensors = device_jpeg.decode_on_device(
        blobs, headers, decoder=DECODER, device="cpu", preprocess=encoder.preprocess_tensor
    )
    on_device = encoder.encode_pixels(np.stack([t.numpy() for t in tensors]))
    pillow = encoder.encode_pixels(np.stack([encoder.preprocess(decode_image(b)) for b in blobs]))
    for name in ("visual", "semantic"):
        cosines = np.sum(getattr(on_device, name) * getattr(pillow, name), axis=1)
        assert cosines.min() > 0.99 and cosines.min() < 0.99999, (name, cosines)  # close, and really another path
    assert [labels[0][0] for labels in on_device.labels] == [labels[0][0] for labels in pillow.labels]


def test_a_gpu_workers_pipeline_decodes_jpegs_on_the_device(make_photo, sample_paths, settings, monkeypatch):
    """``JPEG_DECODER = "device"``: JPEGs go to the device decoder; a PNG, a file the decoder
    rejects and a bomb go through Pillow, and the bad ones fail with Pillow's reasons."""
    from photos.models import Photo

    decoded: list[int] = []

    def counting(blobs):
        decoded.append(len(blobs))
        return DECODER(blobs)

    monkeypatch.setattr(reading, "default_decoder", lambda device: counting)
    settings.SEMANTIC_IMAGES = {"JPEG_DECODER": "device", "MAX_IMAGE_PIXELS": 3_000_000}
    rocket = Image.open(sample_paths["rocket"]).convert("RGB")
    rows = {
        "jpeg": make_photo(sample_paths["rocket"]),
        "turned": make_photo(with_orientation(rocket.transpose(Image.Transpose.ROTATE_270), 8), name="turned.jpg"),
        "png": make_photo(sample_paths["coffee"]),
        "truncated": make_photo(jpeg(rocket)[:20_000], name="broken.jpg"),  # a whole header, half the data
        "bomb": make_photo(jpeg(Image.new("L", (2000, 2000))), name="bomb.jpg"),
    }
    report = pipeline.embed_instances(list(rows.values()), batch_size=8)
    assert sum(decoded) >= 3  # the two good JPEGs and the truncated one went to the device decoder
    assert sorted(report.embedded) == sorted(rows[k].pk for k in ("jpeg", "turned", "png"))
    found = {k: Photo.objects.get(pk=row.pk) for k, row in rows.items()}
    assert "truncated or corrupt" in found["truncated"].embedding_error
    assert "over the limit of 3,000,000 pixels" in found["bomb"].embedding_error
    assert found["bomb"].embedding_status == found["truncated"].embedding_status == EmbeddingStatus.FAILED
    # The rotated copy, turned upright on the device, looks like the upright file.
    visual = {k: np.array(found[k].embedding_visual) for k in ("jpeg", "turned")}
    assert float(visual["jpeg"] @ visual["turned"]) > 0.98

    settings.SEMANTIC_IMAGES = {"JPEG_DECODER": "pillow"}
    decoded.clear()
    pipeline.embed_instances([rows["jpeg"]], force=True)
    assert decoded == []
    settings.SEMANTIC_IMAGES = {}  # "auto": the CPU encoder keeps Pillow
    pipeline.embed_instances([rows["jpeg"]], force=True)
    assert decoded == []
