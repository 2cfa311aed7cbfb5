"""Search words through ONNX Runtime: same vectors as torch, exported once, and torch as the fallback."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from django_semantic_images.conf import semantic_settings
from django_semantic_images.encoders import get_encoder, onnx_queries
from django_semantic_images.encoders.onnx_queries import OnnxQueryEncoder, configured_query_encoder, query_encoder
from django_semantic_images.encoders.text import SentenceEncoder

TEXTS = ["a cup of coffee", "a red bicycle leaning against a wall in the evening sun", "cat", ""]


@pytest.fixture(autouse=True)
def fresh_query_encoders():
    onnx_queries.reset()
    yield
    onnx_queries.reset()


def loaded(path) -> SentenceEncoder:
    text = SentenceEncoder(str(path), "cpu")
    text.load()
    return text


def test_onnx_vectors_equal_the_torch_vectors_of_minilm():
    """The real query model: a padded batch and single texts give the torch model's vectors."""
    encoder = get_encoder()
    encoder.ensure_loaded()
    onnx = OnnxQueryEncoder(encoder.text)  # the default cache folder: exported once per machine
    got = onnx.encode(TEXTS)
    expected = encoder.text.encode(TEXTS)
    assert got.shape == expected.shape == (4, 384)
    np.testing.assert_allclose(np.sum(got * expected, axis=1), 1.0, atol=1e-4)
    single = onnx.encode([TEXTS[1]])[0]
    assert float(single @ expected[1]) > 0.9999
    assert onnx.path.exists() and onnx.path.parent == onnx_queries.default_cache_dir()


def test_a_cached_model_answers_without_loading_the_torch_model(tiny_bert, tmp_path):
    """Once exported, a process encodes words with the tokenizer and ONNX Runtime alone."""
    reference = loaded(tiny_bert)
    OnnxQueryEncoder(reference, cache_dir=tmp_path).load()
    fresh = SentenceEncoder(str(tiny_bert), "cpu")
    onnx = OnnxQueryEncoder(fresh, cache_dir=tmp_path)
    got = onnx.encode(TEXTS)
    assert fresh.model is None  # the torch model was never loaded
    np.testing.assert_allclose(got, reference.encode(TEXTS), atol=1e-5)
    assert onnx.encode([]).shape == (0, 32)


def test_many_texts_are_encoded_in_batches_of_the_text_models_size(tiny_bert, tmp_path):
    """A long list goes through ONNX Runtime in the text model's batches, in order, not as one batch."""
    reference = loaded(tiny_bert)
    reference.batch_size = 3
    onnx = OnnxQueryEncoder(reference, cache_dir=tmp_path)
    onnx.load()
    sizes: list[int] = []
    run = onnx._run
    onnx._run = lambda session, texts: sizes.append(len(texts)) or run(session, texts)  # type: ignore[method-assign]
    texts = [f"{text} {i}" for i in range(2) for text in TEXTS] + ["one more"]
    got = onnx.encode(texts)
    assert sizes == [3, 3, 3]
    np.testing.assert_allclose(got, reference.encode(texts), atol=1e-5)


def test_the_tokenizer_without_torch_gives_the_transformers_ids():
    """``tokenize()`` (tokenizers only) equals the transformers tokenizer the torch path uses."""
    text = SentenceEncoder(None, "cpu")
    texts = [*TEXTS, "Crème BRÛLÉE, naïve café!", "word " * 300, "日本の猫 🐈", "  spaces\tand\nlines  "]
    fast = text.tokenize(texts)
    text.load()
    slow = text.tokenizer(texts, padding=True, truncation=True, max_length=text.max_length, return_tensors="np")
    np.testing.assert_array_equal(fast["input_ids"], slow["input_ids"])
    np.testing.assert_array_equal(fast["attention_mask"], slow["attention_mask"])
    assert fast["input_ids"].shape[1] == text.max_length


