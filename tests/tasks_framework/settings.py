"""Test settings with Django's tasks framework: the database backend of ``django-tasks-db``.

No Celery broker, and the default task backend runs tasks in the background (a
``db_worker`` process), so ``ASYNC = "auto"`` picks the tasks framework. The tests run in
a pytest invocation of their own (``make test`` runs it), with a test database of their
own, so the rest of the suite keeps the in-process default."""

import json
import os

import django

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405
    *([] if django.VERSION >= (6, 0) else ["django_tasks"]),  # the backport before Django 6
    "django_tasks_db",
]
# QUEUES empty: any queue name, so the embedding tasks go to SEMANTIC_IMAGES["QUEUE"].
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": []}}
DATABASES["default"]["TEST"] = {"NAME": "test_semantic_images_tasks"}  # noqa: F405
# The db_worker processes the tests start get their SEMANTIC_IMAGES through the environment.
SEMANTIC_IMAGES = json.loads(os.environ.get("SEMANTIC_IMAGES_JSON", "{}"))
