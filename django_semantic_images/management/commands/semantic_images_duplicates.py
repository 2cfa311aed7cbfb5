"""``manage.py semantic_images_duplicates``: the groups of near-identical images, as text or JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import CommandError
from django.core.serializers.json import DjangoJSONEncoder

from ...duplicates import default_threshold, group_rows, near_duplicates
from ...fields import embedding_fields, embedding_path, follow
from .. import DatabaseCommand, resolve_model


class Command(DatabaseCommand):
    help = (
        "Print the groups of near-identical images (edited copies of one picture), largest first, "
        'from the visual vectors; pairs marked "not duplicates" are never grouped.'
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", help="app_label.ModelName (needed when several models have the field).")
        parser.add_argument(
            "--field",
            help="The ImageEmbeddingField, when the model has several (or a path, e.g. semantic_vectors__embedding).",
        )
        parser.add_argument(
            "--threshold",
            type=float,
            help='Largest cosine distance between copies, in (0, 1] (default SEMANTIC_IMAGES["DUPLICATE_THRESHOLD"]).',
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON document instead of text.")

    def handle(self, *args: Any, model: str | None, field: str | None, threshold: float | None, **opts: Any) -> None:
        model_cls = resolve_model(model, joined=True)  # Wagtail's images too, through their vectors
        names = [f.name for f in embedding_fields(model_cls)]
        if field is None and len(names) > 1:
            raise CommandError(
                f"{model_cls._meta.label} has several ImageEmbeddingFields ({', '.join(names)}): name one with --field."
            )
        try:
            path = embedding_path(model_cls, field)
            limit = default_threshold() if threshold is None else threshold
            started = time.perf_counter()
            queryset = model_cls._default_manager.all()
            groups = near_duplicates(queryset, limit, field=field)
        except (LookupError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        seconds = time.perf_counter() - started
        embedding = path.field
        shown = queryset if path.prefix else queryset.defer(embedding.visual_field, embedding.semantic_field)
        rows = group_rows(shown, groups)
        image_path = path.prefix + embedding.image_field
        found: list[dict[str, Any]] = [
            {
                "distance": round(group.distance, 4),
                "items": [
                    {"pk": row.pk, "str": str(row), "file": getattr(follow(row, image_path), "name", None) or ""}
                    for row in members
                ],
            }
            for group, members in rows
        ]
        if opts["json"]:
            document = {
                "model": model_cls._meta.label,
                "field": path.name,
                "threshold": limit,
                "groups": found,
            }
            self.stdout.write(json.dumps(document, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2))
            return
        images = sum(len(group["items"]) for group in found)
        self.stdout.write(
            f"{len(found)} group(s) of near-duplicates, {images} images, in {model_cls._meta.label} "
            f"(threshold {limit:g} cosine distance; {seconds:.1f} s)."
        )
        for number, group in enumerate(found, 1):
            self.stdout.write(f"\nGroup {number}: {len(group['items'])} images, within {group['distance']:.3f}")
            for item in group["items"]:
                self.stdout.write(f"  {item['pk']!s:>8}  {item['str']}  ({item['file']})")
