"""Tags changed without the image's tag manager: renamed, deleted, tagging rows saved or deleted by
themselves. Before, only ``image.tags.add/remove/clear`` (``m2m_changed``) asked for embedding, so
the images kept their old tag words until a reindex."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from taggit.models import Tag, TaggedItem
from wagtail.images import get_image_model

from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.fields import EmbeddingStatus

from .test_models import scheduled

pytestmark = pytest.mark.django_db


def status_of(image) -> str:
    return ImageVectors.objects.get(pk=image.pk).embedding.status


def test_renaming_a_tag_embeds_its_images_again(make_image, embed, sample_paths, django_capture_on_commit_callbacks):
    cat = make_image(sample_paths["chelsea"], "IMG_1", tags=["kitty"])
    other = make_image(sample_paths["coffee"], "IMG_2", tags=["kitty", "cup"])
    untagged = make_image(sample_paths["rocket"], "IMG_3", tags=["cup"])
    embed(cat, other, untagged)
    hashes = {image.pk: ImageVectors.objects.get(pk=image.pk).embedding_hash for image in (cat, other)}
    tag = Tag.objects.get(name="kitty")
    tag.name = "kitten"
    with django_capture_on_commit_callbacks() as callbacks:
        tag.save()
        assert scheduled() == {cat.pk, other.pk}
    assert (status_of(cat), status_of(other), status_of(untagged)) == ("pending", "pending", "embedded")
    for callback in callbacks:
        callback()  # the commit: embedded in this process (no broker)
    for image in (cat, other):
        vectors = ImageVectors.objects.get(pk=image.pk)
        assert vectors.embedding.status == EmbeddingStatus.EMBEDDED, vectors.embedding.error
        assert "kitten" in vectors.tag_names and "kitty" not in vectors.tag_names
        assert vectors.embedding_hash != hashes[image.pk]  # the new words went into the vectors
    connection.run_on_commit.clear()
    tag.slug = "kitten"
    tag.save()  # not a new name: no work
    assert not scheduled() and status_of(cat) == "embedded"


def test_deleting_a_tag_or_tagging_rows_directly_embeds_the_images_again(make_image, embed, sample_paths):
    image = make_image(sample_paths["chelsea"], "IMG_1", tags=["kitty", "pet"])
    embed(image)
    Tag.objects.get(name="kitty").delete()
    assert status_of(image) == "pending" and scheduled() == {image.pk}
    connection.run_on_commit.clear()
    embed(image)
    TaggedItem.objects.filter(object_id=image.pk).delete()  # a script, not image.tags.clear()
    assert status_of(image) == "pending"
    embed(image)
    TaggedItem.objects.create(content_object=image, tag=Tag.objects.get(name="pet"))
    assert status_of(image) == "pending"


def test_the_tag_manager_asks_once_per_image(make_image, embed, sample_paths):
    """``image.tags.add`` creates tagging rows and sends ``m2m_changed``: one mark, not one per row too."""
    image = make_image(sample_paths["chelsea"], "IMG_1")
    embed(image)
    table = ImageVectors._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        image.tags.add("kitty", "pet")
    assert len([q for q in queries if q["sql"].startswith(f'UPDATE "{table}"')]) == 1
    assert status_of(image) == "pending" and scheduled() == {image.pk}


def test_deleting_a_tagged_image_creates_no_row(make_image, sample_paths, django_capture_on_commit_callbacks):
    """Deleting an image deletes its tagging rows: a row of vectors made for it then would break the
    deletion's foreign key."""
    images = [make_image(sample_paths["chelsea"], f"IMG_{i}", tags=["kitty"]) for i in (1, 2)]
    with django_capture_on_commit_callbacks(execute=True):
        images[0].delete()
        get_image_model().objects.filter(pk=images[1].pk).delete()
    connection.check_constraints()
    assert not ImageVectors.objects.exists() and not TaggedItem.objects.exists()


def test_tags_of_other_models_are_not_images_tags(make_image, embed, sample_paths):
    """taggit's ``TaggedItem`` tags any model: a document whose key is an image's is not that image."""
    from wagtail.documents import get_document_model

    image = make_image(sample_paths["chelsea"], "IMG_1", tags=["kitty"])
    embed(image)
    document = get_document_model().objects.create(pk=image.pk, title="Notes", file=ContentFile(b"x", name="n.txt"))
    document.tags.add("kitty", "notes")
    Tag.objects.filter(name="notes").get().delete()
    TaggedItem.objects.filter(object_id=document.pk).exclude(content_type__model="image").delete()
    assert status_of(image) == "embedded" and not scheduled()