def test_the_fingerprint_does_not_depend_on_the_thread_count():
    """Web processes with different thread settings share one exported file."""
    import torch

    encoder = get_encoder()
    encoder.ensure_loaded()
    before = torch.get_num_threads()
    try:
        names = set()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            names.add(onnx_queries.fingerprint(encoder.text, int8=True))
    finally:
        torch.set_num_threads(before)
    assert len(names) == 1
    assert onnx_queries.fingerprint(encoder.text, int8=False) not in names


def test_default_settings_send_search_words_through_int8_onnx_and_keep_the_ranking(sample_photos, monkeypatch):
    """Under the default settings (QUERY_RUNTIME "auto" with the extra installed, QUERY_INT8
    on), a search goes through the int8 ONNX model, whose vectors are close to torch's but
    really quantised, and finds what the torch model finds."""
    from photos.models import Photo

    encoder = get_encoder()
    encoder.ensure_loaded()
    chosen = configured_query_encoder(encoder.text)
    assert isinstance(chosen, OnnxQueryEncoder) and chosen.int8 and chosen.path.name.endswith("-int8.onnx")
    cosines = np.sum(chosen.encode(TEXTS[:3]) * encoder.text.encode(TEXTS[:3]), axis=1)
    assert np.all(cosines > 0.98) and np.all(cosines < 0.99999), cosines
    encoder.clear_query_cache()
    via_int8 = [p.pk for p in Photo.objects.semantic_search("a cup of coffee")[:5]]
    # The setting itself, without override_settings (which would reload the encoder).
    monkeypatch.setattr(semantic_settings, "QUERY_RUNTIME", "torch")
    encoder.clear_query_cache()
    via_torch = [p.pk for p in Photo.objects.semantic_search("a cup of coffee")[:5]]
    assert via_int8 == via_torch
    assert via_int8[0] == sample_photos["coffee"].pk


def test_float32_setting_gives_the_torch_vectors(sample_photos, tmp_path, monkeypatch):
    """``QUERY_INT8 = False``: the search exports the float32 model, whose vectors are torch's."""
    from photos.models import Photo

    encoder = get_encoder()
    encoder.ensure_loaded()
    monkeypatch.setattr(semantic_settings, "QUERY_INT8", False)
    monkeypatch.setattr(semantic_settings, "MODEL_CACHE_DIR", str(tmp_path))
    encoder.clear_query_cache()
    first = Photo.objects.semantic_search("a cup of coffee").first()
    assert first.pk == sample_photos["coffee"].pk
    made = list(tmp_path.glob("*.onnx"))
    assert len(made) == 1 and not made[0].name.endswith("-int8.onnx")  # the search made the float32 model
    chosen = configured_query_encoder(encoder.text)
    assert isinstance(chosen, OnnxQueryEncoder) and not chosen.int8 and chosen.path == made[0]
    np.testing.assert_allclose(np.sum(chosen.encode(TEXTS) * encoder.text.encode(TEXTS), axis=1), 1.0, atol=1e-4)


def test_a_model_is_exported_once_per_fingerprint(tiny_bert, tmp_path):
    import torch

    text = loaded(tiny_bert)
    first = OnnxQueryEncoder(text, cache_dir=tmp_path)
    first.load()
    stamp = first.path.stat().st_mtime_ns
    again = OnnxQueryEncoder(loaded(tiny_bert), cache_dir=tmp_path)
    again.load()
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    np.testing.assert_allclose(again.encode(TEXTS), text.encode(TEXTS), atol=1e-5)

    # Other weights (the model's files are its identity): another export.
    edited = loaded(tiny_bert)
    with torch.no_grad():
        edited.model.encoder.layer[0].output.dense.bias.add_(0.5)
    copy = tmp_path / "changed-model"
    shutil.copytree(tiny_bert, copy)
    edited.model.save_pretrained(copy)
    changed = loaded(copy)
    other = OnnxQueryEncoder(changed, cache_dir=tmp_path)
    other.load()
    assert other.path != first.path
    np.testing.assert_allclose(other.encode(TEXTS), changed.encode(TEXTS), atol=1e-5)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == sorted([first.path.name, other.path.name])


