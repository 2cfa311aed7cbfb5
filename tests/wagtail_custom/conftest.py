"""The custom image model's tests need their own settings: ``pytest tests/wagtail_custom
--ds=tests.wagtail_custom.settings`` (``make test`` runs it; the main suite and the Wagtail
run leave this folder out). The Wagtail run's fixtures serve here: ``get_image_model()`` is
``CustomImage``."""

from django.conf import settings

from tests.wagtail.conftest import embed, make_image, sample_images, superuser_client

__all__ = ["embed", "make_image", "sample_images", "superuser_client"]

if getattr(settings, "WAGTAILIMAGES_IMAGE_MODEL", None) != "customimages.CustomImage":
    collect_ignore_glob = ["test_*.py"]
