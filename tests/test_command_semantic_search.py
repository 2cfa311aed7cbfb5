"""``manage.py semantic_search`` from a terminal."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db

#: The test settings add a second searchable model (tests.multifield): name the example site's.
PHOTO = ("--model", "photos.Photo")


def test_text_search_prints_ranked_results(sample_photos, capsys):
    call_command("semantic_search", "a cup of coffee", "--limit", "3", *PHOTO)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "pk", "item"]
    first = lines[1].split()
    assert first[0] == "1" and int(first[2]) == sample_photos["coffee"].pk
    assert len(lines) == 4


def test_image_search_finds_the_same_photo(sample_photos, sample_paths, capsys):
    call_command("semantic_search", "--image", str(sample_paths["rocket"]), *PHOTO)
    first = capsys.readouterr().out.strip().splitlines()[1].split()
    assert int(first[2]) == sample_photos["rocket"].pk


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(CommandError, match="either words"):
        call_command("semantic_search")
    with pytest.raises(CommandError, match="not a file"):
        call_command("semantic_search", "--image", str(tmp_path / "missing.jpg"), *PHOTO)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(CommandError, match="not an image"):
        call_command("semantic_search", "--image", str(bad), *PHOTO)
    # A file that cannot be read (here one that fails with EIO; a file of another user alike) was a
    # traceback (OSError) instead of the command's error.
    with pytest.raises(CommandError, match="/proc/self/mem cannot be read: Input/output error"):
        call_command("semantic_search", "--image", "/proc/self/mem", *PHOTO)
    with pytest.raises(CommandError, match="Name the model with --model .*photos.Photo, multifield.TwoImagePhoto"):
        call_command("semantic_search", "cats")
    with pytest.raises(CommandError, match="Unknown model"):
        call_command("semantic_search", "cats", "--model", "nope.Nothing")
    for limit in ("0", "-5"):  # not quietly one result
        with pytest.raises(CommandError, match=f"--limit must be at least 1, not {limit}"):
            call_command("semantic_search", "cats", "--limit", limit, *PHOTO)


def test_a_model_with_two_fields_needs_field_and_searches_the_one_named(capsys):
    """It searched the model's first ImageEmbeddingField without saying so, and no option named another."""
    two = ("--model", "multifield.TwoImagePhoto")
    with pytest.raises(CommandError, match=r"several ImageEmbeddingFields .*embedding, thumbnail_embedding.* --field"):
        call_command("semantic_search", "cats", *two)
    with pytest.raises(CommandError, match="no ImageEmbeddingField named 'nope'"):
        call_command("semantic_search", "cats", *two, "--field", "nope")
    call_command("semantic_search", "cats", *two, "--field", "thumbnail_embedding")
    assert "No embedded images yet" in capsys.readouterr().out


def test_a_limit_past_postgresqls_bigint_is_a_clear_error():
    """--limit 99999999999999999999 reached PostgreSQL's LIMIT and ended in DataError's traceback
    ("bigint out of range")."""
    with pytest.raises(CommandError, match=r"^--limit must be at most 9223372036854775807, not 99999999999999999999"):
        call_command("semantic_search", "cats", "--limit", "99999999999999999999", *PHOTO)
    # The largest still ranks (no rows here, so no results).
    call_command("semantic_search", "cats", "--limit", str(2**63 - 1), *PHOTO)


def test_a_row_with_a_zero_vector_is_printed_last_without_a_score(sample_photos, capsys):
    """A zero vector (written by SQL: the pipeline refuses one) scores NaN, which was printed "nan"."""
    import numpy as np

    from photos.models import Photo

    coffee = sample_photos["coffee"]
    Photo.objects.filter(pk=coffee.pk).update(embedding_semantic=np.zeros(384, np.float32))
    call_command("semantic_search", "a cup of coffee", "--limit", "100", *PHOTO)
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    assert lines and "nan" not in " ".join(lines).lower()
    pks = [int(line.split()[2]) for line in lines]
    assert pks[0] != coffee.pk
    if coffee.pk in pks:
        assert pks[-1] == coffee.pk and lines[-1].split()[1] == "-"


def test_an_encoder_that_cannot_load_is_a_clear_error(sample_paths, settings):
    """A text model that is not there (a folder missing, a hub unreachable) ended the search by words in
    an OSError's traceback, and a search by --image said the image could not be read."""
    settings.SEMANTIC_IMAGES = {"TEXT_MODEL": {"MODEL": "/nonexistent/text-model"}}
    with pytest.raises(CommandError, match=r"^The encoder could not be loaded: .*/nonexistent/text-model"):
        call_command("semantic_search", "a cup of coffee", *PHOTO)
    with pytest.raises(CommandError, match=r"^The encoder could not be loaded: .*/nonexistent/text-model"):
        call_command("semantic_search", "--image", str(sample_paths["rocket"]), *PHOTO)


def test_words_the_text_model_cannot_read_are_matched_as_keywords_with_a_note(sample_photos, capsys):
    """The bundled MiniLM reads Latin script only: Cyrillic words were ranked by a vector that is
    noise, every photo printed with a score; as the admin and the API, they are now matched as
    keywords in the text fields, unranked, and a note says so."""
    from photos.models import Photo

    chelsea = sample_photos["chelsea"]
    Photo.objects.filter(pk=chelsea.pk).update(alt_text="Рыжая кошка на диване")
    call_command("semantic_search", "кошка", *PHOTO)
    captured = capsys.readouterr()
    assert "cannot read Cyrillic script" in captured.err and "keywords in title, alt_text" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 and lines[1].split()[1:3] == ["-", str(chelsea.pk)]
