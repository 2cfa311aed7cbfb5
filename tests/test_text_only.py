"""A text-side change (text model, ConSE recipe, bridge) re-embeds from the stored CNN output.

Real PostgreSQL + pgvector, the real CNN; the "new text model" is a one-layer, 384-wide BERT the
test saves (the column is 384-d), its vocabulary the words of the ImageNet class texts.
"""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np
import pytest
from django.conf import settings
from django.db.models import Q
from django.test import override_settings

from django_semantic_images import EmbeddingStatus
from django_semantic_images.checks import check_database
from django_semantic_images.encoders import get_encoder
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.encoders.labels import imagenet_classes
from django_semantic_images.pipeline import embed_instances, embed_pks
from django_semantic_images.pipeline.claims import claim_rows, claim_token
from django_semantic_images.signals import embedding_deferred
from django_semantic_images.sweep import mark_pending
from photos.models import Photo
from tests.conftest import run_command as run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def wide_bert(tmp_path_factory):
    """A randomly initialised one-layer BERT with 384-d output, saved like a hub model."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("wide-bert")
    words = set()
    for c in imagenet_classes():
        words.update(re.findall(r"[a-z]+", f"{c.name} {c.gloss}".lower()))
    words.update(("a", "cup", "of", "coffee", "cat", "photo", "rocket", "sky"))
    chars = sorted({ch for w in words for ch in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", ":", *sorted(words), *[f"##{c}" for c in chars]]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(dict.fromkeys(vocab))}).save_pretrained(folder)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(dict.fromkeys(vocab)),
        hidden_size=384,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def new_text_model(folder):
    return override_settings(SEMANTIC_IMAGES={**settings.SEMANTIC_IMAGES, "TEXT_MODEL": {"MODEL": str(folder)}})


@pytest.fixture
def photos(make_photo, sample_paths):
    """Three embedded photos, two with words; their files can be moved away and back."""
    made = [
        make_photo(sample_paths["coffee"], title="a cup of coffee"),
        make_photo(sample_paths["chelsea"]),
        make_photo(sample_paths["rocket"], alt_text="a rocket in the sky"),
    ]
    report = embed_instances(made)
    assert len(report.embedded) == 3
    return [Photo.objects.get(pk=p.pk) for p in made]


class away:
    """The photos' files moved out of storage: whatever reads an image fails."""

    def __init__(self, *photos):
        self.paths = [p.image.path for p in photos]

    def __enter__(self):
        for path in self.paths:
            os.rename(path, path + ".away")

    def __exit__(self, *exc):
        for path in self.paths:
            os.rename(path + ".away", path)


def semantic(photo) -> np.ndarray:
    return np.asarray(Photo.objects.get(pk=photo.pk).embedding_semantic, dtype=np.float32)


def test_a_text_model_change_reembeds_without_the_image_as_a_full_reembed_would(photos, wide_bert):
    before = {p.pk: (np.asarray(p.embedding_visual), p.embedding_hash, p.embedding_labels) for p in photos}
    old_identity = photos[0].embedding_encoder
    for p in photos:
        assert p.embedding_visual_norm > 1.0  # the pooled features' length, stored
    with new_text_model(wide_bert):
        encoder = get_encoder()
        assert encoder.identity != old_identity
        assert encoder.image_part(encoder.identity) == encoder.image_part(old_identity) == encoder.image_identity
        (warning,) = [m for m in check_database(databases=["default"]) if m.id == "semantic_images.W001"]
        assert old_identity in warning.msg and "Only the text side changed" in warning.hint
        with away(*photos):  # the text-only path never opens a file
            out = run("semantic_images_reindex", "--stale", "--no-progress")
        assert "3 embedded, 0 unchanged, 0 failed (3 from their stored CNN output, images not read)" in out
        text_only = {p.pk: semantic(p) for p in photos}
        for p in photos:
            row = Photo.objects.get(pk=p.pk)
            assert row.embedding_encoder == encoder.identity
            assert row.embedding_status == EmbeddingStatus.EMBEDDED
            np.testing.assert_array_equal(np.asarray(row.embedding_visual), before[p.pk][0])
            assert (row.embedding_hash, row.embedding_labels) == before[p.pk][1:]
        out = run("semantic_images_reindex", "--force", "--no-progress")  # the full path, image read
        assert "3 embedded, 0 unchanged, 0 failed in" in out
    for p in photos:
        full = semantic(p)
        assert float(full @ text_only[p.pk]) >= 0.99999
        np.testing.assert_allclose(text_only[p.pk], full, atol=2e-5)
        assert float(full @ np.asarray(p.embedding_semantic)) < 0.99  # the new model did change it


