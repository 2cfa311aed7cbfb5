"""Settings of the example site (development only: DEBUG on unless ``DJANGO_DEBUG=0``).

``SECRET_KEY`` is ``DJANGO_SECRET_KEY``, else a random key of this checkout's own, kept in
``example_project/.secret_key`` (``secret_key.py``): never one written in the repository.
"""

import os
from pathlib import Path

from .database import database_config
from .secret_key import secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = secret_key(BASE_DIR / ".secret_key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # Django 6.1 checks it is installed for the HNSW indexes (postgres.E005)
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "sorl.thumbnail",  # the "thumbnails" extra: the API's, the admin's and the public page's thumbnails
    "django_semantic_images",
    "photos",
]

# sorl-thumbnail's Pillow engine, which also reads 16-bit greyscale (its own turns it white).
THUMBNAIL_ENGINE = "django_semantic_images.thumbnail_engine.Engine"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {"default": database_config(Path(os.environ.get("SEMANTIC_IMAGES_PGDATA", BASE_DIR / ".pgdata")))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `manage.py collectstatic` gathers them for a web server in front (DEBUG off: Django serves none).
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "static"))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))

# Celery: set CELERY_BROKER_URL (e.g. redis://127.0.0.1:6379/0) to embed in workers;
# without it, uploads are embedded in-process after commit.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker started while Redis is down waits for it (docs/workers.md#restarted-servers).
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# `celery -A example_project beat` runs the sweep that re-queues lost embeddings (docs/workers.md):
# every 10 s, so that with the default LEASE (30 s) lost work is sent again within 40 s.
CELERY_BEAT_SCHEDULE = {"semantic-images-sweep": {"task": "semantic_images.sweep", "schedule": 10.0}}

SEMANTIC_IMAGES = {}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Scopes of django_semantic_images.api.SemanticSearchThrottle (per user, else per address);
    # API_THROTTLING=0 leaves both unrated (a load test from one address: benchmarks/load.py).
    "DEFAULT_THROTTLE_RATES": (
        {"semantic_search": "120/min", "semantic_image_search": "20/min"}
        if os.environ.get("API_THROTTLING", "1") != "0"
        else {}
    ),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Example site: semantic image search",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from the drf-spectacular-sidecar wheel: no CDN needed.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
