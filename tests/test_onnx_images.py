"""The CNN through ONNX Runtime: the torch vectors, exported once, and torch as the fallback."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from django_semantic_images.conf import semantic_settings
from django_semantic_images.encoders import onnx_images
from django_semantic_images.encoders.cache import default_cache_dir
from django_semantic_images.encoders.conse import ConSEEncoder, lite0_weights_path
from django_semantic_images.encoders.onnx_images import OnnxImageModel, onnx_image_model
from django_semantic_images.imaging import decode_image

pytestmark = pytest.mark.skipif(not onnx_images.onnx_available(), reason="needs the onnx extra")


@pytest.fixture(autouse=True)
def fresh_models():
    onnx_images.reset()
    yield
    onnx_images.reset()


def encoder_with(monkeypatch, runtime: str) -> ConSEEncoder:
    """A CPU ConSE encoder whose CNN runs where ``IMAGE_RUNTIME = runtime`` sends it."""
    monkeypatch.setattr(semantic_settings, "IMAGE_RUNTIME", runtime)
    encoder = ConSEEncoder(device="cpu", bridge=None)
    encoder.ensure_image_model()
    return encoder


@pytest.fixture(scope="module")
def sample_pixels() -> np.ndarray:
    from photos.samples import sample_photo_paths

    encoder = ConSEEncoder(device="cpu", bridge=None)
    return np.stack([encoder.preprocess(decode_image(path.read_bytes())) for path in sample_photo_paths()])


def test_onnx_gives_the_torch_vectors_and_labels_of_the_sample_photos(monkeypatch, sample_pixels):
    """The documented tolerance: visual and semantic vectors within 1e-5 of torch's (cosine
    1.0000 to five places), the same five labels with probabilities within 1e-4."""
    onnx = encoder_with(monkeypatch, "auto")  # the onnx extra is installed, the device is the CPU
    torch_ = encoder_with(monkeypatch, "torch")
    assert (onnx.image_runtime, onnx.cnn) == ("onnx", None)
    assert torch_.image_runtime == "torch" and torch_.onnx_cnn is None
    assert onnx.onnx_cnn.path.parent == default_cache_dir()  # exported once per machine
    got, expected = onnx.encode_pixels(sample_pixels), torch_.encode_pixels(sample_pixels)
    assert got.visual.shape == (len(sample_pixels), 1280) and len(sample_pixels) >= 10
    for name in ("visual", "semantic"):
        a, b = getattr(got, name), getattr(expected, name)
        assert np.abs(a - b).max() < 1e-5, name
        assert np.sum(a * b, axis=1).min() > 0.99999, name
    for mine, theirs in zip(got.labels, expected.labels, strict=True):
        assert [name for name, _ in mine] == [name for name, _ in theirs]
        np.testing.assert_allclose([p for _, p in mine], [p for _, p in theirs], atol=1e-4)
    # What training reads (features and softened probabilities) comes the same way.
    feats, probs = onnx.features_and_probs(sample_pixels[:2])
    np.testing.assert_allclose(feats, torch_.features_and_probs(sample_pixels[:2])[0], atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_the_export_is_read_not_made_again(monkeypatch):
    """A second process (here: a new model object) finds the file and exports nothing."""
    weights = lite0_weights_path()
    first = OnnxImageModel(weights, default_cache_dir())
    first.load()
    stamp = first.path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_images, "export_cnn", no_export)
    again = OnnxImageModel(weights, default_cache_dir())
    again.load()
    assert again.path == first.path and not again.exported and again.path.stat().st_mtime_ns == stamp
    pixels = onnx_images.probe_pixels()
    np.testing.assert_array_equal(again.run(pixels)[1], first.run(pixels)[1])
    with pytest.raises(ValueError, match=r"\(n, 3, 224, 224\)"):
        again.run(pixels[:, :, :100])


def test_other_weights_name_another_file(tmp_path):
    weights = lite0_weights_path()
    copy = tmp_path / "lite0.pth"
    shutil.copy(weights, copy)
    assert onnx_images.fingerprint(str(copy)) == onnx_images.fingerprint(weights)
    with copy.open("r+b") as fh:  # one byte of the weights changed
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    assert onnx_images.fingerprint(str(copy)) != onnx_images.fingerprint(weights)


def test_an_unwritable_cache_folder_leaves_the_cnn_on_torch(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    with caplog.at_level(logging.WARNING, logger="django_semantic_images.encoders.onnx_images"):
        assert onnx_image_model(lite0_weights_path(), blocker / "cache") is None
    assert "The CNN stays on torch" in caplog.text


def test_without_onnxruntime_or_with_torch_chosen_the_cnn_runs_in_torch(monkeypatch, caplog, sample_pixels):
    monkeypatch.setattr(onnx_images, "onnx_available", lambda: False)  # the onnx extra not installed
    with caplog.at_level(logging.WARNING, logger="django_semantic_images.encoders.onnx_images"):
        asked = encoder_with(monkeypatch, "onnx")
        auto = encoder_with(monkeypatch, "auto")
    assert asked.image_runtime == auto.image_runtime == "torch" and asked.cnn is not None
    assert caplog.text.count("onnxruntime is not installed") == 1  # "auto" falls back silently
    assert asked.encode_pixels(sample_pixels[:2]).visual.shape == (2, 1280)

    monkeypatch.undo()
    chosen = encoder_with(monkeypatch, "torch")
    assert chosen.image_runtime == "torch" and chosen.onnx_cnn is None
    assert not onnx_images.wants_onnx("auto", "cuda")  # a GPU keeps torch
    with pytest.raises(ValueError, match="IMAGE_RUNTIME"):
        onnx_images.wants_onnx("tensorrt", "cpu")


def test_a_killed_builds_scratch_folder_is_removed_by_the_next_build(tmp_path):
    """An export killed midway left its scratch folder (up to 90 MB) in the cache folder for good;
    the next build of the same file removes it, and leaves another file's build alone."""
    from django_semantic_images.encoders.cache import build_once

    target = tmp_path / "model.onnx"
    left = tmp_path / ".model.onnx-building-abc123"  # what a killed build of model.onnx leaves
    left.mkdir()
    (left / "model.onnx").write_bytes(b"x" * 1000)
    other = tmp_path / ".other.onnx-building-def456"  # another file's build, perhaps under way
    other.mkdir()

    def make(scratch):
        (scratch / "made").write_bytes(b"made")
        return scratch / "made"

    assert build_once(target, make)
    assert target.read_bytes() == b"made"
    assert sorted(p.name for p in tmp_path.iterdir() if "-building-" in p.name) == [other.name]
