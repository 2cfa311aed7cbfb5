"""Settings of the Wagtail example site (development only: DEBUG on unless ``DJANGO_DEBUG=0``).

The database is the Django example site's helper: ``DATABASE_URL`` when set, else an embedded
PostgreSQL with pgvector whose data lives in ``example_wagtail/.pgdata``. ``SECRET_KEY`` is
``DJANGO_SECRET_KEY``, else a random key of this checkout's own in ``example_wagtail/.secret_key``.
"""

import os
from pathlib import Path

from example_project.database import database_config
from example_project.secret_key import secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = secret_key(BASE_DIR / ".secret_key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "home",
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_semantic_images",
    "django_semantic_images.contrib.wagtail",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "wagtail_site.urls"

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

WSGI_APPLICATION = "wagtail_site.wsgi.application"

DATABASES = {"default": database_config(Path(os.environ.get("SEMANTIC_IMAGES_PGDATA", BASE_DIR / ".pgdata")))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "media"))

WAGTAIL_SITE_NAME = "Semantic images: Wagtail example"
# The site's address in Wagtail's emails and previews. ``manage.py demo`` sets it to the address it
# serves (``--addrport``, ``HOST=`` for make); this environment variable, when set, wins there too.
WAGTAILADMIN_BASE_URL = os.environ.get("WAGTAILADMIN_BASE_URL", "http://127.0.0.1:8000")
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
WAGTAILIMAGES_EXTENSIONS = ["gif", "jpg", "jpeg", "png", "webp"]
# A truncated or corrupt upload is refused with the reason under the field, not a server error.
WAGTAILIMAGES_IMAGE_FORM_BASE = "django_semantic_images.contrib.wagtail.forms.ImageForm"

# No Celery app here: uploads are embedded in the web process after commit (docs/wagtail.md says
# how a site sends them to Celery workers or Django's tasks framework instead).
SEMANTIC_IMAGES = {}
