"""Load the sample photos (or a folder of your own) into the example site and index them."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from django.core.files import File
from django.core.management.base import CommandError
from PIL import Image, UnidentifiedImageError

from django_semantic_images.fields import EmbeddingStatus
from django_semantic_images.imaging import ImageDecodeError, decode_image
from django_semantic_images.management import DatabaseCommand
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from django_semantic_images.thumbnails import forget_thumbnail
from photos.models import Photo
from photos.samples import SampleText, sample_photo_paths, sample_text


@dataclass
class Source:
    """One place photos come from: its files, what was added, and what was skipped and why."""

    name: str
    files: list[Path]
    samples: bool = False
    #: The folder given (``--folder``): its skipped files are named relative to it. None: the samples.
    root: Path | None = None
    added: list[Photo] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: Samples already there without words (loaded by an earlier version), given their title and alt text.
    titled: list[Photo] = field(default_factory=list)
    #: Files already there whose Photo an earlier run saved but did not embed (it was stopped): embedded now.
    resumed: list[Photo] = field(default_factory=list)
    #: Files already there whose stored copy is gone (a deleted media folder): put back, then checked.
    restored: list[Photo] = field(default_factory=list)

    def summary(self) -> str:
        notes = [f"{len(self.titled)} given their title and alt text"] if self.titled else []
        notes += [f"{len(self.resumed)} left pending by an earlier run"] if self.resumed else []
        notes += [f"{len(self.restored)} put back in the media folder"] if self.restored else []
        notes_text = f" ({', '.join(notes)})" if notes else ""
        return (
            f"{self.name}: {len(self.files)} files, {len(self.added)} added, {len(self.skipped)} skipped{notes_text}."
        )


def give_words(photo: Photo, path: Path) -> bool:
    """Give the sample photo of ``path`` its title and alt text if it is there without them."""
    text = sample_text(path)
    if photo.title or photo.alt_text or not text.title:
        return False
    photo.title, photo.alt_text = text
    photo.save(update_fields=["title", "alt_text"])
    return True


def stored_name(path: Path) -> str:
    """The name the storage gives ``path`` when it is free: ``photos/`` and the file's name cleaned
    ("my photo (1).jpg" is stored as "photos/my_photo_1.jpg")."""
    return Photo._meta.get_field("image").generate_filename(None, path.name)


def stored_name_pattern(name: str) -> str:
    """A regular expression of the names the storage can give a file of the name ``name``, as Django's
    ``Storage.get_available_name`` makes them: ``name`` itself when it is free and fits the image
    field's ``max_length`` (100), else ``<root>_abc1234<extensions>``, the root cut short when the name
    would not fit. The root is the file's name before its first dot (Django 5.1 and later) or before its
    last (Django 4.2 to 5.0): either is matched."""
    max_length = Photo._meta.get_field("image").max_length or 100
    folder, file_name = posixpath.split(name)
    prefix = f"{folder}/" if folder else ""
    others = []
    for extensions in dict.fromkeys(("".join(PurePosixPath(file_name).suffixes), PurePosixPath(file_name).suffix)):
        root = file_name.removesuffix(extensions)
        cut = root[: max(0, max_length - len(prefix) - len("_abc1234") - len(extensions))]
        others.append(rf"{re.escape(prefix + cut)}_[A-Za-z0-9]{{7}}{re.escape(extensions)}")
    other = "|".join(others)
    return rf"^({re.escape(name)}|{other})$" if len(name) <= max_length else rf"^({other})$"


def stored_copy(path: Path) -> Photo | None:
    """The Photo that already holds this file: under its stored name, or, with the same bytes, under the
    name the storage gave it when another picture had that one (``<name>_abc1234.jpg``) or when the name
    was too long for the field (cut short, with the same random part). Two pictures of one name
    (IMG_0001.jpg of two folders) are two photos; the same picture again is one."""
    name = stored_name(path)
    pattern = stored_name_pattern(name)
    try:
        path.open("rb").close()
    except OSError:  # unreadable: why_skip() says why
        return None
    for photo in Photo.objects.filter(image__regex=pattern).order_by("pk"):
        try:
            with photo.image.storage.open(photo.image.name, "rb") as stored:
                if same_bytes(path, stored):
                    return photo
        except OSError:  # its file is gone: a row of the file's own name still stands for it
            if photo.image.name == name:
                return photo
    return None


def same_bytes(path: Path, stored: IO[bytes], chunk: int = 1 << 20) -> bool:
    """Whether ``path`` holds the bytes of the open file ``stored``, read a chunk at a time (a folder's
    video of gigabytes is not held in memory); an unreadable ``path`` holds none (why_skip() says why)."""
    try:
        own = path.open("rb")
    except OSError:
        return False
    with own:
        while True:
            try:
                block = own.read(chunk)
            except OSError:
                return False
            if block != stored.read(chunk):
                return False
            if not block:
                return True


def left_in_storage(path: Path) -> bool:
    """Whether the file's stored name already holds its bytes without a Photo (the media folder of a
    database that is gone): the Photo takes it as it is, rather than a copy under a new name (``_abc1234``)."""
    field = Photo._meta.get_field("image")
    name = stored_name(path)
    if len(name) > (field.max_length or 100) or not field.storage.exists(name):  # a longer name is never stored
        return False
    with field.storage.open(name, "rb") as stored:
        return same_bytes(path, stored)


def put_back(photo: Photo, path: Path) -> bool:
    """Store ``path`` again as the file of ``photo`` if that file is gone from storage (a media folder
    deleted while the database stayed): its pages showed a broken image and thumbnail. It is embedded afterwards
    ("unchanged" when the vectors were made from the same bytes)."""
    storage, name = photo.image.storage, photo.image.name
    if storage.exists(name) or why_skip(path) is not None:
        return False
    with path.open("rb") as fh:
        stored = storage.save(name, File(fh))
    if stored != name:  # taken meanwhile: the photo points at its own copy
        Photo.objects.filter(pk=photo.pk).update(image=stored)
    forget_thumbnail(photo.image)  # sorl-thumbnail still lists the thumbnail that went with the folder
    return True


def why_skip(path: Path) -> str | None:
    """Why ``path`` cannot become a Photo ("not an image", "unreadable: ..."), or None."""
    try:
        with Image.open(path):
            pass
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError:
        pass  # an image, of too many pixels: decode_image says how many, against its limit
    except OSError as exc:
        return f"unreadable: {exc}"
    try:
        decode_image(path.read_bytes(), max_side=64)
    except (ImageDecodeError, OSError) as exc:
        return f"unreadable: {exc}"
    return None


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, through symbolic links to folders too (a phone's mount linked into
    ~/Pictures), each real folder walked once (a link back up is no loop)."""
    files, walked = [], set()
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            folders[:] = []
            continue
        walked.add(real)
        files += [path for path in (Path(root, name) for name in names) if path.is_file()]
    return sorted(files)


