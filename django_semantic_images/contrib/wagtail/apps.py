from __future__ import annotations

from django.apps import AppConfig


class SemanticImagesWagtailConfig(AppConfig):
    name = "django_semantic_images.contrib.wagtail"
    label = "semantic_images_wagtail"
    verbose_name = "Semantic images for Wagtail"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401 - checks registers the system checks

        signals.connect()
