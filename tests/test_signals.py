"""What a save marks pending and sends, in-process (no broker), on real PostgreSQL and the real models."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_semantic_images import EmbeddingStatus
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.pipeline.reading import content_hash
from django_semantic_images.signals import embedding_deferred
from photos.models import Photo

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def embedded(make_photo, sample_paths) -> Photo:
    """An embedded photo, embedded an hour ago."""
    photo = make_photo(sample_paths["chelsea"], title="a cat")
    embed_instances([photo])
    Photo.objects.filter(pk=photo.pk).update(embedding_updated_at=timezone.now() - timedelta(hours=1))
    return Photo.objects.get(pk=photo.pk)


def test_update_fields_naming_an_input_writes_the_pending_state(embedded):
    embedded.title = "a tabby cat on a sofa"
    with embedding_deferred():  # the state is written; the work is left to the sweep
        embedded.save(update_fields=["title"])
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.PENDING
    assert row.embedding_updated_at > timezone.now() - timedelta(minutes=1)  # pending since now
    assert row.embedding_lease_until is not None and row.embedding_claimed_by == ""


def test_update_fields_naming_an_input_re_embeds_the_row(embedded):
    embedded.title = "a tabby cat on a sofa"
    embedded.save(update_fields=["title"])  # no broker: embedded in this process after the save
    row = Photo.objects.get(pk=embedded.pk)
    data = row.image.read()
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(data, ["a tabby cat on a sofa"])


def test_update_fields_without_an_input_sends_nothing_and_keeps_the_unsaved_change(embedded):
    embedded.title = "a tabby cat"  # changed in memory only
    embedded.save(update_fields=["published"])
    assert embedded.embedding_status == EmbeddingStatus.EMBEDDED
    row = Photo.objects.get(pk=embedded.pk)
    assert (row.embedding_status, row.title) == (EmbeddingStatus.EMBEDDED, "a cat")
    assert row.embedding_updated_at < timezone.now() - timedelta(minutes=30)  # not written again
    embedded.save()  # now the title is saved: a change, embedded again
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(row.image.read(), ["a tabby cat"])


def test_a_resave_during_embedding_ends_the_running_claim(embedded):
    from django_semantic_images.pipeline.claims import claim_rows

    Photo.objects.filter(pk=embedded.pk).update(embedding_status=EmbeddingStatus.PENDING)
    assert claim_rows(Photo, [embedded.pk], "worker-a") == [embedded.pk]
    photo = Photo.objects.get(pk=embedded.pk)
    photo.alt_text = "whiskers"
    with embedding_deferred():
        photo.save()
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_claimed_by == ""  # the old task can no longer write stale vectors
    assert claim_rows(Photo, [embedded.pk], "worker-b") == [embedded.pk]


def test_a_new_file_under_the_stored_name_is_embedded_again(embedded, sample_paths):
    """A file assigned under the name already stored is a new picture: compared by name alone it
    looked unchanged, and the row kept the old picture's vectors."""
    from django.core.files.base import ContentFile

    data = sample_paths["coffee"].read_bytes()
    embedded.image = ContentFile(data, name=embedded.image.name)
    embedded.save()  # no broker: embedded in this process after the save
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(data, ["a cat"])
    assert row.embedding_updated_at > timezone.now() - timedelta(minutes=1)


def test_a_rolled_back_save_made_again_with_the_same_instance_is_embedded(embedded):
    """A save rolled back with its transaction left the row as it was: the same instance saved
    again is compared with what the row still holds, so its new title is embedded."""
    from django.db import transaction

    embedded.title = "a tabby cat on a sofa"
    with pytest.raises(RuntimeError), transaction.atomic():
        embedded.save()
        raise RuntimeError("the rest of the request failed: the save is rolled back")
    assert Photo.objects.get(pk=embedded.pk).title == "a cat"
    embedded.save()  # a retry with the same instance
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(row.image.read(), ["a tabby cat on a sofa"])


def test_a_new_photo_whose_first_save_rolled_back_saves_again_and_is_embedded(sample_paths):
    """A new instance saved in a transaction that rolled back, then saved again (a retry after a
    serialization failure): Django inserts it then; the snapshot of before its first save is
    "none yet", which must not break the second save."""
    from django.core.files.base import ContentFile
    from django.db import transaction

    data = sample_paths["coffee"].read_bytes()
    photo = Photo(title="a cup of coffee")
    photo.image.save("coffee.jpg", ContentFile(data), save=False)
    with pytest.raises(RuntimeError), transaction.atomic():
        photo.save()
        raise RuntimeError("the rest of the request failed: the insert is rolled back")
    assert not Photo.objects.filter(pk=photo.pk).exists()
    photo.save()  # the retry, with the same instance
    row = Photo.objects.get(pk=photo.pk)
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(data, ["a cup of coffee"])


