"""The tasks framework's tests need its apps: ``pytest tests/tasks_framework --ds=tests.tasks_framework.settings``
(``make test`` runs it after the main suite, which leaves this folder out)."""

from django.conf import settings

if "django_tasks_db" not in settings.INSTALLED_APPS:
    collect_ignore_glob = ["test_*.py"]
