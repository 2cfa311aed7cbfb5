"""contrib.wagtail with a custom image model: the vectors table is keyed to
``WAGTAILIMAGES_IMAGE_MODEL``, so uploads, search, deletion and reindexing work as with
Wagtail's own."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from wagtail.images import get_image_model, get_image_model_string

from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.fields import EmbeddingStatus
from tests.wagtail_custom.images.models import CustomImage, CustomRendition

pytestmark = pytest.mark.django_db


def test_the_vectors_are_keyed_to_the_custom_image_model():
    assert get_image_model() is CustomImage and get_image_model_string() == "customimages.CustomImage"
    assert ImageVectors._meta.get_field("image").related_model is CustomImage
    with connection.cursor() as cursor:  # the migration's foreign key, not only the model's
        cursor.execute(
            """SELECT confrelid::regclass::text FROM pg_constraint
               WHERE conrelid = %s::regclass AND contype = 'f'""",
            [ImageVectors._meta.db_table],
        )
        assert [row[0] for row in cursor.fetchall()] == [CustomImage._meta.db_table]
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero on changes


def test_an_upload_through_the_admin_is_embedded_after_commit(
    superuser_client, sample_paths, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = superuser_client.post(
            reverse("wagtailimages:add"),
            {
                "title": "Chelsea on a blanket",
                "caption": "Our cat",
                "tags": "pet",
                "file": SimpleUploadedFile("chelsea.png", sample_paths["chelsea"].read_bytes(), "image/png"),
            },
        )
    assert response.status_code == 302, response.context["form"].errors
    assert callbacks, "the embedding waits for the commit"
    image = CustomImage.objects.get(title="Chelsea on a blanket")
    assert image.caption == "Our cat"  # the custom field came through Wagtail's form
    vectors = ImageVectors.objects.get(pk=image.pk)
    assert vectors.image == image and isinstance(vectors.image, CustomImage)
    assert image.semantic_vectors == vectors
    assert vectors.embedding.status == EmbeddingStatus.EMBEDDED, vectors.embedding.error
    assert vectors.embedding_semantic is not None and vectors.embedding_visual is not None


def test_the_listing_ranks_by_meaning(superuser_client, sample_images):
    response = superuser_client.get(reverse("wagtailimages:index_results"), {"q": "a cat"})
    assert response.status_code == 200
    found = list(response.context["object_list"])
    assert found[0] == sample_images["chelsea"] and isinstance(found[0], CustomImage)
    assert set(found) == set(sample_images.values())


def test_renditions_are_never_embedded_and_deleting_an_image_deletes_its_vectors(make_image, sample_paths):
    image = make_image(sample_paths["coffee"], "IMG_0002")
    image.get_rendition("max-100x100")
    assert CustomRendition.objects.filter(image=image).count() == 1
    assert list(ImageVectors.objects.values_list("pk", flat=True)) == [image.pk]
    image.delete()
    assert not ImageVectors.objects.exists()


def test_reindex_adds_and_embeds_images_created_before(make_image, sample_paths):
    image = make_image(sample_paths["astronaut"], "IMG_0003")
    ImageVectors.objects.all().delete()  # as if the image came before the app
    call_command("semantic_images_reindex", "--model", "semantic_images_wagtail.ImageVectors", "--no-progress")
    assert ImageVectors.objects.get(pk=image.pk).embedding.status == EmbeddingStatus.EMBEDDED


def test_renaming_a_tag_embeds_the_custom_images_it_tags_again(make_image, embed, sample_paths):
    """taggit's ``TaggedItem`` rows of the custom model (its content type, not Wagtail's image's)."""
    from taggit.models import Tag

    image = make_image(sample_paths["chelsea"], "IMG_0004", tags=["kitty"])
    embed(image)
    tag = Tag.objects.get(name="kitty")
    tag.name = "kitten"
    tag.save()
    assert ImageVectors.objects.get(pk=image.pk).embedding.status == EmbeddingStatus.PENDING
