"""The upload limit under ASGI: Django's ASGI handler, driven as a server drives it.

Django's ``ASGIHandler`` reads the whole request body (to a temporary file) before any middleware or
view runs, so the views' check of the ``Content-Length`` came after a huge body had been received.
``UploadLimitMiddleware`` (django_semantic_images/asgi.py) wraps the ASGI application: a search by
photo over the limit is answered without its body being received at all.
"""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import reverse
from PIL import Image

from django_semantic_images.asgi import UploadLimitMiddleware
from django_semantic_images.uploads import MULTIPART_OVERHEAD
from tests.asgi_exchange import MIB, Exchange, huge
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db

SEARCH = "/api/photos/search/"


@pytest.fixture(autouse=True)
def no_throttle_history():
    cache.clear()


@pytest.fixture
def application():
    """The example site's ASGI application (example_project/asgi.py), as a server imports it."""
    from example_project.asgi import application

    assert isinstance(application, UploadLimitMiddleware)
    return application


def form_chunks(form: bytes, size: int = 4096) -> list[bytes]:
    return [form[i : i + size] for i in range(0, len(form), size)]


def photo_form(field: str = "image") -> bytes:
    jpeg = image_bytes(Image.new("RGB", (64, 64), (200, 40, 40)))
    upload = io.BytesIO(jpeg)
    upload.name = "query.jpg"
    return encode_multipart(BOUNDARY, {field: upload})


def test_an_api_upload_declared_over_the_limit_is_refused_before_its_body_is_received(application, settings):
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": 20_000}
    size = 40 * MIB
    headers = {"content-type": MULTIPART_CONTENT, "content-length": str(size)}
    exchange = Exchange(application, SEARCH, huge(size), headers)
    assert exchange.status == 413, exchange.body
    assert b"limit is 20,000 bytes" in exchange.body
    assert exchange.received == 0


def test_an_upload_under_another_languages_prefix_is_refused_before_its_body_is_received(settings):
    """A multilingual site's API under ``i18n_patterns``: ``/fr/...`` resolves only with French
    active, as ``LocaleMiddleware`` makes it for the view; the limit is found there too."""
    from django.core.asgi import get_asgi_application

    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": 20_000}
    settings.ROOT_URLCONF = "tests.i18n_urls"
    settings.LANGUAGES = [("en-us", "English"), ("fr", "French")]
    settings.MIDDLEWARE = ["django.middleware.locale.LocaleMiddleware", *settings.MIDDLEWARE]
    application = UploadLimitMiddleware(get_asgi_application())
    size = 40 * MIB
    headers = {"content-type": MULTIPART_CONTENT, "content-length": str(size)}
    for path in ("/en-us" + SEARCH, "/fr" + SEARCH):
        exchange = Exchange(application, path, huge(size), headers)
        assert exchange.status == 413, (path, exchange.body)
        assert exchange.received == 0, path


def test_an_api_upload_without_a_content_length_is_not_received(application, settings):
    """Without a Content-Length Django parses no form (as under WSGI): nothing of it is read."""
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": 20_000}
    exchange = Exchange(application, SEARCH, huge(40 * MIB), {"content-type": MULTIPART_CONTENT})
    assert exchange.status == 400, exchange.body
    assert b"Upload the query image" in exchange.body
    assert exchange.received == 0


def test_an_api_upload_within_the_limit_is_received_and_searched(application, settings):
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": 20_000}
    form = photo_form()
    headers = {"content-type": MULTIPART_CONTENT, "content-length": str(len(form))}
    exchange = Exchange(application, SEARCH, form_chunks(form), headers)
    assert exchange.status == 200, exchange.body
    assert exchange.received == len(form)
    assert b'"results"' in exchange.body


def test_a_body_longer_than_its_content_length_is_read_only_to_it(application, settings):
    """A server that passed on more than the declared body: the handler gets no more than declared."""
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": 20_000}
    form = photo_form()
    headers = {"content-type": MULTIPART_CONTENT, "content-length": str(len(form))}
    exchange = Exchange(application, SEARCH, [*form_chunks(form), *huge(4 * MIB)], headers)
    assert exchange.status == 200, exchange.body
    assert exchange.received <= len(form) + 4096


def test_other_views_bodies_are_received_whole(application, django_user_model):
    """Only the views that take a photo to search by are limited: the admin's sign-in form is
    received and read as Django reads it."""
    django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    form = b"username=root&password=wrong&next=/admin/" + b"&pad=" + b"x" * 200_000
    headers = {"content-type": "application/x-www-form-urlencoded", "content-length": str(len(form))}
    exchange = Exchange(application, reverse("admin:login"), form_chunks(form), headers)
    assert exchange.received == len(form)
    assert exchange.status in (200, 403), exchange.body  # the form again, or CSRF's refusal


def test_an_admin_search_by_photo_over_its_limit_is_refused_before_its_body_is_received(application, monkeypatch):
    from photos.admin import PhotoAdmin

    monkeypatch.setattr(PhotoAdmin, "search_by_photo_max_bytes", 1000)
    editor = Client()
    editor.force_login(User.objects.create_superuser("editor", "editor@example.com", "pw"))
    session = editor.cookies["sessionid"].value
    size = 1000 + MULTIPART_OVERHEAD + MIB
    headers = {"content-type": MULTIPART_CONTENT, "content-length": str(size), "cookie": f"sessionid={session}"}
    exchange = Exchange(application, reverse("admin:photos_photo_search_by_photo"), huge(size), headers)
    assert exchange.status == 302, exchange.body
    assert exchange.headers["location"] == reverse("admin:photos_photo_changelist")
    assert exchange.received == 0
    editor.cookies.update(exchange.cookies)  # the message, when it is kept in a cookie
    messages = editor.get(reverse("admin:photos_photo_changelist")).context["messages"]
    texts = [str(m) for m in messages]
    assert any(re.search(r"the upload is [\d,]+ bytes, over the limit of 1,000 bytes", t) for t in texts), texts
