"""``manage.py demo``: migrate, load and index the sample photos, create an admin, serve the
public search page at ``/`` and the admin at ``/admin/``.

The example site's embedded PostgreSQL stops with the demo: on Ctrl-C, SIGTERM or SIGHUP
(example_project/database.py).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from django_semantic_images.encoders import get_encoder
from example_project.address import check_free, site_url
from example_project.database import migrate

USERNAME = PASSWORD = "admin"


class Command(BaseCommand):
    help = "Set up the example site with indexed sample photos and serve it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--addrport", default="127.0.0.1:8000", help="Serve on this address and port (default 127.0.0.1:8000)."
        )
        parser.add_argument("--no-serve", action="store_true", help="Set up only.")
        parser.add_argument(
            "--empty", action="store_true", help="Load no sample photos and prepare no model (a quick start)."
        )

    def handle(self, *args, addrport: str, no_serve: bool, empty: bool = False, **options):
        if not no_serve:
            check_free(addrport)  # before minutes of set-up, and so that the database stops with the demo
        migrate()
        if not empty:
            call_command("load_photos", stdout=self.stdout, stderr=self.stderr)
            # Load the search model in this process (runserver runs here, without its reloader), so the
            # first search is quick; on a new machine this also exports the ONNX query model once.
            self.stdout.write("Preparing the search model...")
            get_encoder().encode_text("a cup of coffee")
        User = get_user_model()
        if not User.objects.filter(username=USERNAME).exists():
            User.objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        url = site_url(addrport)
        self.stdout.write(
            self.style.SUCCESS(
                f"\nExample site: {url}/   (public search: no login)\n"
                f"Admin:        {url}/admin/photos/photo/   login: {USERNAME} / {PASSWORD}\n"
                f"Try the search box with: a cup of coffee\n"
            )
        )
        if not no_serve:
            call_command("runserver", addrport, use_reloader=False)