def test_an_export_that_disagrees_with_torch_is_refused_and_search_stays_on_torch(
    tiny_bert, tmp_path, monkeypatch, caplog
):
    text = loaded(tiny_bert)
    monkeypatch.setitem(onnx_queries.MIN_COSINE, False, 1.5)  # no export can reach it
    with caplog.at_level(logging.WARNING, logger="django_semantic_images.encoders.onnx_queries"):
        chosen = query_encoder(text, runtime="onnx", int8=False, cache_dir=str(tmp_path))
    assert chosen is text
    assert "disagrees with torch" in caplog.text
    assert not list(tmp_path.glob("*.onnx"))  # nothing half-made is left for the next process


def test_an_int8_model_that_disagrees_with_torch_falls_back_to_float32(tiny_bert, tmp_path, monkeypatch, caplog):
    text = loaded(tiny_bert)
    monkeypatch.setitem(onnx_queries.MIN_COSINE, True, 1.5)  # no int8 model can reach it
    with caplog.at_level(logging.WARNING, logger="django_semantic_images.encoders.onnx_queries"):
        chosen = query_encoder(text, runtime="auto", int8=True, cache_dir=str(tmp_path))
    assert isinstance(chosen, OnnxQueryEncoder) and not chosen.int8
    assert "float32 weights" in caplog.text and "disagrees with torch" in caplog.text
    assert [p.name.endswith("-int8.onnx") for p in tmp_path.glob("*.onnx")] == [False]
    np.testing.assert_allclose(chosen.encode(TEXTS), text.encode(TEXTS), atol=1e-5)


def test_an_unwritable_cache_folder_leaves_search_on_torch(tiny_bert, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    text = loaded(tiny_bert)
    with caplog.at_level(logging.WARNING, logger="django_semantic_images.encoders.onnx_queries"):
        chosen = query_encoder(text, runtime="auto", int8=False, cache_dir=str(blocker / "cache"))
    assert chosen is text
    assert "stay on torch" in caplog.text
    np.testing.assert_allclose(chosen.encode(["a cup"]), text.encode(["a cup"]))


def test_torch_runtime_and_gpu_models_skip_onnx(tiny_bert, tmp_path):
    text = loaded(tiny_bert)
    assert query_encoder(text, runtime="torch", int8=False, cache_dir=str(tmp_path)) is text
    text.device = "cuda"  # the ONNX path is for CPU processes; a GPU encodes queries in torch
    assert query_encoder(text, runtime="auto", int8=False, cache_dir=str(tmp_path)) is text
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("threads", "expected"), [(None, 1), (2, 2)])
def test_search_words_run_on_query_threads_threads(tiny_bert, tmp_path, settings, threads, expected):
    """QUERY_THREADS (default 1: a few words are too little work to share out) sizes the session."""
    if threads is not None:
        settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "QUERY_THREADS": threads}
    settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "MODEL_CACHE_DIR": str(tmp_path)}
    onnx = configured_query_encoder(loaded(tiny_bert))
    assert isinstance(onnx, OnnxQueryEncoder)
    assert onnx.session.get_session_options().intra_op_num_threads == expected


def test_a_corrupt_cached_model_is_exported_again(tiny_bert, tmp_path, caplog):
    """A file cut short (a copied cache volume, a full disk) used to leave every process's search on
    torch for good, with a warning each; it is now replaced by a fresh export."""
    text = loaded(tiny_bert)
    first = OnnxQueryEncoder(text, cache_dir=tmp_path)
    first.load()
    first.path.write_bytes(first.path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="django_semantic_images.encoders"):
        chosen = query_encoder(text, runtime="onnx", int8=False, cache_dir=str(tmp_path))
    assert isinstance(chosen, OnnxQueryEncoder) and chosen.path == first.path
    assert "making it again" in caplog.text
    np.testing.assert_allclose(chosen.encode(TEXTS), text.encode(TEXTS), atol=1e-5)
    assert first.path.stat().st_size > 1000 and [p.name for p in tmp_path.glob("*.onnx")] == [first.path.name]
