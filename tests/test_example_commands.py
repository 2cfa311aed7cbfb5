"""The example site's commands: load_photos names what it skips; demo stops its database with it;
the example sites' settings sign with a key of their own, never one in the repository."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

import psutil
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from django_semantic_images.signals import embedding_deferred
from django_semantic_images.thumbnails import thumbnail_url
from example_project.address import admin_base_url
from photos.models import Photo
from photos.samples import TEXTS
from tests.conftest import image_bytes, run_command

EXAMPLE = Path(__file__).resolve().parent.parent / "example_project"


@pytest.mark.django_db
def test_load_photos_counts_the_folders_files_and_names_each_skipped_one(tmp_path, make_photo):
    jpeg = image_bytes(Image.new("RGB", (320, 240), (20, 120, 200)))
    make_photo(jpeg, name="already.jpg")
    (tmp_path / "new.jpg").write_bytes(jpeg)
    (tmp_path / "already.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    out = StringIO()
    call_command("load_photos", "--no-samples", "--folder", str(tmp_path), stdout=out)
    text = out.getvalue()
    # already.jpg's Photo was never embedded (make_photo): as after a stopped run, it is embedded now.
    assert f"Folder {tmp_path}: 4 files, 1 added, 3 skipped (1 left pending by an earlier run)." in text, text
    assert "skipped already.jpg: already there" in text
    assert "skipped notes.txt: not an image" in text
    assert "skipped broken.jpg: unreadable: " in text
    assert Photo.objects.filter(image="photos/new.jpg", embedding_status="embedded").exists()


@pytest.mark.django_db
def test_load_photos_skips_a_picture_over_pillows_pixel_limit_and_adds_the_rest(tmp_path):
    """A picture Pillow refuses as a decompression bomb (196 million pixels, 24 KB as a 1-bit PNG) is
    skipped with the reason, not a traceback that ends the run before anything is embedded."""
    Image.new("1", (14000, 14000)).save(tmp_path / "huge.png", optimize=True)
    (tmp_path / "small.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), (90, 200, 40))))
    out = run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
    assert f"Folder {tmp_path}: 2 files, 1 added, 1 skipped." in out, out
    assert "skipped huge.png: unreadable: The image has 196,000,000 pixels, over the limit of" in out, out
    assert Photo.objects.filter(image="photos/small.jpg", embedding_status="embedded").exists()


@pytest.mark.django_db
def test_load_photos_does_not_read_a_big_file_that_is_no_image_into_memory(tmp_path):
    """A phone's folder holds videos of gigabytes: each was read whole into memory (to compare it with
    the stored photos of its name, of which there are none) before it was found to be no image."""
    import tracemalloc

    with (tmp_path / "clip.mp4").open("wb") as video:  # sparse: 200 MB of zeros take no disk
        video.truncate(200 * 1024 * 1024)
    tracemalloc.start()
    try:
        out = run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "skipped clip.mp4: not an image" in out, out
    assert peak < 50 * 1024 * 1024, f"{peak / 1048576:.0f} MB held at once"


@pytest.mark.django_db
def test_load_photos_follows_a_link_to_a_folder_once(tmp_path):
    """A subfolder that is a symbolic link (~/Pictures/Phone -> the phone's mount) was left out without
    a word (Path.rglob does not follow links); it is walked now, and a link back up is no loop."""
    pictures, phone = tmp_path / "Pictures", tmp_path / "phone"
    pictures.mkdir()
    phone.mkdir()
    (pictures / "home.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), (200, 40, 90))))
    (phone / "IMG_0002.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), (20, 140, 90))))
    (pictures / "Phone").symlink_to(phone)
    (phone / "up").symlink_to(pictures)  # Pictures/Phone/up is Pictures again
    out = run_command("load_photos", "--no-samples", "--folder", str(pictures))
    assert f"Folder {pictures}: 2 files, 2 added, 0 skipped." in out, out
    assert set(Photo.objects.values_list("image", flat=True)) == {"photos/home.jpg", "photos/IMG_0002.jpg"}


@pytest.mark.django_db
def test_load_photos_names_a_file_whose_name_is_not_utf8_on_a_utf8_terminal(tmp_path):
    """A name in Latin-1 bytes (an old archive's café.jpg) printed as skipped ended the run in a
    UnicodeEncodeError on a terminal of a UTF-8 locale (en_US.UTF-8: strict), after its work, the report cut
    short; the byte is now shown escaped."""
    import io

    (tmp_path / os.fsdecode(b"notes caf\xe9.txt")).write_text("not a picture")
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")  # what a UTF-8 terminal takes
    call_command("load_photos", "--no-samples", "--folder", str(tmp_path), stdout=out)
    out.flush()
    assert "skipped notes caf\\xe9.txt: not an image" in out.buffer.getvalue().decode()


@pytest.mark.django_db
def test_load_photos_adds_two_pictures_of_one_name_once_each(tmp_path):
    """A camera's IMG_0001.jpg in two folders are two pictures: both are added (the second under the
    name the storage gives it), and a second run finds both there."""
    for folder, colour in (("2024", (200, 40, 90)), ("2025", (40, 90, 200))):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "IMG_0001.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), colour)))
    out = run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
    assert f"Folder {tmp_path}: 2 files, 2 added, 0 skipped." in out, out
    again = run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
    assert f"Folder {tmp_path}: 2 files, 0 added, 2 skipped." in again, again
    photos = Photo.objects.filter(image__startswith="photos/IMG_0001")
    assert photos.count() == 2 and len({p.image.name for p in photos}) == 2
    assert {p.embedding_status for p in photos} == {"embedded"}


@pytest.mark.django_db
def test_load_photos_run_again_finds_a_file_stored_under_a_cleaned_name(tmp_path):
    """The storage keeps "Screenshot 2024-05-01 at 10.00.00 (1).png" as "Screenshot_2024-05-01_at_10.00.00_1.png":
    a second run finds it there, and adds nothing."""
    (tmp_path / "Screenshot 2024-05-01 at 10.00.00 (1).png").write_bytes(
        image_bytes(Image.new("RGB", (320, 240), (10, 200, 120)), "PNG")
    )
    assert "1 files, 1 added, 0 skipped." in run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
    again = run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
    assert f"Folder {tmp_path}: 1 files, 0 added, 1 skipped." in again, again
    assert list(Photo.objects.values_list("image", flat=True)) == ["photos/Screenshot_2024-05-01_at_10.00.00_1.png"]


@pytest.mark.django_db
def test_load_photos_run_again_finds_files_whose_names_were_cut_to_fit(settings, tmp_path):
    """The image field holds 100 characters: the storage cuts a longer name short (and adds a random
    part), and each run added such a file again. Two pictures of one long dotted name are still two."""
    settings.MEDIA_ROOT = tmp_path / "media"
    name = "Summer holiday at the lake with the whole family " * 2 + "v2.final.jpg"
    for folder, colour in (("a", (90, 160, 30)), ("b", (30, 90, 160))):
        (tmp_path / "pics" / folder).mkdir(parents=True)
        (tmp_path / "pics" / folder / name).write_bytes(image_bytes(Image.new("RGB", (320, 240), colour)))
    for added in (2, 0, 0):
        out = run_command("load_photos", "--no-samples", "--folder", str(tmp_path / "pics"))
        assert f"Folder {tmp_path / 'pics'}: 2 files, {added} added, {2 - added} skipped." in out, out
    stored = list(Photo.objects.values_list("image", flat=True))
    assert len(stored) == 2 and all(len(image) == 100 for image in stored), stored


@pytest.mark.django_db
def test_load_photos_adds_every_folder_given(tmp_path):
    """``--folder A --folder B`` added B's pictures only (argparse kept the last value), saying nothing of A."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, colour in ((first, (200, 40, 40)), (second, (40, 40, 200))):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / f"{folder.name}.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), colour)))
    (second / "notes.txt").write_text("not a picture")
    out = run_command("load_photos", "--no-samples", "--folder", str(first), "--folder", str(second))
    assert f"Folder {first}: 1 files, 1 added, 0 skipped." in out, out
    assert f"Folder {second}: 2 files, 1 added, 1 skipped." in out and "skipped notes.txt: not an image" in out, out
    assert "Embedded: 2 embedded, 0 unchanged, 0 failed." in out, out
    assert sorted(Photo.objects.values_list("image", "embedding_status")) == [
        ("photos/first.jpg", "embedded"),
        ("photos/second.jpg", "embedded"),
    ]
    # A folder that is not there is named, and nothing is added, not even the other folders' files.
    (first / "sub" / "more.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), (40, 200, 40))))
    with pytest.raises(CommandError, match=f"^{re.escape(str(tmp_path / 'nowhere'))} is not a folder\\.$"):
        call_command("load_photos", "--no-samples", "--folder", str(first), "--folder", str(tmp_path / "nowhere"))
    assert Photo.objects.count() == 2


@pytest.mark.django_db
def test_load_photos_expands_a_tilde_in_a_quoted_folder(settings, tmp_path, monkeypatch):
    """``--folder "~/My Pictures"`` (quoted for the space): the shell leaves the ``~`` to the command,
    which said "~/My Pictures is not a folder"."""
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "My Pictures").mkdir()
    (tmp_path / "My Pictures" / "teal.jpg").write_bytes(image_bytes(Image.new("RGB", (320, 240), (20, 160, 160))))
    out = run_command("load_photos", "--no-samples", "--folder", "~/My Pictures")
    assert f"Folder {tmp_path / 'My Pictures'}: 1 files, 1 added, 0 skipped." in out, out


@pytest.mark.django_db
def test_load_photos_run_again_embeds_what_an_interrupted_run_left_pending(tmp_path, make_photo):
    """A first demo stopped (Ctrl-C) after its photos were saved but before they were embedded:
    the next run finds them there, and embeds them (no worker or sweep runs in the demo)."""
    jpeg = image_bytes(Image.new("RGB", (320, 240), (90, 160, 40)))
    left = make_photo(jpeg, name="green.jpg")  # saved, never embedded
    assert left.image.name == "photos/green.jpg" and left.embedding_status == "pending"
    (tmp_path / "green.jpg").write_bytes(jpeg)
    out = run_command("load_photos", "--no-samples", "--folder", str(tmp_path))
    assert f"Folder {tmp_path}: 1 files, 0 added, 1 skipped (1 left pending by an earlier run)." in out, out
    assert Photo.objects.get(pk=left.pk).embedding_status == "embedded"
    assert "1 files, 0 added, 1 skipped." in run_command("load_photos", "--no-samples", "--folder", str(tmp_path))


@pytest.mark.django_db
def test_load_photos_on_a_new_database_beside_the_old_media_adds_each_file_once(settings, tmp_path):
    """The demo's media folder outlives its database (a new DATABASE_URL, a removed .pgdata): the
    file already in storage is taken as it is, not copied under a new name that the next run,
    looking for the file's own name, does not find, and adds again."""
    settings.MEDIA_ROOT = tmp_path / "media"
    folder = tmp_path / "mine"
    folder.mkdir()
    jpeg = image_bytes(Image.new("RGB", (320, 240), (200, 40, 90)))
    (folder / "red.jpg").write_bytes(jpeg)
    (tmp_path / "media" / "photos").mkdir(parents=True)
    (tmp_path / "media" / "photos" / "red.jpg").write_bytes(jpeg)  # left by the earlier database's run
    for added in (1, 0):
        out = run_command("load_photos", "--no-samples", "--folder", str(folder))
        assert f"Folder {folder}: 1 files, {added} added, {1 - added} skipped." in out, out
    assert list(Photo.objects.values_list("image", "embedding_status")) == [("photos/red.jpg", "embedded")]
    assert sorted(p.name for p in (tmp_path / "media" / "photos").iterdir()) == ["red.jpg"]


@pytest.mark.django_db
def test_load_photos_puts_back_the_files_of_a_deleted_media_folder(settings, tmp_path):
    """The database outlives its media folder (deleted to start afresh): a run stores the files again
    instead of skipping them as already there, which left every page with broken images."""
    settings.MEDIA_ROOT = tmp_path / "media"
    folder = tmp_path / "mine"
    folder.mkdir()
    jpeg = image_bytes(Image.new("RGB", (320, 240), (40, 90, 200)))
    (folder / "blue.jpg").write_bytes(jpeg)
    run_command("load_photos", "--no-samples", "--folder", str(folder))
    assert thumbnail_url(Photo.objects.get().image)  # made, and remembered by sorl-thumbnail
    shutil.rmtree(tmp_path / "media")
    out = run_command("load_photos", "--no-samples", "--folder", str(folder))
    assert f"Folder {folder}: 1 files, 0 added, 1 skipped (1 put back in the media folder)." in out, out
    assert "0 embedded, 1 unchanged, 0 failed" in out
    (photo,) = Photo.objects.all()
    assert photo.image.name == "photos/blue.jpg" and (tmp_path / "media" / "photos" / "blue.jpg").read_bytes() == jpeg
    thumbnail = thumbnail_url(photo.image)  # made again, not the name of the file that was deleted
    assert thumbnail and (tmp_path / "media" / thumbnail.removeprefix(settings.MEDIA_URL)).is_file(), thumbnail


@pytest.mark.django_db
def test_load_photos_gives_the_samples_their_titles_and_alt_texts(settings, tmp_path, sample_paths):
    settings.MEDIA_ROOT = tmp_path  # no earlier test's files: the samples keep their own names
    (tmp_path / "photos").mkdir()
    shutil.copy(sample_paths["coffee"], tmp_path / "photos" / "coffee.png")
    with embedding_deferred():  # the coffee, loaded by a version whose samples had no words
        Photo.objects.create(image="photos/coffee.png")
    out = run_command("load_photos")
    count = len(sample_paths)
    assert f"Sample photos: {count} files, {count - 1} added, 1 skipped (1 given their title and alt text)." in out
    photos = {Path(photo.image.name).name: photo for photo in Photo.objects.all()}
    assert set(photos) == {path.name for path in sample_paths.values()} == set(TEXTS)
    for name, photo in photos.items():
        assert (photo.title, photo.alt_text) == TEXTS[name] and all(TEXTS[name]), name
        assert photo.embedding_status == "embedded", name
    assert len({text.title for text in TEXTS.values()}) == len(TEXTS)  # no two alike
    # A second run adds nothing and changes no words.
    assert f"Sample photos: {count} files, 0 added, {count} skipped." in run_command("load_photos")


@pytest.mark.django_db
def test_demo_given_only_a_port_prints_addresses_that_open():
    """``--addrport 8123`` (runserver's port-only form) serves 127.0.0.1:8123, which the demo prints."""
    out = run_command("demo", "--empty", "--no-serve", "--addrport", "8123")
    assert "Example site: http://127.0.0.1:8123/ " in out and "http://127.0.0.1:8123/admin/photos/photo/" in out, out


def test_the_wagtail_demo_links_to_the_address_it_serves():
    """``WAGTAILADMIN_BASE_URL`` was http://127.0.0.1:8000 whatever the Wagtail demo served
    (``HOST=127.0.0.1:8001 make demo-wagtail``, when 8000 is taken), so Wagtail's emails and previews
    linked to the wrong port: the demo sets it to the address served, unless the variable is set.
    (``tests/wagtail/test_demo.py`` checks that the demo applies it.)"""
    assert admin_base_url("127.0.0.1:8001", {}) == "http://127.0.0.1:8001"
    assert admin_base_url("8002", {}) == "http://127.0.0.1:8002"
    public = {"WAGTAILADMIN_BASE_URL": "https://cms.example.com"}
    assert admin_base_url("127.0.0.1:8001", public) == "https://cms.example.com"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the demo: a suite started as a background job (``make test &``,
    ``nohup``) passes SIGINT on ignored, and then nothing could answer the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _serve_demo(env: dict[str, str], log: Path) -> subprocess.Popen:
    """``manage.py demo --empty`` in a subprocess, once its site answers."""
    port = _free_port()
    command = [sys.executable, "manage.py", "demo", "--empty", "--addrport", f"127.0.0.1:{port}"]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            command, cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_ctrl_c_as_in_a_terminal
        )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5).close()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the demo did not serve within 240 s:\n{log.read_text()}")


