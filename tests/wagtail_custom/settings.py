"""Test settings with a custom Wagtail image model (``WAGTAILIMAGES_IMAGE_MODEL``).

The Wagtail settings, plus an app with ``CustomImage`` and ``CustomRendition``; a pytest
invocation of its own (``make test`` runs it), with a test database of its own, because the
image model is chosen once, before the migrations run."""

from tests.wagtail.settings import *  # noqa: F403

_contrib = INSTALLED_APPS.index("django_semantic_images.contrib.wagtail")  # noqa: F405
INSTALLED_APPS = [*INSTALLED_APPS[:_contrib], "tests.wagtail_custom.images", *INSTALLED_APPS[_contrib:]]  # noqa: F405
WAGTAILIMAGES_IMAGE_MODEL = "customimages.CustomImage"
DATABASES["default"]["TEST"] = {"NAME": "test_semantic_images_wagtail_custom"}  # noqa: F405
