#!/usr/bin/env python
"""The Wagtail example site's manage.py (``make demo-wagtail`` runs ``manage.py demo``)."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The Django example site beside this one lends its database helper and its sample photos.
    sys.path.append(str(Path(__file__).resolve().parent.parent / "example_project"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wagtail_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
