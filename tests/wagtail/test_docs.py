"""The Wagtail half of tests/test_docs.py: what the pages import from Wagtail and from
``django_semantic_images.contrib.wagtail``, and the names they give of it, exist."""

from __future__ import annotations

from tests.docs_check import PAGES, failed_imports, is_wagtail, not_imported, package_modules, unresolved_names


def test_the_wagtail_python_a_user_would_paste_imports():
    assert failed_imports(PAGES, is_wagtail) == []


def test_names_of_the_wagtail_app_in_code_spans_exist():
    assert unresolved_names(PAGES, package_modules(lambda name: True), skip=not_imported) == []
