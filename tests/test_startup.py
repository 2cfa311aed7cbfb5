"""Start-up: a fresh process answers its first query within seconds.

What every process used to derive from the weights at start (3,000 class prompts through
MiniLM, the ONNX export) is kept in ``MODEL_CACHE_DIR``; a process that searches by words
loads neither the CNN nor torch; gunicorn's workers answer their first search well inside
its default 30 s timeout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from django_semantic_images.encoders import cache
from django_semantic_images.encoders.conse import ConSEEncoder
from django_semantic_images.encoders.onnx_queries import onnx_available

from .celery_worker import database_url

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_project")])}

# A fresh process: a word query, then an image query, reporting what each loaded.
FRESH_PROCESS = """
import json, sys
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=[], SEMANTIC_IMAGES={"DEVICE": "cpu"})
django.setup()
from PIL import Image
from django_semantic_images.encoders import get_encoder

def state(encoder):
    return {
        "torch": "torch" in sys.modules,
        "cnn_module": "django_semantic_images.encoders.efficientnet_lite" in sys.modules,
        "cnn": encoder.cnn is not None,
        "onnx_cnn": encoder.onnx_cnn is not None,
        "class_vectors": encoder.label_vectors is not None,
        "text_model": encoder.text is not None and encoder.text.model is not None,
    }

encoder = get_encoder()
vector = encoder.encode_text("a cup of coffee")
after_words = state(encoder)
image = encoder.encode_images([Image.new("RGB", (320, 240), (200, 30, 30))])
print(json.dumps({"words": after_words, "image": state(encoder), "norm": float(vector @ vector),
                  "semantic": image.semantic.shape}))
"""


@pytest.fixture(scope="module")
def prepared() -> str:
    """The deploy step: the model cache filled for every field's encoder (fast when warm)."""
    from io import StringIO

    out = StringIO()
    call_command("semantic_images_prepare", stdout=out)
    return out.getvalue()


def test_prepare_command_fills_the_cache(prepared):
    assert "class vectors:" in prepared and "query model:" in prepared and "image model:" in prepared
    assert "conse-lite0-minilm" in prepared
    paths = re.findall(r"(?:class vectors|query model|image model): (\S+\.(?:npz|onnx))", prepared)
    assert len(paths) == 3 and all(Path(p).is_file() for p in paths), prepared


def test_prepare_at_verbosity_0_is_quiet(prepared):
    from io import StringIO

    out = StringIO()
    call_command("semantic_images_prepare", verbosity=0, stdout=out)
    assert out.getvalue() == ""  # it listed every file all the same


@pytest.mark.skipif(not onnx_available(), reason="needs the onnx extra")
def test_a_word_query_loads_neither_the_cnn_nor_torch_and_an_image_query_then_loads_the_cnn(prepared):
    """With the cache prepared, words take the ONNX text model and an image the ONNX CNN and
    the cached class vectors: a web process never imports torch for either."""
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["words"] == {
        "torch": False,
        "cnn_module": False,
        "cnn": False,
        "onnx_cnn": False,
        "class_vectors": False,
        "text_model": False,
    }
    assert abs(report["norm"] - 1.0) < 1e-4
    # The image loads the exported CNN and the cached class vectors: the text model is not run for them.
    assert report["image"] == {
        "torch": False,
        "cnn_module": False,
        "cnn": False,
        "onnx_cnn": True,
        "class_vectors": True,
        "text_model": False,
    }
    assert report["semantic"] == [1, 384]