def test_a_save_rolled_back_with_its_savepoint_made_again_is_embedded(embedded):
    """The same within a transaction that commits: a save inside a savepoint rolled back, then
    the same instance saved again in the outer block. Saves at one level share one commit hook."""
    from django.db import connection, transaction

    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            embedded.title = "a tabby cat on a sofa"
            embedded.save()
            raise RuntimeError("rolled back to the savepoint")
        embedded.save()  # the retry, in the outer block
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(row.image.read(), ["a tabby cat on a sofa"])
    from django_semantic_images.signals import Committed

    with transaction.atomic(), embedding_deferred():
        for title in ("a tabby cat", "a cat", "a tabby cat on a sofa"):
            embedded.title = title
            embedded.save()
        assert len([func for _, func, *_ in connection.run_on_commit if isinstance(func, Committed)]) == 1


def test_a_later_save_of_an_instance_from_before_its_embedding_keeps_the_vectors(sample_paths):
    """An instance saved, embedded after the commit, then saved again for another field (the
    usual ``create()``, then ``save()`` later in the same code): it still held the state from
    before the embedding (pending, no vectors), and the full save wrote that back: the row lost
    its vectors and stayed pending with no work sent (no input changed), gone from search."""
    from tests.conftest import upload

    photo = upload(sample_paths["chelsea"], title="a cat")  # no broker: embedded after the save
    photo.published = False
    photo.save()
    row = Photo.objects.get(pk=photo.pk)
    assert not row.published
    assert row.embedding_status == EmbeddingStatus.EMBEDDED and row.embedding_semantic is not None
    assert row.embedding_hash == content_hash(sample_paths["chelsea"].read_bytes(), ["a cat"])
    photo.embedding_error = "checked by hand"
    photo.save(update_fields=["embedding_error"])  # a column named: written as given
    assert Photo.objects.get(pk=photo.pk).embedding_error == "checked by hand"


def test_an_instance_refreshed_from_the_database_compares_its_saves_with_what_it_reloaded(embedded):
    """``refresh_from_db()`` reloads the inputs but left the snapshot of the first load: an instance
    refreshed after another one's edit (embedded) and given its old title back looked unchanged,
    so the row kept the vectors of the other title, marked embedded."""
    photo = Photo.objects.get(pk=embedded.pk)
    other = Photo.objects.get(pk=embedded.pk)
    other.title = "a dog"
    other.save()  # no broker: embedded in this process, with "a dog"
    photo.refresh_from_db()
    photo.title = "a cat"
    photo.save()
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.EMBEDDED
    assert row.embedding_hash == content_hash(row.image.read(), ["a cat"])


def test_a_new_picture_saved_through_the_parent_model_re_embeds_a_subclass_field_on_it(sample_paths):
    """A multi-table subclass's own field on the image it inherits (``CaptionedPhoto.caption_embedding``):
    a new picture saved through the parent model (``Photo``, its admin say) re-embedded the parent's
    field only; the subclass's kept the old picture's vectors, marked embedded, for good."""
    from django.core.files.base import ContentFile

    from tests.multifield.models import CaptionedPhoto

    captioned = CaptionedPhoto(caption="a cat")
    captioned.image.save("cat.png", ContentFile(sample_paths["chelsea"].read_bytes()), save=False)
    captioned.save()  # no broker: both fields embedded in this process
    photo = Photo.objects.get(pk=captioned.pk)
    data = sample_paths["coffee"].read_bytes()
    photo.image = ContentFile(data, name="coffee.jpg")
    photo.save()
    row = CaptionedPhoto.objects.get(pk=captioned.pk)
    assert row.caption_embedding_status == EmbeddingStatus.EMBEDDED
    assert row.caption_embedding_hash == content_hash(data, ["a cat"])


