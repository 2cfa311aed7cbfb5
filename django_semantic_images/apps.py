from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import pre_migrate

from .fields import models_with_embeddings


def _ensure_extension(using: str = "default", **kwargs: Any) -> None:
    """Create the pgvector extension before any app's migrations add vector columns."""
    from django.db import connections

    from .extension import create_vector_extension

    create_vector_extension(connections[using])


class SemanticImagesConfig(AppConfig):
    name = "django_semantic_images"
    label = "semantic_images"
    verbose_name = "Semantic images"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401  (registers the system checks)

        for model in models_with_embeddings():
            signals.connect(model)
        pre_migrate.connect(_ensure_extension, dispatch_uid="semantic_images:extension")