def test_class_vectors_are_cached_and_a_stale_or_corrupt_file_is_rebuilt(tmp_path, monkeypatch, settings):
    settings.SEMANTIC_IMAGES = {"MODEL_CACHE_DIR": str(tmp_path)}
    recipe = {"prompt": "a photo of a {name}.", "device": "cpu", "bridge": None}  # one prompt: 1,000 texts
    encoder = ConSEEncoder(**recipe)
    text = encoder.text_encoder()
    encoded: list[int] = []
    real_encode = text.encode
    monkeypatch.setattr(text, "encode", lambda texts: encoded.append(len(texts)) or real_encode(texts))

    vectors, common = encoder.cached_class_vectors()
    path = encoder.class_vectors_path()
    assert encoded == [1000] and path.parent == tmp_path and path.is_file()
    assert vectors.shape == (1000, 384) and common.shape == (384,)

    encoded.clear()
    again, again_common = ConSEEncoder(**recipe).cached_class_vectors()  # a valid file: read, not encoded
    assert encoded == []
    np.testing.assert_array_equal(again, vectors)
    np.testing.assert_array_equal(again_common, common)

    path.write_bytes(path.read_bytes()[:1000])  # corrupt: cut short
    rebuilt, _ = ConSEEncoder(**recipe).cached_class_vectors()
    assert encoded == [1000]
    np.testing.assert_allclose(rebuilt, vectors, atol=1e-6)

    encoded.clear()  # stale: made from other labels (same name, other source inside)
    source = {**encoder.class_vectors_source(), "labels": "another-list"}
    cache.save_arrays(path, source, vectors=np.zeros((1000, 384), np.float32), common=np.zeros(384, np.float32))
    rebuilt, _ = ConSEEncoder(**recipe).cached_class_vectors()
    assert encoded == [1000]
    np.testing.assert_allclose(rebuilt, vectors, atol=1e-6)
    # Wrong shapes or values under the right source are refused too.
    cache.save_arrays(
        path, encoder.class_vectors_source(), vectors=np.full((1000, 384), np.nan, np.float32), common=common
    )
    assert cache.load_arrays(path, encoder.class_vectors_source(), {"vectors": (1000, 384)}) is None
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_a_cache_file_is_as_readable_as_the_umask_makes_new_files(tmp_path):
    """prepare run by one user (a Docker build's root), the site by another: the class vectors must be
    readable as the exported ONNX files are, not the owner's alone (mkstemp's 0600)."""
    umask = os.umask(0o022)
    try:
        cache.save_arrays(tmp_path / "vectors.npz", {"source": 1}, vectors=np.zeros(3, np.float32))
    finally:
        os.umask(umask)
    assert oct((tmp_path / "vectors.npz").stat().st_mode & 0o777) == oct(0o644)


def test_a_bridge_and_its_pointer_are_as_readable_as_the_umask_makes_new_files(tmp_path):
    """A bridge trained by one user (a release step, root in a container) and read by workers and web
    processes of another: its .npz and current.json were mkstemp's 0600, so every other user's
    process failed to read them (E016: storing vectors stops)."""
    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge

    bridge = LearnedBridge(weight=np.zeros((1280, 384), np.float32), bias=np.zeros(384, np.float32))
    umask = os.umask(0o022)
    try:
        BridgeStore(tmp_path).install(bridge, metrics={})
    finally:
        os.umask(umask)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert [p for p in written if p.endswith(".npz")] and "current.json" in written
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o644)}


def test_another_prompt_recipe_gets_another_file(tmp_path, settings):
    settings.SEMANTIC_IMAGES = {"MODEL_CACHE_DIR": str(tmp_path)}
    one = ConSEEncoder(prompt="a photo of a {name}.", device="cpu", bridge=None)
    other = ConSEEncoder(prompt="a {name}", device="cpu", bridge=None)
    assert one.class_vectors_path() != other.class_vectors_path()
    assert one.class_vectors_path() == ConSEEncoder(prompt="a photo of a {name}.", bridge=None).class_vectors_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening yet


@pytest.fixture
def test_database(django_db_setup, django_db_blocker) -> str:
    with django_db_blocker.unblock():
        return database_url(connection.settings_dict)


