"""WSGI entry point of the Wagtail example site."""

import os
import sys
from pathlib import Path

from django.core.wsgi import get_wsgi_application

sys.path.append(str(Path(__file__).resolve().parent.parent.parent / "example_project"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wagtail_site.settings")
application = get_wsgi_application()
