"""Near-duplicates in the ORM: edited copies grouped through the HNSW index, distinct photos
kept apart, the queryset's filter respected, "not duplicates" remembered (real PostgreSQL,
real models, copies made with Pillow)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from django_semantic_images.conf import DEFAULT_DUPLICATE_THRESHOLD
from django_semantic_images.duplicates import (
    DuplicateGroup,
    group_pairs,
    group_rows,
    mark_not_duplicates,
    neighbour_rows,
    not_duplicate_keys,
)
from django_semantic_images.hnsw import hnsw_settings
from django_semantic_images.models import NotDuplicate
from photos.models import Photo

from .conftest import duplicate_library

pytestmark = pytest.mark.django_db


def named(groups, photos) -> list[set[str]]:
    names = {photo.pk: name for name, photo in photos.items()}
    return [{names[pk] for pk in group.pks} for group in groups]


def test_edited_copies_are_grouped_and_distinct_photos_are_not(duplicate_photos):
    groups = Photo.objects.near_duplicates()
    assert named(groups, duplicate_photos) == [
        {"chelsea", "chelsea-jpeg", "chelsea-flip"},
        {"coffee", "coffee-crop"},
    ]
    assert all(list(g.pks) == sorted(g.pks) and 0 < g.distance <= DEFAULT_DUPLICATE_THRESHOLD for g in groups)


def test_the_neighbours_come_from_the_visual_hnsw_index(duplicate_photos, settings):
    # 8 rows: an exact scan is cheaper; with sequential scans off the plan shows what the index serves.
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    rows = neighbour_rows(Photo.objects.filter(published=True), neighbours=10)
    with hnsw_settings(connection.alias):
        plan = rows[:500].explain()
    assert f"Index Scan using {Photo.embedding.index_name(Photo, 'visual')}" in plan, plan
    assert "Limit" in plan and plan.count("<=>") == 1, plan


def test_only_the_querysets_rows_are_compared(duplicate_photos):
    groups = Photo.objects.filter(published=True).near_duplicates()
    assert named(groups, duplicate_photos) == [{"chelsea", "chelsea-jpeg", "chelsea-flip"}]
    assert duplicate_photos["coffee-crop"].pk not in {pk for g in groups for pk in g.pks}


def test_a_sliced_one_per_owner_or_combined_queryset_is_grouped_among_its_own_rows(duplicate_photos):
    """Only filter() was tried on the queryset: the latest uploads (a slice) failed with Django's
    "Cannot filter a query once a slice has been taken", one row per owner (distinct on a field)
    in PostgreSQL, and a union with "Calling QuerySet.filter() after union() is not supported"."""
    cats = {duplicate_photos[name].pk for name in ("chelsea", "chelsea-jpeg", "chelsea-flip")}
    cat, jpeg, coffee = (
        duplicate_photos["chelsea"].pk,
        duplicate_photos["chelsea-jpeg"].pk,
        duplicate_photos["coffee"].pk,
    )
    latest = Photo.objects.filter(pk__in=[*cats, coffee]).order_by("-pk")[:3]  # one of the four left out
    groups = latest.near_duplicates()
    assert [set(group.pks) for group in groups] == [cats & {photo.pk for photo in latest}]
    assert [[row.pk for row in rows] for _group, rows in group_rows(latest, groups)] == [list(groups[0].pks)]
    per_pk = Photo.objects.order_by("pk", "-created_at").distinct("pk").filter(published=True)
    assert named(per_pk.near_duplicates(), duplicate_photos) == [{"chelsea", "chelsea-jpeg", "chelsea-flip"}]
    both = Photo.objects.filter(pk=cat).union(Photo.objects.filter(pk__in=[jpeg, coffee]))
    assert named(both.near_duplicates(), duplicate_photos) == [{"chelsea", "chelsea-jpeg"}]


def test_a_row_whose_picture_was_replaced_is_not_grouped_by_its_previous_vectors(duplicate_photos, sample_paths):
    """A new picture makes the row pending until it is embedded again: grouped by the previous
    picture's vectors, a horse stood in a group of cats, offered for deletion by "keep this one,
    delete the others". The save now empties them (signals: a new picture's old vectors)."""
    from django.core.files.base import ContentFile

    from django_semantic_images.pipeline import embed_instances
    from django_semantic_images.signals import embedding_deferred

    flip = duplicate_photos["chelsea-flip"]
    flip.image.save("now-a-horse.jpg", ContentFile(sample_paths["horse"].read_bytes()), save=False)
    with embedding_deferred():
        flip.save()
    flip.refresh_from_db()
    assert flip.embedding_status == "pending" and flip.embedding_visual is None
    assert named(Photo.objects.near_duplicates(), duplicate_photos) == [
        {"chelsea", "chelsea-jpeg"},
        {"coffee", "coffee-crop"},
    ]
    assert not embed_instances([flip]).failed  # embedded again: a copy of the horse now
    assert named(Photo.objects.near_duplicates(), duplicate_photos) == [
        {"chelsea", "chelsea-jpeg"},
        {"coffee", "coffee-crop"},
        {"chelsea-flip", "horse"},
    ]


def test_a_tighter_threshold_splits_off_the_furthest_copy(duplicate_photos):
    loose = Photo.objects.near_duplicates(0.5)
    cat = loose[0]
    tight = Photo.objects.near_duplicates(cat.distance - 1e-4)
    assert sum(len(g) for g in tight) < sum(len(g) for g in loose)


