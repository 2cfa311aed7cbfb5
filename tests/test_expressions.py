"""Ranking expressions: ``SemanticDistance`` / ``VisualDistance`` use the field's own encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.db import connection, models
from django.test.utils import isolate_apps
from PIL import Image

from django_semantic_images import ImageEmbeddingField, SemanticDistance, VisualDistance
from django_semantic_images.encoders import get_encoder
from django_semantic_images.fields import embedding_fields
from django_semantic_images.management.commands.semantic_images_status import field_status
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.query import semantic_search, similar_to
from django_semantic_images.signals import embedding_deferred

pytestmark = pytest.mark.django_db

CLIP = "django_semantic_images.encoders.clip.CLIPEncoder"


@pytest.fixture
def two_encoders(tiny_clip, sample_paths):
    """A model with two embedding fields: the default encoder and a (tiny) CLIP, both embedded."""
    with isolate_apps("photos"):

        class Picture(models.Model):
            image = models.ImageField(upload_to="pictures/")
            title = models.CharField(max_length=100, blank=True)
            embedding = ImageEmbeddingField(text_fields=["title"])
            clip = ImageEmbeddingField(encoder=CLIP, encoder_options={"model": str(tiny_clip)})

            class Meta:
                app_label = "photos"

            def __str__(self) -> str:
                return self.image.name

        with connection.schema_editor() as editor:
            editor.create_model(Picture)
        pictures = []
        for stem in ("chelsea", "coffee", "rocket"):
            picture = Picture()
            picture.image.save(f"{stem}.jpg", io.BytesIO(sample_paths[stem].read_bytes()), save=False)
            with embedding_deferred():
                picture.save()
            pictures.append(picture)
        for name in ("embedding", "clip"):
            report = embed_instances(pictures, field=name)
            assert not report.failed, report.failed
        yield Picture


def test_the_fields_store_vectors_of_their_own_sizes(two_encoders):
    assert two_encoders._meta.get_field("embedding_semantic").dimensions == 384
    assert two_encoders._meta.get_field("clip_semantic").dimensions == 16
    row = two_encoders.objects.get(image__startswith="pictures/coffee")
    assert len(row.clip_semantic) == 16 and row.clip_encoder.startswith("clip:")


def test_semantic_distance_encodes_words_with_the_fields_encoder(two_encoders, tiny_clip):
    from django_semantic_images.encoders.clip import CLIPEncoder

    ranked = list(two_encoders.objects.annotate(d=SemanticDistance("clip", "a photo of a cat")).order_by("d"))
    assert len(ranked) == 3
    # The distances are the tiny CLIP's own (default-encoder words would not even fit the 16-d column).
    words = get_encoder(CLIP, {"model": str(tiny_clip)}).encode_text("a photo of a cat")
    assert isinstance(get_encoder(CLIP, {"model": str(tiny_clip)}), CLIPEncoder)
    for row in ranked:
        expected = 1 - float(np.dot(np.asarray(row.clip_semantic), words))
        assert row.d == pytest.approx(expected, abs=1e-5)


def test_the_default_field_still_ranks_with_the_default_encoder(two_encoders):
    ranked = list(two_encoders.objects.annotate(d=SemanticDistance("embedding", "a cup of coffee")).order_by("d"))
    assert ranked[0].image.name.startswith("pictures/coffee")


def test_search_and_similar_to_name_the_field(two_encoders, sample_paths):
    by_words = list(semantic_search(two_encoders.objects.all(), "a cat", field="clip"))
    assert len(by_words) == 3
    by_image = list(similar_to(two_encoders.objects.all(), Image.open(sample_paths["rocket"]), field="clip"))
    assert by_image[0].image.name.startswith("pictures/rocket")
    qs = two_encoders.objects.annotate(d=VisualDistance("clip", Image.open(sample_paths["rocket"]))).order_by("d")
    assert qs.first().image.name.startswith("pictures/rocket")


def test_status_reports_each_fields_own_encoder(two_encoders, tiny_clip):
    fields = {f.name: field_status(two_encoders, f) for f in embedding_fields(two_encoders)}
    assert fields["clip"]["encoder"] == get_encoder(CLIP, {"model": str(tiny_clip)}).identity
    assert fields["clip"]["dimensions"] == [16, 16]
    assert fields["embedding"]["encoder"] == get_encoder().identity
    assert fields["clip"]["counts"]["embedded"] == 3 and fields["clip"]["other_encoder"] == 0


def test_words_are_read_as_every_search_reads_them(sample_photos):
    """``SemanticDistance`` with words (what the docs name for a model with a ``score`` field) ranked
    blank words by the vector of nothing, a lone surrogate was the tokenizer's TypeError, and NUL or
    zero-width characters made other words than ``semantic_search()``'s: it now reads words alike."""
    from photos.models import Photo

    with pytest.raises(ValueError, match="empty"):
        SemanticDistance("embedding", " \u200b\x00 ")
    with pytest.raises(ValueError, match="lone surrogate"):
        SemanticDistance("embedding", "a cat \udc80")

    def ranked(words):
        return list(
            Photo.objects.annotate(d=SemanticDistance("embedding", words)).order_by("d", "pk").values_list("pk", "d")
        )

    assert ranked("a cup\x00of\u200bcoffee ") == ranked("a cup of coffee")
    assert ranked("a cup of coffee") == list(
        Photo.objects.semantic_search("a cup of coffee").values_list("pk", "distance")
    )
