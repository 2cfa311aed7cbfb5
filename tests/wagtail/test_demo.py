"""``make demo-wagtail``: the Wagtail example site sets itself up with the sample photos indexed."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from photos.samples import sample_photo_paths

SITE = Path(__file__).resolve().parents[2] / "example_wagtail"

#: Run in the demo's site after its set-up: the image each suggested search lists first, ranked as
#: the Images listing and the chooser rank (Wagtail's keyword matches first, then by meaning).
FIRST_FOUND = """
import json
from wagtail.images import get_image_model
from django_semantic_images.contrib.wagtail.search import keyword_search, rank_by_meaning
from home.management.commands.demo import SUGGESTIONS
images = get_image_model().objects.all()
first = {}
for words in SUGGESTIONS:
    keyword = list(keyword_search(images, words).values_list("pk", flat=True))
    first[words] = rank_by_meaning(images, words, keyword=keyword).first().title
print(json.dumps({"suggested": SUGGESTIONS, "first": first}))
"""

#: Each image's original file and its thumbnail rendition (made when missing) exist in the media folder.
RENDITIONS = """
import json
from wagtail.images import get_image_model
found = []
for image in get_image_model().objects.order_by("pk"):
    rendition = image.get_rendition("max-165x165")
    found.append(image.file.storage.exists(image.file.name) and rendition.file.storage.exists(rendition.file.name))
print(json.dumps(found))
"""

#: The sites (hostname, port, default) and the home page's full URL, as Wagtail links to it.
SITE_ADDRESS = """
import json
from wagtail.models import Site
from home.models import HomePage
sites = [list(row) for row in Site.objects.values_list("hostname", "port", "is_default_site")]
print(json.dumps([sites, HomePage.objects.get().full_url]))
"""


def served(url: str, server: subprocess.Popen, wait: float = 180) -> tuple[int, str]:
    """The status and text of ``url`` once ``server`` listens (up to ``wait`` seconds; 0 and its
    exit status when it ends first)."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except OSError:
            if server.poll() is not None:
                return 0, f"exited with {server.returncode}"
            if time.monotonic() - started > wait:
                raise
            time.sleep(0.2)


def manage(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``manage.py *args`` run in the demo's site, its output captured."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=SITE, env=env, capture_output=True, text=True, timeout=timeout
    )


def shell(code: str, env: dict[str, str]) -> str:
    """The last line ``code`` printed, run in the demo's site."""
    done = manage("shell", "-c", code, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def scratch_database(db):
    """A new, empty database on the test server (the demo migrates it), dropped afterwards."""
    params = connection.get_connection_params()
    host, port, user = params.get("host") or "", params.get("port") or 5432, params.get("user") or ""
    name = f"demo_wagtail_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{user}@/{name}?host={host}&port={port}", name
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.slow
def test_demo_sets_up_indexed_wagtail_images_a_page_a_login_and_searches_that_find_their_image(
    scratch_database, tmp_path
):
    url, name = scratch_database
    unset = ("DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL", "WAGTAILADMIN_BASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(DATABASE_URL=url, MEDIA_ROOT=str(tmp_path / "media"))
    done = manage("demo", "--no-serve", env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = sample_photo_paths()
    assert f"Images: {len(samples)} embedded" in done.stdout, done.stdout
    assert "login: admin / admin" in done.stdout
    assert "Wagtail's emails and previews link to http://127.0.0.1:8000 (WAGTAILADMIN_BASE_URL)" in done.stdout
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host") or "", port=params.get("port") or 5432, user=params.get("user") or "", dbname=name
    ) as db:
        titles = {row[0] for row in db.execute("SELECT title FROM wagtailimages_image")}
        states = db.execute(
            "SELECT embedding_status, count(*) FROM semantic_images_wagtail_imagevectors GROUP BY 1"
        ).fetchall()
        pages = db.execute("SELECT count(*) FROM home_homepage").fetchone()[0]
    assert titles == {path.stem for path in samples}
    assert states == [("embedded", len(samples))]
    assert pages == 1
    # Wagtail's Site is the address served (its migration made it localhost:80): page links follow it.
    assert shell(SITE_ADDRESS, env) == '[[["127.0.0.1", 8000, true]], "http://127.0.0.1:8000/"]'

    # Each search the demo prints finds the image it is meant to find first.
    found = manage("shell", "-c", FIRST_FOUND, env=env, timeout=600)
    assert found.returncode == 0, found.stderr[-3000:]
    result = json.loads(found.stdout.strip().splitlines()[-1])
    assert f"Search the images with: {', '.join(result['suggested'])}" in done.stdout
    assert result["first"] == result["suggested"]

    # Run again after the media folder was deleted: the files are stored again and render again.
    assert json.loads(shell(RENDITIONS, env)) == [True] * len(samples)
    shutil.rmtree(tmp_path / "media")
    # at another address (HOST=127.0.0.1:8123 make demo-wagtail): the links follow it
    again = manage("demo", "--no-serve", "--addrport", "127.0.0.1:8123", env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"Images: {len(samples)} embedded" in again.stdout and "Added" not in again.stdout, again.stdout
    assert "link to http://127.0.0.1:8123 (WAGTAILADMIN_BASE_URL)" in again.stdout, again.stdout
    assert shell(SITE_ADDRESS, env) == '[[["127.0.0.1", 8123, true]], "http://127.0.0.1:8123/"]'
    assert json.loads(shell(RENDITIONS, env)) == [True] * len(samples)

    # Served under gunicorn with the site's own config (the Django example's, this site's app): the
    # master loads the models once, the workers serve the home page and the admin, and stop cleanly.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "-w", "2"]
    server = subprocess.Popen([*command, "--error-logfile", str(log)], cwd=SITE, env=env, start_new_session=True)
    try:
        answers = [served(f"http://127.0.0.1:{port}{path}", server) for path in ("/", "/admin/login/")]
    finally:
        server.terminate()
        server.wait(timeout=60)
    text = log.read_text() if log.exists() else ""
    assert [status for status, _ in answers] == [200, 200], (answers, text[-3000:])
    assert "Photos found by meaning" in answers[0][1] and "Semantic images: " in text, text[-3000:]
    assert server.returncode == 0 and "WORKER TIMEOUT" not in text, text[-3000:]


def test_demo_with_its_address_taken_says_so_before_it_sets_anything_up(scratch_database, tmp_path):
    """Not minutes of migrating and embedding first, then runserver's "port is already in use"."""
    url, name = scratch_database
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL")}
    env.update(DATABASE_URL=url, MEDIA_ROOT=str(tmp_path / "media"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addrport = f"127.0.0.1:{taken.getsockname()[1]}"
        done = manage("demo", "--addrport", addrport, env=env, timeout=900)
    assert done.returncode == 1 and f"Cannot serve on {addrport}: Address already in use" in done.stderr, done
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host") or "", port=params.get("port") or 5432, user=params.get("user") or "", dbname=name
    ) as db:
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_demo_with_a_database_it_cannot_reach_says_so_in_a_line(tmp_path):
    """`DATABASE_URL` at a server that is not there (or has no pgvector): the reason in one line,
    not the 33 frames of migrate's traceback."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens on it
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "CELERY_BROKER_URL")}
    env.update(
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/demo",
        MEDIA_ROOT=str(tmp_path / "media"),
        PYTHONPATH=os.pathsep.join([str(SITE.parent), str(SITE.parent / "example_project")]),
    )
    done = manage("demo", "--no-serve", env=env, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert (
        f'CommandError: The database failed: connection failed: connection to server at "127.0.0.1", port {port}'
        in done.stderr
    )
