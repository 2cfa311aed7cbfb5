"""Load the sample photos (or a folder of your own) into the example site and index them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from PIL import Image, UnidentifiedImageError

from django_semantic_images import EmbeddingStatus
from django_semantic_images.imaging import ImageDecodeError, decode_image
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from photos.models import Photo
from photos.samples import SampleText, sample_photo_paths, sample_text


@dataclass
class Source:
    """One place photos come from: its files, what was added, and what was skipped and why."""

    name: str
    files: list[Path]
    samples: bool = False
    added: list[Photo] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: Samples already there without words (loaded by an earlier version), given their title and alt text.
    titled: list[Photo] = field(default_factory=list)
    #: Photos already there but still pending: saved by a run stopped before (or during) its embedding.
    waiting: list[Photo] = field(default_factory=list)

    def summary(self) -> str:
        titled = f" ({len(self.titled)} given their title and alt text)" if self.titled else ""
        return f"{self.name}: {len(self.files)} files, {len(self.added)} added, {len(self.skipped)} skipped{titled}."


def give_words(path: Path) -> Photo | None:
    """The sample photo of ``path`` if it is there without a title or alt text, now with them."""
    text = sample_text(path)
    photo = Photo.objects.filter(image=f"photos/{path.name}", title="", alt_text="").first()
    if photo is None or not text.title:
        return None
    photo.title, photo.alt_text = text
    photo.save(update_fields=["title", "alt_text"])
    return photo


def why_skip(path: Path) -> str | None:
    """Why ``path`` cannot become a Photo ("already there", "not an image", "unreadable: ..."), or None."""
    if Photo.objects.filter(image=f"photos/{path.name}").exists():
        return "already there"
    try:
        with Image.open(path):
            pass
        decode_image(path.read_bytes(), max_side=64)
    except UnidentifiedImageError:
        return "not an image"
    except (ImageDecodeError, OSError) as exc:
        return f"unreadable: {exc}"
    return None


class Command(BaseCommand):
    help = "Add the sample photos (and/or every file of --folder) as Photos and embed them."

    def add_arguments(self, parser):
        parser.add_argument("--folder", type=Path, help="Also add every image in this folder (recursively).")
        parser.add_argument("--no-samples", action="store_true", help="Skip the bundled sample photos.")

    def handle(self, *args, folder: Path | None = None, no_samples: bool = False, **options):
        verbosity = options.get("verbosity", 1)
        sources = [] if no_samples else [Source("Sample photos", sample_photo_paths(), samples=True)]
        if folder is not None:
            if not folder.is_dir():
                raise CommandError(f"{folder} is not a folder.")
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            sources.append(Source(f"Folder {folder}", files))
        with embedding_deferred():
            for source in sources:
                for path in source.files:
                    reason = why_skip(path)
                    if reason is not None:
                        source.skipped.append((path, reason))
                        if reason == "already there":
                            if source.samples and (photo := give_words(path)):
                                source.titled.append(photo)
                            source.waiting.extend(
                                Photo.objects.filter(
                                    image=f"photos/{path.name}", embedding_status=EmbeddingStatus.PENDING
                                )
                            )
                        continue
                    # The samples come with a title and an alt text; a folder's photos without.
                    text = sample_text(path) if source.samples else SampleText("", "")
                    photo = Photo(title=text.title, alt_text=text.alt_text)
                    with path.open("rb") as fh:
                        photo.image.save(path.name, File(fh), save=False)
                    photo.save()
                    source.added.append(photo)
        added = {photo.pk: photo for source in sources for photo in (*source.added, *source.titled, *source.waiting)}
        report = embed_instances(Photo.objects.filter(pk__in=list(added)))
        for source in sources:
            if verbosity < 1:  # only the photos that failed, below
                break
            self.stdout.write(source.summary())
            # A folder's skipped files are named; the samples' only with -v 2 (on a second run all are there).
            if source.name.startswith("Folder") or verbosity >= 2:
                root = folder if source.name.startswith("Folder") else None
                for path, reason in source.skipped:
                    shown = path.relative_to(root) if root is not None else path.name
                    self.stdout.write(self.style.WARNING(f"  skipped {shown}: {reason}"))
        if verbosity >= 1:
            self.stdout.write(f"Embedded: {report}.")
        for pk, reason in report.failed.items():
            name = added[pk].image.name if pk in added else f"photo {pk}"
            self.stdout.write(self.style.WARNING(f"  {name}: {reason}"))
