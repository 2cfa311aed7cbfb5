"""Test settings with a model whose field uses ``RoutedConSEEncoder`` (two text models).

A pytest invocation of its own (``make test`` runs it: ``pytest tests/multilingual
--ds=tests.multilingual.settings``), so that the main suite's deploy step and workers, which
prepare and load every field's encoder, do not build multilingual-e5-small."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.multilingual.photos"]  # noqa: F405
ROOT_URLCONF = "tests.multilingual.urls"
DATABASES["default"]["TEST"] = {"NAME": "test_semantic_images_multilingual"}  # noqa: F405
