"""The routed encoder's tests need their own settings: ``pytest tests/multilingual
--ds=tests.multilingual.settings`` (``make test`` runs it; the main suite leaves this folder out)."""

from django.conf import settings

if "tests.multilingual.photos" not in settings.INSTALLED_APPS:
    collect_ignore_glob = ["test_*.py"]
