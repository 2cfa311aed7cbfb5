"""The package's imports go one way, down the layers, with no circle (scripts/check_layers.py)."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_checker():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_imports_only_down_the_layers():
    checker = load_checker()
    assert checker.problems(ROOT / "django_semantic_images") == []


def test_the_check_finds_an_upward_import_inside_a_function_and_a_circle(tmp_path):
    checker = load_checker()
    package = tmp_path / "django_semantic_images"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "conf.py").write_text("def f():\n    from .query import x\n")
    (package / "query.py").write_text("from .conf import y\n")
    (package / "fields.py").write_text("from .pipeline import z\n")
    (package / "pipeline.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            from . import fields
            if TYPE_CHECKING:
                from .query import never_runs
            """
        )
    )
    found = checker.problems(package)
    assert any("conf (settings) imports django_semantic_images.query" in p for p in found), found
    assert any(p.startswith("import circle:") and "fields" in p and "pipeline" in p for p in found), found
    assert not any("pipeline (pipeline) imports django_semantic_images.query" in p for p in found), found
