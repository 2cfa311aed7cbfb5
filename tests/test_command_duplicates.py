"""``manage.py semantic_images_duplicates``: the groups as text and as JSON."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from django_semantic_images.conf import DEFAULT_DUPLICATE_THRESHOLD
from django_semantic_images.duplicates import mark_not_duplicates
from photos.models import Photo
from tests.conftest import run_command

pytestmark = pytest.mark.django_db

PHOTO = ("--model", "photos.Photo")


def test_the_groups_are_printed_with_ids_titles_and_files(duplicate_photos):
    out = run_command("semantic_images_duplicates", *PHOTO)
    lines = out.splitlines()
    assert lines[0].startswith(
        f"2 group(s) of near-duplicates, 5 images, in photos.Photo (threshold {DEFAULT_DUPLICATE_THRESHOLD:g}"
    )
    group_1 = next(i for i, line in enumerate(lines) if line.startswith("Group 1: 3 images, within 0."))
    cat = duplicate_photos["chelsea"]
    assert f"  {cat.pk:>8}  Chelsea  ({cat.image.name})" in lines[group_1 + 1 : group_1 + 4]
    assert any(line.startswith("Group 2: 2 images") for line in lines)
    assert "Launch day" not in out and "Portrait" not in out


def test_json_lists_the_same_groups(duplicate_photos):
    document = json.loads(run_command("semantic_images_duplicates", *PHOTO, "--json", "--threshold", "0.25"))
    assert document["model"] == "photos.Photo" and document["field"] == "embedding" and document["threshold"] == 0.25
    groups = [{item["pk"] for item in group["items"]} for group in document["groups"]]
    cat = {duplicate_photos[n].pk for n in ("chelsea", "chelsea-jpeg", "chelsea-flip")}
    coffee = {duplicate_photos[n].pk for n in ("coffee", "coffee-crop")}
    assert groups == [cat, coffee]
    first = document["groups"][0]["items"][0]
    assert set(first) == {"pk", "str", "file"} and first["file"].startswith("photos/")
    assert 0 < document["groups"][0]["distance"] <= 0.25


def test_pairs_marked_not_duplicates_are_left_out(duplicate_photos):
    mark_not_duplicates(Photo, [duplicate_photos["coffee"].pk, duplicate_photos["coffee-crop"].pk])
    document = json.loads(run_command("semantic_images_duplicates", *PHOTO, "--json"))
    assert len(document["groups"]) == 1 and len(document["groups"][0]["items"]) == 3


@pytest.mark.parametrize("threshold", ["0", "1.5", "-0.1", "nan"])
def test_a_threshold_out_of_range_is_a_clear_error(threshold):
    with pytest.raises(CommandError, match="threshold must be"):
        call_command("semantic_images_duplicates", *PHOTO, "--threshold", threshold)


def test_an_unknown_field_or_model_is_a_clear_error():
    with pytest.raises(CommandError, match="no ImageEmbeddingField named 'nope'"):
        call_command("semantic_images_duplicates", *PHOTO, "--field", "nope")
    with pytest.raises(CommandError, match="Name the model with --model"):
        call_command("semantic_images_duplicates")


def test_a_model_with_two_fields_needs_field():
    """It grouped by the model's first ImageEmbeddingField without saying so."""
    two = ("--model", "multifield.TwoImagePhoto")
    with pytest.raises(CommandError, match=r"several ImageEmbeddingFields \(embedding, thumbnail_embedding\)"):
        call_command("semantic_images_duplicates", *two)
    document = json.loads(run_command("semantic_images_duplicates", *two, "--field", "thumbnail_embedding", "--json"))
    assert document["field"] == "thumbnail_embedding" and document["groups"] == []