def printable(path: Path | str) -> str:
    """``path`` as a terminal of any locale can print it: the bytes of a name that is not UTF-8 (an old
    archive's Latin-1 ``caf\\xe9.jpg``, which Python holds as surrogates) shown escaped."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def given_folders(folder: list[Path] | Path | str | None) -> list[Path]:
    """The folders of ``--folder`` (given once or more; ``call_command(folder=...)`` may pass one),
    each once: the same folder given twice is loaded once."""
    given = [folder] if isinstance(folder, (str, Path)) else list(folder or [])
    folders: dict[str, Path] = {}
    for path in (Path(value).expanduser() for value in given):
        folders.setdefault(os.path.realpath(path), path)
    return list(folders.values())


class Command(DatabaseCommand):
    # DatabaseCommand: a database not migrated or not reachable, or Ctrl-C, ends it with one line, not a traceback.
    help = "Add the sample photos (and/or every file of --folder) as Photos and embed them."

    def add_arguments(self, parser):
        parser.add_argument(
            "--folder",
            action="append",  # --folder A --folder B: both (argparse's default kept only the last)
            type=lambda value: Path(value).expanduser(),  # "~/Pictures" in quotes: the shell left "~" as it is
            help="Also add every image in this folder (recursively, through symbolic links to folders); "
            "give it again for more folders.",
        )
        parser.add_argument("--no-samples", action="store_true", help="Skip the bundled sample photos.")

    def handle(self, *args, folder: list[Path] | Path | str | None = None, no_samples: bool = False, **options):
        verbosity = options.get("verbosity", 1)
        sources = [] if no_samples else [Source("Sample photos", sample_photo_paths(), samples=True)]
        folders = given_folders(folder)
        missing = [printable(path) for path in folders if not path.is_dir()]
        if missing:  # before any file is added
            verb = "is not a folder" if len(missing) == 1 else "are not folders"
            raise CommandError(f"{', '.join(missing)} {verb}.")
        for path in folders:
            sources.append(Source(f"Folder {printable(path)}", folder_files(path), root=path))
        with embedding_deferred():
            for source in sources:
                for path in source.files:
                    existing = stored_copy(path)
                    if existing is not None:
                        source.skipped.append((path, "already there"))
                        if source.samples and give_words(existing, path):
                            source.titled.append(existing)
                        elif existing.embedding_status == EmbeddingStatus.PENDING:
                            # Saved by a run that was stopped before embedding it: nothing else embeds it
                            # in the demo (no worker, no sweep).
                            source.resumed.append(existing)
                        if put_back(existing, path):
                            source.restored.append(existing)
                        continue
                    reason = why_skip(path)
                    if reason is not None:
                        source.skipped.append((path, reason))
                        continue
                    # The samples come with a title and an alt text; a folder's photos without.
                    text = sample_text(path) if source.samples else SampleText("", "")
                    photo = Photo(title=text.title, alt_text=text.alt_text)
                    if left_in_storage(path):
                        photo.image.name = stored_name(path)
                    else:
                        with path.open("rb") as fh:
                            photo.image.save(path.name, File(fh), save=False)
                    photo.save()
                    source.added.append(photo)
        added = {
            photo.pk: photo
            for source in sources
            for photo in (*source.added, *source.titled, *source.resumed, *source.restored)
        }
        report = embed_instances(Photo.objects.filter(pk__in=list(added)))
        for source in sources:
            if verbosity < 1:  # only the photos that failed, below
                break
            self.stdout.write(source.summary())
            # A folder's skipped files are named; the samples' only with -v 2 (on a second run all are there).
            if source.root is not None or verbosity >= 2:
                for path, reason in source.skipped:
                    shown = path.relative_to(source.root) if source.root is not None else path.name
                    self.stdout.write(self.style.WARNING(f"  skipped {printable(shown)}: {reason}"))
        if verbosity >= 1:
            self.stdout.write(f"Embedded: {report}.")
        for pk, reason in report.failed.items():
            name = added[pk].image.name if pk in added else f"photo {pk}"
            self.stdout.write(self.style.WARNING(f"  {name}: {reason}"))
