"""The example site's commands: load_photos names what it skips; demo stops its database with it."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from PIL import Image

from photos.models import Photo
from tests.conftest import image_bytes


@pytest.mark.django_db
def test_load_photos_counts_the_folders_files_and_names_each_skipped_one(tmp_path, make_photo):
    jpeg = image_bytes(Image.new("RGB", (320, 240), (20, 120, 200)))
    make_photo(jpeg, name="already.jpg")
    (tmp_path / "new.jpg").write_bytes(jpeg)
    (tmp_path / "already.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    out = StringIO()
    call_command("load_photos", "--no-samples", "--folder", str(tmp_path), stdout=out)
    text = out.getvalue()
    assert f"Folder {tmp_path}: 4 files, 1 added, 3 skipped." in text, text
    assert "skipped already.jpg: already there" in text
    assert "skipped notes.txt: not an image" in text
    assert "skipped broken.jpg: unreadable: " in text
    assert Photo.objects.filter(image="photos/new.jpg", embedding_status="embedded").exists()
