"""Load the sample photos (or a folder of your own) into the example site and index them."""

from __future__ import annotations

from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from photos.models import Photo
from photos.samples import sample_photo_paths

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


class Command(BaseCommand):
    help = "Add the sample photos (and/or the images of --folder) as Photos and embed them."

    def add_arguments(self, parser):
        parser.add_argument("--folder", type=Path, help="Also add every image in this folder (recursively).")
        parser.add_argument("--no-samples", action="store_true", help="Skip the bundled sample photos.")

    def handle(self, *args, folder: Path | None = None, no_samples: bool = False, **options):
        paths = [] if no_samples else sample_photo_paths()
        if folder is not None:
            if not folder.is_dir():
                raise CommandError(f"{folder} is not a folder.")
            paths += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        created = []
        with embedding_deferred():
            for path in paths:
                if Photo.objects.filter(image=f"photos/{path.name}").exists():
                    continue
                photo = Photo()
                with path.open("rb") as fh:
                    photo.image.save(path.name, File(fh), save=False)
                photo.save()
                created.append(photo)
        report = embed_instances(Photo.objects.filter(pk__in=[p.pk for p in created]))
        self.stdout.write(f"Added {len(created)} photos ({len(paths) - len(created)} already there): {report}.")
        for pk, reason in report.failed.items():
            self.stdout.write(self.style.WARNING(f"  photo {pk}: {reason}"))
