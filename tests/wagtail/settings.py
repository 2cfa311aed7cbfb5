"""Test settings with Wagtail: the example site, Wagtail's admin at /cms/ and contrib.wagtail.

The Wagtail tests run in a pytest invocation of their own (``make test`` runs both), so the
rest of the suite does not migrate Wagtail's tables."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [
    *INSTALLED_APPS,  # noqa: F405
    "wagtail.users",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.api.v2",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django_semantic_images.contrib.wagtail",
    "tests.wagtail.pages",  # a page type with an image chooser, for the browser tests
]
ROOT_URLCONF = "tests.wagtail.urls"
WAGTAIL_SITE_NAME = "Semantic images test"
WAGTAILADMIN_BASE_URL = "http://testserver"
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
# A test database of its own, so this invocation can run beside the main suite's.
DATABASES["default"]["TEST"] = {"NAME": "test_semantic_images_wagtail"}  # noqa: F405
# Wagtail's own default list (AVIF included) plus SVG.
WAGTAILIMAGES_EXTENSIONS = ["avif", "gif", "jpg", "jpeg", "png", "webp", "svg"]
# No avatars from gravatar.com: the tests run offline (the browser tests wait for every image).
WAGTAIL_GRAVATAR_PROVIDER_URL = None
