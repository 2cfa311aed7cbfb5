"""Storages for the tests."""

from __future__ import annotations

from django.core.files.storage import FileSystemStorage


class OverwritingStorage(FileSystemStorage):
    """Writes a file over the one of the same name (``FileSystemStorage(allow_overwrite=True)``
    on Django 5.1 and later, S3's ``file_overwrite``), on every Django version tested."""

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        self.delete(name)
        return name
