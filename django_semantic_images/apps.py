from __future__ import annotations

import logging
from importlib.util import find_spec
from typing import Any

import django
from django.apps import AppConfig
from django.db.models.signals import pre_migrate

from .dispatch import DJANGO_TASKS, engine_unavailable
from .fields import models_using_embeddings

logger = logging.getLogger(__name__)


#: What ``task_framework`` takes from the ``django-tasks`` backport (0.12 is tested): Wagtail 7.0 installs
#: 0.7, which has neither; such a backport is left alone, as if absent (it logged a traceback at every start
#: and made every command warn W005, for sites that never asked for the framework).
BACKPORT_API = ("TaskContext", "DEFAULT_TASK_QUEUE_NAME")


def task_framework_installed() -> bool:
    """Is Django's tasks framework here: ``django.tasks`` (Django 6+) or a ``django-tasks`` backport
    with ``BACKPORT_API``?"""
    if django.VERSION >= (6, 0):
        return True
    if find_spec("django_tasks") is None:
        return False
    import django_tasks

    return all(hasattr(django_tasks, name) for name in BACKPORT_API)


def register_task_framework() -> None:
    """Offer Django's tasks framework to dispatch as an engine, when it is installed."""
    if not task_framework_installed():
        return
    try:
        from . import task_framework
    except Exception as exc:  # noqa: BLE001 - e.g. a TASKS backend that refuses both queues: never break startup
        logger.warning("Django's tasks framework cannot run the embedding tasks; not using it.", exc_info=True)
        engine_unavailable(DJANGO_TASKS, f"{type(exc).__name__}: {exc}")
        return
    task_framework.register()


def _ensure_extension(using: str = "default", **kwargs: Any) -> None:
    """Create the pgvector extension before any app's migrations add vector columns: on a database
    where the routers let a model with vector columns migrate (not another app's own database)."""
    from django.db import connections

    from .extension import create_vector_extension, vector_columns_migrate_to

    connection = connections[using]
    if connection.vendor == "postgresql" and vector_columns_migrate_to(connection):
        create_vector_extension(connection)


class SemanticImagesConfig(AppConfig):
    name = "django_semantic_images"
    label = "semantic_images"
    verbose_name = "Semantic images"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signals, thumbnails  # noqa: F401  (checks: registers the system checks)

        for model in models_using_embeddings():
            signals.connect(model)
            thumbnails.connect(model)
        pre_migrate.connect(_ensure_extension, dispatch_uid="semantic_images:extension")
        register_task_framework()
