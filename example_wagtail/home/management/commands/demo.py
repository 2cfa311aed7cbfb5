"""``manage.py demo``: migrate, add the sample photos as Wagtail images (embedded), a page that
uses them, an editor's login, and serve.

The embedded PostgreSQL stops with the demo (Ctrl-C, SIGTERM or SIGHUP), as in the Django example.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.files.images import ImageFile
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Count
from wagtail.images import get_image_model
from wagtail.models import Collection, Page, Site

from django_semantic_images.contrib.wagtail.models import ImageVectors
from django_semantic_images.encoders import get_encoder
from example_project.address import admin_base_url, check_free, site_url
from example_project.database import migrate
from home.models import HomePage
from photos.samples import sample_photo_paths

USERNAME = PASSWORD = "admin"
COLLECTION = "Sample photos"
#: The searches the demo suggests, and the sample image (by title) each finds first: words that are in
#: no title, so that the image is found by meaning, not as a keyword.
SUGGESTIONS = {"a cat on a blanket": "chelsea", "a photographer": "camera", "a red motorbike": "motorcycle_left"}


class Command(BaseCommand):
    help = "Set up the Wagtail example site with the sample photos as indexed images, and serve it."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-serve", action="store_true", help="Set up only.")

    def handle(self, *args, addrport: str, no_serve: bool, **options):
        if not no_serve:
            check_free(addrport)  # before minutes of set-up, and so that the database stops with the demo
        # Wagtail's emails and previews link to the address served (HOST=127.0.0.1:8001 make demo-wagtail),
        # not the settings' default port 8000; the environment variable, when set, wins.
        settings.WAGTAILADMIN_BASE_URL = admin_base_url(addrport)
        migrate()
        images = self.add_images()
        self.add_home_page(images)
        self.point_site(settings.WAGTAILADMIN_BASE_URL)
        # Images saved by an earlier, interrupted demo are embedded now (resumable).
        call_command("semantic_images_reindex", model=ImageVectors._meta.label, verbosity=0)
        states = dict(ImageVectors.objects.values_list("embedding_status").annotate(n=Count("pk")).order_by())
        self.stdout.write("Images: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
        self.stdout.write("Preparing the search model...")
        get_encoder().encode_text("a cup of coffee")  # the first search is then quick
        User = get_user_model()
        if not User.objects.filter(username=USERNAME).exists():
            User.objects.create_superuser(USERNAME, "admin@example.com", PASSWORD)
        url = site_url(addrport)
        self.stdout.write(
            self.style.SUCCESS(
                f"\nWagtail example: {url}/admin/images/   login: {USERNAME} / {PASSWORD}\n"
                f"Search the images with: {', '.join(SUGGESTIONS)}\n"
                f"The page editor's image chooser: {url}/admin/pages/{HomePage.objects.first().pk}/edit/\n"
                f"Wagtail's emails and previews link to {settings.WAGTAILADMIN_BASE_URL} (WAGTAILADMIN_BASE_URL)\n"
            )
        )
        if not no_serve:
            call_command("runserver", addrport, use_reloader=False)

    def add_images(self) -> list:
        """The sample photos as Wagtail images titled by their file names (as an upload names them)."""
        Image = get_image_model()
        root = Collection.get_first_root_node()
        collection = Collection.objects.filter(name=COLLECTION).first() or root.add_child(name=COLLECTION)
        images = []
        for path in sample_photo_paths():
            title = Path(path).stem
            image = Image.objects.filter(title=title, collection=collection).first()
            if image is None:
                with path.open("rb") as handle, transaction.atomic():
                    image = Image(title=title, collection=collection, file=ImageFile(handle, name=path.name))
                    image.save()  # embedded after the commit, in this process
                self.stdout.write(f"Added {title}")
            elif not image.file.storage.exists(image.file.name):
                self.put_back(image, path)
            images.append(image)
        return images

    def put_back(self, image, path: Path) -> None:
        """The file of an image whose media folder was deleted while the database stayed (every page and
        listing showed it broken): stored again, and its renditions, whose files went with it, dropped."""
        with path.open("rb") as handle:
            stored = image.file.storage.save(image.file.name, File(handle))
        if stored != image.file.name:  # taken meanwhile: the image points at its own copy
            type(image).objects.filter(pk=image.pk).update(file=stored)
        image.renditions.all().delete()
        self.stdout.write(f"Put back {image.title}")

    def add_home_page(self, images: list) -> None:
        """A home page whose body shows an image and a gallery: its editor opens the chooser."""
        if HomePage.objects.exists():
            return
        root = Page.get_first_root_node()
        by_title = {image.title: image for image in images}
        body = [("heading", "Photos found by meaning")]
        if "coffee" in by_title:
            body.append(("image", {"image": by_title["coffee"], "alt_text": "A cup of coffee", "decorative": False}))
        body.append(("gallery", [image for title, image in by_title.items() if title != "coffee"][:6]))
        home = root.add_child(instance=HomePage(title="Home", slug="semantic-home", body=body))
        site = Site.objects.filter(is_default_site=True).first()
        if site is None:
            Site.objects.create(hostname="localhost", root_page=home, is_default_site=True)
        else:
            site.root_page = home
            site.save()

    def point_site(self, base_url: str) -> None:
        """The default Site at the address the demo serves (``base_url``: WAGTAILADMIN_BASE_URL), on
        every run: Wagtail's migration made it localhost:80, so page links and the "View live"
        buttons pointed at a port nothing served. Every interface (0.0.0.0) is linked as localhost."""
        address = urlsplit(base_url)
        hostname = address.hostname or "localhost"
        port = address.port or (443 if address.scheme == "https" else 80)
        site = Site.objects.get(is_default_site=True)
        site.hostname = "localhost" if hostname in ("0.0.0.0", "::") else hostname
        site.port = port
        site.save()
