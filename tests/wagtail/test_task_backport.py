"""The ``django-tasks`` backport that Wagtail installs: on Wagtail 7.0 (``django-tasks<0.8``) it is
older than the API of the tasks engine (``TaskContext``, ``DEFAULT_TASK_QUEUE_NAME``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.celery_worker import database_url

ROOT = Path(__file__).resolve().parents[2]

#: A site with Wagtail's apps starts; its system checks, one per line, then what the engine is.
START = """
import django
django.setup()
from django.core.checks import run_checks
from django_semantic_images.dispatch import unavailable_engines
for message in run_checks(tags=["semantic_images"]):
    print(f"{message.id}: {message.msg}")
print("unavailable:", sorted(unavailable_engines()))
"""


def start_site(tmp_path: Path, semantic_images: dict) -> subprocess.CompletedProcess:
    (tmp_path / "backport_settings.py").write_text(
        f"from tests.wagtail.settings import *\nSEMANTIC_IMAGES = {semantic_images!r}\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "backport_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "example_project")]),
        "DATABASE_URL": database_url(connection.settings_dict),
    }
    return subprocess.run([sys.executable, "-c", START], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.django_db
def test_a_site_that_does_not_use_the_tasks_framework_starts_without_a_warning_about_it(tmp_path):
    """With Wagtail 7.0's backport (0.7) every start logged an ImportError's traceback ("cannot
    run the embedding tasks") and every command warned ``semantic_images.W005``, whose hint (the
    queues of TASKS) cannot help: a site that never asked for the framework. A backport without
    that API is now as if absent; ``ASYNC = "django_tasks"`` is refused (E006) naming the release."""
    auto = start_site(tmp_path, {})
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert "Traceback" not in auto.stderr and "cannot run the embedding tasks" not in auto.stderr, auto.stderr[-3000:]
    assert not [line for line in auto.stdout.splitlines() if line.startswith("semantic_images.")], auto.stdout
    assert "unavailable: []" in auto.stdout
    import django_tasks

    if hasattr(django_tasks, "TaskContext"):  # a backport the engine can use: nothing to refuse
        return
    forced = start_site(tmp_path, {"ASYNC": "django_tasks"})
    (error,) = [line for line in forced.stdout.splitlines() if line.startswith("semantic_images.E006:")]
    assert "django-tasks" in error and "0.7" in error and "TaskContext" in error, error
