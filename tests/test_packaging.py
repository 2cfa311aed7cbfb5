"""The wheel that ``pip install django-semantic-images`` installs carries every file of the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked(*paths: str) -> list[str]:
    """The files git tracks under ``paths`` (what a release is built from)."""
    listed = subprocess.run(["git", "ls-files", "-z", *paths], cwd=ROOT, capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0") if name]


@pytest.mark.slow
def test_the_wheel_ships_every_file_of_the_package_templates_static_data_and_migrations(tmp_path):
    """A template, script or data file left out of the wheel works in a checkout and fails on a site
    that installed the package (Wagtail's Images listing loads ``photo-search.js``)."""
    # Built offline with this environment's setuptools (torch brings one on Python 3.12+); from 70.1 on
    # it builds wheels without the ``wheel`` package.
    pytest.importorskip("setuptools", minversion="70.1", reason="building the wheel offline needs setuptools>=70.1")
    package = tracked("django_semantic_images")
    source = tmp_path / "source"
    for name in [*package, "pyproject.toml", "README.md"]:  # a clean copy: no build/ or egg-info of the checkout
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("django_semantic_images-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert [name for name in package if name not in shipped] == []