def test_not_duplicates_are_never_grouped_again(duplicate_photos):
    cat, jpeg, flip = (duplicate_photos[n] for n in ("chelsea", "chelsea-jpeg", "chelsea-flip"))
    assert mark_not_duplicates(Photo, [cat.pk, jpeg.pk, flip.pk]) == 3
    assert mark_not_duplicates(Photo, [flip.pk, cat.pk]) == 0  # already known, in any order
    assert NotDuplicate.objects.count() == 3
    assert named(Photo.objects.near_duplicates(), duplicate_photos) == [{"coffee", "coffee-crop"}]


def test_one_pair_marked_apart_splits_a_group_without_joining_them_through_a_third(duplicate_photos):
    cat, jpeg = duplicate_photos["chelsea"], duplicate_photos["chelsea-jpeg"]
    mark_not_duplicates(Photo, [cat.pk, jpeg.pk])
    groups = named(Photo.objects.near_duplicates(), duplicate_photos)
    assert not any({"chelsea", "chelsea-jpeg"} <= group for group in groups)
    assert {"coffee", "coffee-crop"} in groups


def test_group_pairs_joins_nearest_first_and_keeps_marked_pairs_apart():
    pairs = [(1, 2, 0.05), (2, 3, 0.02), (3, 1, 0.04), (7, 8, 0.01), (9, 10, 0.03), (10, 11, 0.03)]
    assert group_pairs(pairs) == [
        DuplicateGroup((1, 2, 3), 0.04),
        DuplicateGroup((9, 10, 11), 0.03),
        DuplicateGroup((7, 8), 0.01),
    ]
    # 1 and 3 may not meet: 2-3 joins first (0.02), then 1-3 and 1-2 would bring 1 in.
    assert group_pairs(pairs, {("1", "3")})[:2] == [DuplicateGroup((9, 10, 11), 0.03), DuplicateGroup((2, 3), 0.02)]


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01, float("nan"), float("inf"), "0.1", True])
def test_a_threshold_outside_0_1_is_refused_naming_it(threshold):
    with pytest.raises(ValueError, match="threshold"):
        Photo.objects.near_duplicates(threshold)


def test_a_bad_setting_is_refused_naming_it(settings):
    settings.SEMANTIC_IMAGES = {"DUPLICATE_THRESHOLD": 2}
    with pytest.raises(ValueError, match="DUPLICATE_THRESHOLD"):
        Photo.objects.near_duplicates()


def test_marks_are_per_model(duplicate_photos):
    from tests.multifield.models import TwoImagePhoto

    mark_not_duplicates(TwoImagePhoto, [1, 2])
    assert not_duplicate_keys(Photo) == set()
    assert not_duplicate_keys(TwoImagePhoto) == {("1", "2")}


@pytest.mark.parametrize("neighbours", [0, 1001, 2.5, True])
def test_neighbours_beyond_what_the_hnsw_index_can_probe_are_refused_naming_them(neighbours):
    """pgvector's ``hnsw.ef_search`` stops at 1,000: more neighbours than that were a database error."""
    with pytest.raises(ValueError, match="neighbours"):
        Photo.objects.near_duplicates(neighbours=neighbours)


def test_a_thousand_neighbours_are_probed(duplicate_photos):
    groups = Photo.objects.near_duplicates(neighbours=1000)
    assert named(groups, duplicate_photos) == named(Photo.objects.near_duplicates(), duplicate_photos)


class Rollback(Exception):
    pass


@pytest.mark.django_db(transaction=True)  # its flush leaves fresh indexes: its dead rows hide no later test's
def test_the_library_is_grouped_whatever_rows_earlier_tests_left_in_the_hnsw_graph(sample_paths):
    """Rows that earlier tests rolled back or deleted stay in the HNSW graph until a vacuum: a full run
    leaves hundreds of copies of the same sample pictures there, and they cut live rows off the graph.
    Once they have grown the table past a sequential scan, the probes came back short of the copies
    (test_edited_copies_are_grouped_and_distinct_photos_are_not failed so, now and then, in a full run)."""
    duplicate_library(sample_paths)  # the rows whose copies are inserted, then rolled back
    try:
        with transaction.atomic():
            Photo.objects.bulk_create(
                Photo(
                    image=f"stale-{i}.jpg",
                    title=photo.title,
                    embedding_status=photo.embedding_status,
                    embedding_visual=photo.embedding_visual,
                    embedding_semantic=photo.embedding_semantic,
                )
                for photo in Photo.objects.all()
                for i in range(500)
            )
            raise Rollback
    except Rollback:
        pass
    Photo.objects.all().delete()  # the module's duplicate_photos rows too (rolled back with the test)
    library = duplicate_library(sample_paths)
    groups = Photo.objects.near_duplicates()
    assert named(groups, library) == [{"chelsea", "chelsea-jpeg", "chelsea-flip"}, {"coffee", "coffee-crop"}]


def test_a_row_with_a_zero_visual_vector_is_in_no_group_and_breaks_none(duplicate_photos):
    """A zero vector (written by SQL: the pipeline refuses one) is NaN away from every row: it joins no
    group, and the others are grouped as before."""
    import numpy as np

    Photo.objects.filter(pk=duplicate_photos["coffee-crop"].pk).update(embedding_visual=np.zeros(1280, np.float32))
    assert named(Photo.objects.near_duplicates(), duplicate_photos) == [{"chelsea", "chelsea-jpeg", "chelsea-flip"}]