@pytest.mark.django_db(transaction=True)
def test_gunicorn_workers_answer_their_first_word_search_within_the_default_timeout(prepared, test_database, tmp_path):
    """Two workers, gunicorn's default 30 s timeout, word searches sent to both as soon as
    it listens: every answer is a 200 and no worker is killed."""
    port = free_port()
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    command = [sys.executable, "-m", "gunicorn", "example_project.wsgi:application", "-b", f"127.0.0.1:{port}"]
    command += ["-w", "2", "--timeout", "30", "--access-logfile", str(access), "--error-logfile", str(errors)]
    command += ["--access-logformat", "%(p)s %(s)s %(L)s"]
    env = {**ENV, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": test_database}
    server = subprocess.Popen(command, cwd=ROOT / "example_project", env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/photos/search/?q=a+cup+of+coffee"
    started = time.monotonic()
    statuses: list[int] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            while time.monotonic() - started < 90:
                answers = list(pool.map(get, [url, url]))
                if 0 in answers:
                    time.sleep(0.05)
                    continue
                statuses += answers
                pids = {line.split()[0] for line in access.read_text().splitlines()} if access.exists() else set()
                if len(pids) >= 2:
                    break
    finally:
        server.terminate()
        server.wait(timeout=30)
    log = errors.read_text()
    assert "WORKER TIMEOUT" not in log, log[-3000:]
    assert statuses and set(statuses) == {200}, (statuses, log[-3000:])
    lines = access.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 2, lines  # both workers answered
    assert max(float(line.split()[2]) for line in lines) < 15, lines  # request seconds, far from 30


def post_image(url: str, path: Path) -> int:
    """A multipart POST of the file at ``path`` as ``image``: the answer's status."""
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    with path.open("rb") as fh:
        body = encode_multipart(BOUNDARY, {"image": fh})
    request = urllib.request.Request(url, data=body, headers={"Content-Type": MULTIPART_CONTENT}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.django_db(transaction=True)
def test_the_shipped_gunicorn_config_loads_the_models_once_before_forking_and_its_workers_exit_cleanly(
    prepared, test_database, tmp_path
):
    """example_project/gunicorn.conf.py: the master loads the models (preload), the workers answer
    words and photos with them, and on SIGTERM every worker exits by itself (a worker forked after
    ONNX Runtime was loaded used to hang in its destructors until SIGABRT)."""
    from photos.samples import sample_photo_paths

    port = free_port()
    log = tmp_path / "error.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "-w", "2"]
    command += ["--error-logfile", str(log)]
    env = {**ENV, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": test_database}
    server = subprocess.Popen(command, cwd=ROOT / "example_project", env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/photos/search/"
    try:
        started = time.monotonic()
        while get(f"{base}?q=warm") == 0 and time.monotonic() - started < 120:
            time.sleep(0.2)
        with ThreadPoolExecutor(4) as pool:
            words = list(pool.map(get, [f"{base}?q=a+cup+of+coffee", f"{base}?q=a+red+motorcycle"] * 3))
            photos = list(pool.map(post_image, [base] * 4, sample_photo_paths()[:4]))
    finally:
        server.terminate()
        stopped = time.monotonic()
        server.wait(timeout=60)
        stop_s = time.monotonic() - stopped
    text = log.read_text()
    assert words == [200] * 6 and photos == [200] * 4, (words, photos, text[-3000:])
    assert "Semantic images: conse-lite0-minilm" in text and " loaded in " in text, text[-3000:]
    assert text.count("Booting worker") == 2, text[-3000:]  # none died and was replaced
    assert "was sent SIG" not in text and "WORKER TIMEOUT" not in text, text[-3000:]
    assert server.returncode == 0 and stop_s < 20, (server.returncode, stop_s, text[-3000:])


def test_the_preload_before_fork_survives_an_unreadable_bridge(tmp_path, settings):
    """gunicorn's ``when_ready`` runs ``load_before_fork()`` in the master: with a bridge file cut
    short it must still load what searches need (words, the CNN) and say why nothing can be
    embedded, not raise (the master would exit: no web server, no search at all)."""
    import torch

    from django_semantic_images.encoders import get_encoder
    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge
    from django_semantic_images.prefork import load_before_fork

    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path)}
    rng = np.random.default_rng(0)
    path = BridgeStore(tmp_path).install(LearnedBridge(rng.normal(size=(1280, 384)), np.zeros(384)))
    path.write_bytes(path.read_bytes()[:300])
    threads = torch.get_num_threads()
    try:
        lines = load_before_fork()
    finally:
        torch.set_num_threads(threads)
    assert len(lines) == 1 and "cannot embed" in lines[0] and path.name in lines[0], lines
    encoder = get_encoder()
    assert encoder.cnn is not None or encoder.onnx_cnn is not None  # the CNN is loaded: search by photo


def test_a_workers_preload_logs_an_unreadable_bridge_instead_of_raising(tmp_path, settings, caplog):
    """A worker process loads the encoders when it starts (``worker.preload``): with a bridge file
    cut short it loads them all the same and logs why nothing can be embedded (each task then fails
    with that reason and releases its rows), rather than raise from its start-up signal."""
    from django_semantic_images import worker
    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge

    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path)}
    rng = np.random.default_rng(0)
    path = BridgeStore(tmp_path).install(LearnedBridge(rng.normal(size=(1280, 384)), np.zeros(384)))
    path.write_bytes(path.read_bytes()[:300])
    with caplog.at_level("INFO", logger="django_semantic_images"):
        worker.preload()
    assert any(path.name in r.getMessage() and "cannot embed" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


def test_prepare_goes_on_past_an_unreadable_installed_bridge(tmp_path, settings):
    """The deploy step named each encoder by its identity, which reads the installed bridge: a bridge
    file cut short (system check E016; searches go on without it) ended the command with a traceback
    after the first encoder, the cache left unprepared for the rest."""
    from io import StringIO

    from django_semantic_images.encoders import registry
    from django_semantic_images.encoders.bridges import BridgeStore, LearnedBridge

    store = BridgeStore(tmp_path)
    path = store.install(LearnedBridge(np.zeros((1280, 384), np.float32), np.zeros(384, np.float32)))
    path.write_bytes(path.read_bytes()[:100])
    settings.SEMANTIC_IMAGES = {"BRIDGE_DIR": str(tmp_path)}
    registry.reset()
    out = StringIO()
    try:
        call_command("semantic_images_prepare", stdout=out)
    finally:
        registry.reset()
    assert "class vectors:" in out.getvalue() and "query model:" in out.getvalue()


def test_prepare_fails_where_the_class_vectors_cannot_be_stored(tmp_path, settings, tiny_bert):
    """A MODEL_CACHE_DIR this process cannot write to: the deploy step said "class vectors: <path>
    (built)" and succeeded, the file not there, and every process then made them again at its first image."""
    from django.core.management.base import CommandError

    from django_semantic_images.encoders import registry

    settings.SEMANTIC_IMAGES = {
        "MODEL_CACHE_DIR": str(tmp_path),
        "TEXT_MODEL": {"MODEL": str(tiny_bert), "DIMENSIONS": 32},
        "ENCODER_OPTIONS": {"bridge": None},
    }
    registry.reset()
    try:
        path = ConSEEncoder(device="cpu", bridge=None).class_vectors_path()
        path.with_suffix(".lock").mkdir()  # as a lock file this process may not open or create
        with pytest.raises(CommandError, match="class vectors could not be stored"):
            call_command("semantic_images_prepare", verbosity=0)
    finally:
        registry.reset()


def test_ctrl_c_in_prepare_is_a_command_error(monkeypatch):
    """The deploy step ended in KeyboardInterrupt's traceback on Ctrl-C."""
    from django.core.management.base import CommandError

    from django_semantic_images.management.commands import semantic_images_prepare as command
    from tests.conftest import ctrl_c_as_in_a_terminal, press_ctrl_c

    real = command.field_encoders

    def ctrl_c_meanwhile():
        press_ctrl_c()
        return real()

    monkeypatch.setattr(command, "field_encoders", ctrl_c_meanwhile)
    with ctrl_c_as_in_a_terminal(), pytest.raises(CommandError, match="^Interrupted: run it again") as stop:
        call_command("semantic_images_prepare", verbosity=0)
    assert stop.value.returncode == 130
