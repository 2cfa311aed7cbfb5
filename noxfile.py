"""Test matrix: the Django and Python versions that sites install today (`make matrix`).

Each session builds its virtualenv in ``.nox/`` once and reuses it; it reinstalls only when the
dependencies in ``pyproject.toml`` or the session's pins change. Arguments after ``--`` go to pytest:
``nox -s "tests(dj61-py313)" -- -m "not browser" tests/test_api.py``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# torch pinned on the same line as the package (see docs/installation.md): the CPU build where an
# index or wheel folder offers one (2.13.0+cpu sorts above 2.13.0), else PyPI's CUDA build.
TORCH = "torch==2.13.0"


def interpreter(version: str) -> str:
    """``pythonX.Y`` if it runs from PATH, else pyenv's newest X.Y (its shims hide inactive versions)."""
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "--version"], capture_output=True).returncode == 0:
        return version
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
    return str(candidates[-1]) if candidates else version


def env(python: str, django: str, *pins: str, tag: str = "") -> nox.param:
    name = f"dj{django.replace('.', '')}{tag}-py{python.replace('.', '')}"
    return nox.param(interpreter(python), django, pins, id=name)


# pgvector-python returns vectors read from the database as numpy arrays before 0.5 and as lists
# from 0.5 on; the Django 4.2 session keeps the older one so both kinds are exercised.
MATRIX = [
    env("3.11", "4.2", "pgvector<0.5"),
    env("3.11", "5.2"),
    # Wagtail's oldest supported release (7.0 LTS), beside the newest that pip picks elsewhere.
    env("3.11", "5.2", "wagtail~=7.0.0", tag="-wt70"),
    env("3.12", "6.1"),
    env("3.13", "6.1"),
]


VERSIONS = (
    "import sys, importlib.metadata as m; print('Python', sys.version.split()[0], *(f'| {p} {m.version(p)}' "
    "for p in ('Django', 'wagtail', 'djangorestframework', 'torch', 'pgvector', 'numpy', 'celery', 'psycopg')))"
)

#: Prints True where the package can use Django's tasks framework (django.tasks, or a backport with its API).
TASK_FRAMEWORK = "from django_semantic_images.apps import task_framework_installed; print(task_framework_installed())"


def install(session: nox.Session, requirements: list[str]) -> None:
    """Install once per set of requirements and declared dependencies; later runs reuse the venv as it is."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [*requirements, project["requires-python"], *project["dependencies"]]
    pins += [f"{extra}: {req}" for extra, reqs in project["optional-dependencies"].items() for req in reqs]
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()
    stamp = Path(session.virtualenv.location) / f".installed-{key[:16]}"
    if stamp.exists():
        session.log(f"reusing {session.virtualenv.location}")
        return
    session.install(*requirements)
    for old in stamp.parent.glob(".installed-*"):
        old.unlink()
    stamp.touch()


@nox.session
@nox.parametrize("python,django,pins", MATRIX)
def tests(session: nox.Session, django: str, pins: tuple[str, ...]) -> None:
    """The suite on one Django/Python pair (every run of `make test`), or pytest with the arguments after ``--``."""
    install(session, [TORCH, "-e", ".[dev]", f"Django~={django}.0", *pins])
    session.run("scripts/test-services", external=True)
    versions = session.run("python", "-c", VERSIONS, silent=True, log=False)
    session.log(f"versions: {versions.strip() if versions else '?'}")
    if session.posargs:
        session.run("python", "-m", "pytest", *session.posargs)
        return
    # The whole suite, as `make test` runs it: the main run, the Wagtail integration's, the tasks
    # framework's, the Wagtail integration's with a custom image model, and the routed encoder's.
    session.run("python", "-m", "pytest")
    session.run("python", "-m", "pytest", "tests/wagtail", "--ds=tests.wagtail.settings")
    # Wagtail 7.0 pins the django-tasks backport below 0.8, which the package leaves alone (no
    # TaskContext) and django-tasks-db cannot start with: that session has no tasks framework to test.
    if "True" in (session.run("python", "-c", TASK_FRAMEWORK, silent=True, log=False) or ""):
        session.run("python", "-m", "pytest", "tests/tasks_framework", "--ds=tests.tasks_framework.settings")
    else:
        session.log("tests/tasks_framework left out: this django-tasks backport has no TaskContext")
    session.run("python", "-m", "pytest", "tests/wagtail_custom", "--ds=tests.wagtail_custom.settings")
    session.run("python", "-m", "pytest", "tests/multilingual", "--ds=tests.multilingual.settings")
