"""Test settings: the example site, a private media folder, and its own database server."""

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("SEMANTIC_IMAGES_PGDATA", str(ROOT / ".pgdata-test"))
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="semantic-images-media-"))

from example_project.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

INSTALLED_APPS = [*INSTALLED_APPS, "tests.multifield"]  # noqa: F405

if os.environ.get("SEMANTIC_IMAGES_TEST_POOL") == "1":  # Django's connection pool (tests/test_fork_pool.py)
    DATABASES["default"]["OPTIONS"]["pool"] = True  # noqa: F405