def _postmaster(pgdata: Path) -> psutil.Process | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().split()[0])
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _gone(process: psutil.Process, timeout: float = 30) -> bool:
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    return True


def test_demo_stops_its_database_on_sigterm_on_ctrl_c_and_when_its_port_is_taken(tmp_path):
    pgdata = tmp_path / "pgdata"
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        SEMANTIC_IMAGES_PGDATA=str(pgdata),
        MEDIA_ROOT=str(tmp_path / "media"),
        SEMANTIC_IMAGES_PG_SHARED_BUFFERS="128MB",  # PostgreSQL's default: no restart on first start
    )
    demo = None
    try:
        # SIGKILL leaves the server running (nothing can stop it then); the next start must take it
        # over and still stop it on SIGTERM, and a third start on Ctrl-C (SIGINT).
        for signum in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            demo = _serve_demo(env, log)  # each start reuses the data folder of the one before
            postgres = _postmaster(pgdata)
            assert postgres is not None and postgres.is_running()
            demo.send_signal(signum)
            try:
                demo.wait(120)  # a loaded CI machine is slow, not broken; say what it was doing if it hangs
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the demo still runs 120 s after {signum.name}:\n{log.read_text()}") from None
            if signum != signal.SIGKILL:
                assert _gone(postgres), f"PostgreSQL still runs after {signum.name}:\n{log.read_text()}"
        # Its address taken: the demo says so before it sets anything up, and its database stops with it
        # (runserver's own check ends the process with os._exit, past the handler that stops the server).
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            addrport = f"127.0.0.1:{taken.getsockname()[1]}"
            done = subprocess.run(
                [sys.executable, "manage.py", "demo", "--empty", "--addrport", addrport],
                cwd=EXAMPLE,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
        assert done.returncode == 1 and f"Cannot serve on {addrport}: Address already in use" in done.stderr, done
        leftover = _postmaster(pgdata)
        assert leftover is None or _gone(leftover), f"PostgreSQL still runs after the demo gave up:\n{done.stderr}"
    finally:
        if demo is not None and demo.poll() is None:
            demo.kill()
        leftover = _postmaster(pgdata)
        if leftover is not None and leftover.is_running():
            leftover.send_signal(signal.SIGINT)  # fast shutdown of the server this test started


def example_secret_key(settings_module: str, **env: str) -> str:
    """``SECRET_KEY`` of an example site's settings, imported in a fresh process as ``env`` has it."""
    root = EXAMPLE.parent
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SECRET_KEY"}
    environ.update(
        PYTHONPATH=os.pathsep.join(str(root / folder) for folder in ("example_project", "example_wagtail")),
        DATABASE_URL="postgresql://localhost/unused",  # no database is started to read the settings
        **env,
    )
    code = f"import {settings_module} as s; print(s.SECRET_KEY)"
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize(
    ("module", "site"), [("example_project.settings", "example_project"), ("wagtail_site.settings", "example_wagtail")]
)
def test_the_example_sites_secret_key_is_not_one_written_in_the_repository(module, site):
    """Served as in production (gunicorn.conf.py: DEBUG off), a site must not sign with a key anybody can read."""
    key = example_secret_key(module, DJANGO_DEBUG="0")
    assert len(key) >= 50 and example_secret_key(module, DJANGO_DEBUG="0") == key  # the checkout's own, kept
    sources = [p for p in (EXAMPLE.parent / site).rglob("*.py") if ".pgdata" not in p.parts]
    assert sources and not [str(p) for p in sources if key in p.read_text()]
    assert ((EXAMPLE.parent / site / ".secret_key").stat().st_mode & 0o077) == 0  # its owner's only
    assert example_secret_key(module, DJANGO_SECRET_KEY="given") == "given"


def test_the_example_site_gathers_its_static_files_for_a_web_server(tmp_path):
    """Served as in production (DEBUG off, docs/installation.md#serving-with-gunicorn), Django serves no
    static file: ``collectstatic`` must be able to gather the public page's script, the admin's and the app's."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DATABASE_URL="postgresql://localhost/unused", DJANGO_DEBUG="0", STATIC_ROOT=str(tmp_path / "static"))
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shipped = ["photos/search.js", "photos/search.css", "semantic_images/admin/semantic_admin.css"]
    shipped.append("admin/css/base.css")
    for name in shipped:
        assert (tmp_path / "static" / name).is_file(), name


@pytest.mark.django_db
def test_demo_writes_what_load_photos_says_where_it_was_asked_to(settings, tmp_path):
    """demo ran load_photos without passing its own stdout on: call_command("demo", stdout=...) got
    the site's addresses, and the photo counts went to the process's stdout."""
    settings.MEDIA_ROOT = tmp_path
    out = StringIO()
    call_command("demo", "--no-serve", stdout=out)
    assert "Sample photos: " in out.getvalue() and "Example site: " in out.getvalue(), out.getvalue()


@pytest.mark.django_db
def test_load_photos_at_verbosity_0_prints_only_what_failed(tmp_path):
    """It printed its counts and every skipped file at --verbosity 0 all the same."""
    jpeg = image_bytes(Image.new("RGB", (320, 240), (20, 200, 120)))
    (tmp_path / "quiet.jpg").write_bytes(jpeg)
    (tmp_path / "notes.txt").write_text("not a picture")
    out = StringIO()
    call_command("load_photos", "--no-samples", "--folder", str(tmp_path), verbosity=0, stdout=out)
    assert out.getvalue() == ""
    assert Photo.objects.filter(image="photos/quiet.jpg", embedding_status="embedded").exists()


@pytest.mark.django_db
def test_load_photos_on_a_database_not_migrated_yet_is_a_command_error(tmp_path):
    """Run before `migrate`, load_photos ended in ProgrammingError's traceback (the app's own commands
    say which table is missing); a server that cannot be reached, or Ctrl-C, in psycopg's or
    KeyboardInterrupt's."""
    from django.core.management.base import CommandError
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("ALTER TABLE photos_photo RENAME TO photos_photo_away")
    with pytest.raises(CommandError, match=r'^The database has no table "photos_photo".*manage\.py migrate'):
        call_command("load_photos", stdout=StringIO())


@pytest.mark.django_db
def test_demo_on_a_database_without_pgvector_says_so_in_a_line_not_a_traceback():
    """`DATABASE_URL` at a server without pgvector (or a role that may not create it): the demo's
    migrate ended in a traceback of Django's migration machinery; the reason is now the demo's
    CommandError, as is a server that cannot be reached."""
    from django.core.management.base import CommandError
    from django.db import connection

    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("DROP EXTENSION vector CASCADE")
        cursor.execute("CREATE ROLE semantic_images_example NOSUPERUSER")
        cursor.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO semantic_images_example")
        cursor.execute("SET LOCAL ROLE semantic_images_example")
    with pytest.raises(
        CommandError, match=r"^The PostgreSQL extension 'vector' is not in database .* may not create it"
    ):
        call_command("demo", "--no-serve", "--empty", stdout=StringIO())