@pytest.mark.django_db  # tables made for the test, in its transaction (rolled back after it)
def test_pointing_to_another_picture_through_the_image_path_re_embeds_the_row(
    sample_paths, django_capture_on_commit_callbacks
):
    """``image_field="picture__image"`` (a path through a foreign key): the row's own key is what the
    save changes, and only own columns counted, so a card given another picture kept the old
    picture's vectors, marked embedded, and no work was sent. Then, while pending, it kept them
    still (a new file of its own was emptied; another row's file was not)."""
    from django.core.files.base import ContentFile
    from django.db import connection, models
    from django.test.utils import isolate_apps

    from django_semantic_images import ImageEmbeddingField
    from django_semantic_images.signals import connect

    with isolate_apps("photos"):

        class Picture(models.Model):
            image = models.ImageField(upload_to="pictures/")

            class Meta:
                app_label = "photos"

            def __str__(self) -> str:
                return self.image.name

        class Card(models.Model):
            picture = models.ForeignKey(Picture, on_delete=models.CASCADE)
            caption = models.CharField(max_length=100, blank=True)
            embedding = ImageEmbeddingField(image_field="picture__image", text_fields=["caption"], index=False)

            class Meta:
                app_label = "photos"

            def __str__(self) -> str:
                return self.caption

        with connection.schema_editor() as editor:
            editor.create_model(Picture)
            editor.create_model(Card)
        connect(Card)
        pictures = {}
        for stem in ("chelsea", "coffee"):
            pictures[stem] = Picture()
            pictures[stem].image.save(f"{stem}.jpg", ContentFile(sample_paths[stem].read_bytes()))
        with django_capture_on_commit_callbacks(execute=True):
            card = Card.objects.create(picture=pictures["chelsea"], caption="today")
        card = Card.objects.get(pk=card.pk)
        assert card.embedding_hash == content_hash(sample_paths["chelsea"].read_bytes(), ["today"])
        card.picture = pictures["coffee"]
        with django_capture_on_commit_callbacks() as callbacks:
            card.save()
        row = Card.objects.get(pk=card.pk)  # until embedded, never ranked as the picture it no longer shows
        assert row.embedding_status == EmbeddingStatus.PENDING and row.embedding_visual is None
        for callback in callbacks:
            callback()
        row = Card.objects.get(pk=card.pk)
        assert row.embedding_status == EmbeddingStatus.EMBEDDED
        assert row.embedding_hash == content_hash(sample_paths["coffee"].read_bytes(), ["today"])
        card = Card.objects.get(pk=card.pk)
        card.picture_id = pictures["chelsea"].pk  # by its key, saving that field alone
        with django_capture_on_commit_callbacks(execute=True):
            card.save(update_fields=["picture_id"])
        assert Card.objects.get(pk=card.pk).embedding_hash == content_hash(
            sample_paths["chelsea"].read_bytes(), ["today"]
        )


def test_a_new_picture_is_never_ranked_by_the_old_pictures_vectors_while_pending(embedded, sample_paths):
    """A save that puts another picture in the row marked it pending but left the old picture's
    vectors (and labels): until it was embedded, a search by meaning or by likeness found the row
    as the cat it no longer shows. A change of words keeps them (the same picture)."""
    from django.core.files.base import ContentFile

    from django_semantic_images.query import similar_to

    embedded.title = "a tabby cat"
    with embedding_deferred():
        embedded.save()
    kept = Photo.objects.get(pk=embedded.pk)
    assert kept.embedding_status == EmbeddingStatus.PENDING and kept.embedding_visual is not None
    cat_vector = list(kept.embedding_visual)
    embedded.image = ContentFile(sample_paths["coffee"].read_bytes(), name="coffee.jpg")
    with embedding_deferred():
        embedded.save()
    row = Photo.objects.get(pk=embedded.pk)
    assert row.embedding_status == EmbeddingStatus.PENDING
    assert row.embedding_visual is None and row.embedding_semantic is None and row.embedding_labels == []
    assert embedded.pk not in set(similar_to(Photo.objects.all(), cat_vector).values_list("pk", flat=True))
    embed_instances([row])
    assert Photo.objects.get(pk=embedded.pk).embedding_visual is not None


def test_a_cleared_image_is_never_ranked_by_the_old_pictures_vectors_while_pending(embedded):
    """A save that empties the image field (an optional image cleared) marked the row pending but
    left the old picture's vectors: until its embedding failed ("no image file"), a search by
    likeness found the row as the cat it no longer shows."""
    embedded.image = None
    with embedding_deferred():
        embedded.save()
    row = Photo.objects.get(pk=embedded.pk)
    assert row.image.name == "" and row.embedding_status == EmbeddingStatus.PENDING
    assert row.embedding_visual is None and row.embedding_semantic is None and row.embedding_labels == []
