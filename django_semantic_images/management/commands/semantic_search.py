"""``manage.py semantic_search "words"`` or ``--image PATH``: ranked results with scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from ...encoders.base import ENCODER_UNAVAILABLE
from ...fields import embedding_fields, embedding_path
from ...imaging import ImageDecodeError
from ...query import similar_to, text_search
from .. import DatabaseCommand, resolve_model

#: The largest LIMIT PostgreSQL takes (a bigint).
MAX_LIMIT = 2**63 - 1


def readable(image: Path) -> None:
    """A CommandError unless ``image`` is a file this process can read (before the encoder loads: an
    ``OSError`` after it may be the encoder's)."""
    if not image.is_file():
        raise CommandError(f"{image} is not a file.")
    try:
        with image.open("rb") as file:
            file.read(1)
    except OSError as exc:  # another user's file, a disk error
        raise CommandError(f"{image} cannot be read: {exc.strerror or exc}") from exc


class Command(DatabaseCommand):
    help = "Search images by meaning (text) or by likeness (--image) and print ranked results."

    def add_arguments(self, parser):
        parser.add_argument("query", nargs="?", help="Words to search for.")
        parser.add_argument("--image", type=Path, help="Find images that look like this file.")
        parser.add_argument("--model", help="app_label.ModelName (needed when several models have the field).")
        parser.add_argument(
            "--field",
            help="The ImageEmbeddingField to search (needed when the model has several), or a path to one "
            "(semantic_vectors__embedding).",
        )
        parser.add_argument("--limit", type=int, default=10, help="How many results to print (default 10).")

    def handle(
        self,
        *args: Any,
        query: str | None,
        image: Path | None,
        model: str | None,
        field: str | None,
        limit: int,
        **opts: Any,
    ):
        if bool(query) == bool(image):
            raise CommandError('Give either words ("a red bicycle") or --image PATH.')
        if limit < 1:
            raise CommandError(f"--limit must be at least 1, not {limit}.")
        if limit > MAX_LIMIT:  # PostgreSQL's LIMIT is a bigint: "bigint out of range"
            raise CommandError(f"--limit must be at most {MAX_LIMIT}, not {limit}.")
        model_cls = resolve_model(model, joined=True)  # Wagtail's images too
        names = [f.name for f in embedding_fields(model_cls)]
        if field is None and len(names) > 1:
            raise CommandError(
                f"{model_cls._meta.label} has several ImageEmbeddingFields ({', '.join(names)}): name one with --field."
            )
        if field is not None:
            try:
                embedding_path(model_cls, field)  # its own field's name, or a path (Wagtail's images)
            except LookupError as exc:
                raise CommandError(str(exc)) from exc
        qs = model_cls._default_manager.all()
        note: str | None = None
        if image is not None:
            readable(image)
        try:
            if image is not None:
                results = similar_to(qs, str(image), field=field)
            else:  # words the text model cannot read: keyword matches, unranked, and a note (as the APIs)
                results, note = text_search(qs, query or "", field=field)
            rows = list(results[:limit])
        except (ImageDecodeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        except ENCODER_UNAVAILABLE as exc:  # weights or a text model missing, a wheel not installed
            raise CommandError(f"The encoder could not be loaded: {exc}") from exc
        if note and opts["verbosity"] > 0:
            self.stderr.write(note, style_func=str)  # a note, not an error; stdout keeps the rows alone
        if not rows:
            self.stdout.write(
                "No image's text fields hold these words."
                if note
                else "No embedded images yet: run `manage.py semantic_images_reindex`."
            )
            return
        self.stdout.write(f"{'rank':>4}  {'score':>6}  {'pk':>6}  item")
        for rank, row in enumerate(rows, 1):
            # None: a zero vector (no direction, no cosine: expressions.Score), ranked last; none at
            # all: a keyword match, unranked.
            score = getattr(row, "score", None)
            score = "-" if score is None else f"{score:.3f}"
            self.stdout.write(f"{rank:>4}  {score:>6}  {row.pk!s:>6}  {row}")