def test_rows_without_a_norm_or_from_another_cnn_take_the_full_path(photos, wide_bert):
    coffee, cat, rocket = photos
    Photo.objects.filter(pk=cat.pk).update(embedding_visual_norm=None)  # embedded before the column
    Photo.objects.filter(pk=rocket.pk).update(embedding_encoder="conse-lite2-minilm:0123abcd")  # another CNN
    with new_text_model(wide_bert):
        # the worker's path too: the sweep marks stale rows pending, then a task embeds them
        mark_pending(Photo, Photo.embedding, [p.pk for p in photos], Q())
        assert set(Photo.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.PENDING}
        token = claim_token("text-only-test")  # as a worker's task: claimed rows, written while held
        assert claim_rows(Photo, [p.pk for p in photos], token) == sorted(p.pk for p in photos)
        with away(*photos):
            report = embed_pks(Photo, [p.pk for p in photos], claim=token)
        assert report.embedded == report.text_only == [coffee.pk]
        assert Photo.objects.get(pk=coffee.pk).embedding_claimed_by == ""  # the claim ended with the write
        Photo.objects.filter(pk=coffee.pk).update(embedding_encoder=coffee.embedding_encoder, embedding_claimed_by="x")
        assert embed_pks(Photo, [coffee.pk], claim=token).embedded == []  # another task holds it now
        assert Photo.objects.get(pk=coffee.pk).embedding_encoder == coffee.embedding_encoder
        assert set(report.failed) == {cat.pk, rocket.pk}
        assert all("does not exist" in reason for reason in report.failed.values())
        report = embed_pks(Photo, [cat.pk, rocket.pk])  # the files are back: the full path
        assert sorted(report.embedded) == sorted([cat.pk, rocket.pk]) and not report.text_only
        for p in (cat, rocket):
            row = Photo.objects.get(pk=p.pk)
            assert row.embedding_visual_norm is not None and row.embedding_encoder == get_encoder().identity


def test_a_changed_input_clears_the_norm_so_the_image_is_read_again(photos):
    coffee = photos[0]
    assert coffee.embedding_visual_norm is not None
    coffee.title = "two cups of coffee"
    with embedding_deferred():
        coffee.save()
    assert Photo.objects.get(pk=coffee.pk).embedding_visual_norm is None
    Photo.objects.filter(pk=coffee.pk).update(embedding_visual_norm=5.0)
    coffee.refresh_from_db()
    coffee.alt_text = "on a table"
    with embedding_deferred():
        coffee.save(update_fields=["alt_text"])  # the state columns are written by an update then
    assert Photo.objects.get(pk=coffee.pk).embedding_visual_norm is None


def test_a_change_of_text_weight_makes_the_rows_stale_and_mixes_their_words_again(photos):
    """``TEXT_WEIGHT`` mixes the words into the stored vectors (as ``COMMON_SCALE`` does, which is part
    of the identity), but was no part of the identity: after a change every row stayed current (no
    W001, ``--stale`` found nothing) with its words mixed at the old weight, for good. A weight other
    than the default now names the recipe, and the text side is mixed again without the images."""
    coffee, cat, _rocket = photos
    old = coffee.embedding_encoder
    with override_settings(SEMANTIC_IMAGES={**settings.SEMANTIC_IMAGES, "TEXT_WEIGHT": 0.3}):
        encoder = get_encoder()
        assert encoder.identity != old and encoder.image_part(encoder.identity) == encoder.image_part(old)
        with away(*photos):  # the text-only path never opens a file
            out = run("semantic_images_reindex", "--stale", "--no-progress")
        assert "3 embedded, 0 unchanged, 0 failed (3 from their stored CNN output" in out
    assert float(semantic(coffee) @ np.asarray(coffee.embedding_semantic)) < 0.999  # its words weigh less now
    np.testing.assert_allclose(semantic(cat), np.asarray(cat.embedding_semantic), atol=2e-5)  # no words: as before
    assert get_encoder().identity == old  # the default weight: the identity vectors had before


def test_the_stored_identities_keep_their_form(db):
    """Rows embedded before this change are not stale after it: the identity is composed as before."""
    encoder = get_encoder()
    parts = (encoder.version, encoder.top_k, encoder.temperature, encoder.prompts, encoder.center)
    recipe = "|".join(map(str, (*parts, encoder.text_spec.identity)))
    digest = hashlib.sha1(recipe.encode()).hexdigest()[:8]
    assert encoder.identity.split("+bridge:")[0] == f"conse-lite0-minilm:{digest}"


def test_flip_averaging_is_on_the_image_side_so_its_rows_read_their_images_again(db):
    """Switching ``flip`` changes the stored visual vectors: the text-only path must not reuse them."""
    plain, flipped = ConSEEncoder(), ConSEEncoder(flip=True)
    assert plain.image_identity == "conse-lite0-minilm"
    assert flipped.image_part(flipped.identity) == flipped.image_identity != plain.image_identity
    assert flipped.image_part(plain.identity) != flipped.image_identity
