"""Reading the documentation (README.md, docs/*.md) for the tests that hold it to the code:
links and anchors, the settings table, the Python a user would paste, names in code spans."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^ *```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) +(.*?)[ #]*$", re.M)
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
#: Imports of the site a snippet is written for, not of an installed package.
SITE_MODULES = ("mysite", "yoursite", "app", "myapp")


def without_code_blocks(text: str) -> str:
    """``text`` with its fenced blocks blanked out (line numbers kept)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_blocks(text: str, language: str) -> Iterator[str]:
    for match in FENCE.finditer(text):
        if match.group(2) == language:
            yield textwrap.dedent(match.group(3))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(without_code_blocks(page.read_text())):
        name = slug(match.group(2))
        count = seen.get(name, 0)
        seen[name] = count + 1
        found.add(name if count == 0 else f"{name}-{count}")
    return found


def broken_links(pages: list[Path]) -> list[str]:
    """Every relative link of ``pages`` whose file or ``#anchor`` is not there."""
    broken = []
    for page in pages:
        for match in LINK.finditer(without_code_blocks(page.read_text())):
            target = match.group(1)
            if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            if not destination.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
                broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def python_snippets(pages: list[Path]) -> Iterator[tuple[str, ast.Module]]:
    """``(where, tree)`` of each Python block (a ``>>>`` session read as its statements)."""
    for page in pages:
        for index, block in enumerate(code_blocks(page.read_text(), "python")):
            if block.lstrip().startswith(">>>"):
                block = "\n".join(line[4:] for line in block.splitlines() if line.startswith((">>> ", "... ")))
            yield f"{page.name}, python block {index + 1}", ast.parse(block)


def imported_names(tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    """``(module, name)`` of each import of ``tree`` (``name`` None for ``import module``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.module, alias.name


def failed_imports(pages: list[Path], wanted) -> list[str]:
    """The imports of the pages' Python blocks (those whose module ``wanted`` accepts) that fail."""
    failures = []
    for where, tree in python_snippets(pages):
        for module, name in imported_names(tree):
            if module.split(".")[0] in SITE_MODULES or not wanted(module):
                continue
            try:
                imported = importlib.import_module(module)
                if name is not None and not hasattr(imported, name):
                    importlib.import_module(f"{module}.{name}")  # a submodule
            except ImportError as exc:
                failures.append(f"{where}: from {module} import {name}: {exc}")
    return failures


def is_wagtail(module: str) -> bool:
    """Modules that need Wagtail's apps installed to import."""
    return module.split(".")[0] == "wagtail" or module.startswith("django_semantic_images.contrib.wagtail")


def without_measured(text: str) -> str:
    """``text`` without its "## Measured" sections: records of runs, which may name code since changed."""
    return re.sub(r"^## Measured\n.*?(?=^## |\Z)", "", text, flags=re.M | re.S)


def code_spans(pages: list[Path]) -> Iterator[tuple[str, str]]:
    """``(page name, span)`` of every inline code span outside the fenced blocks and measured sections."""
    for page in pages:
        for match in CODE_SPAN.finditer(without_measured(without_code_blocks(page.read_text()))):
            yield page.name, match.group(1)


DOTTED = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?")


#: The module of the tasks framework's engine, which a backport too old for it cannot import.
TASK_FRAMEWORK = "django_semantic_images.task_framework"


def not_imported(path: str) -> bool:
    """Whether ``path`` is in a module that ``package_modules`` left out (``unresolved_names``' skip)."""
    from django_semantic_images.apps import task_framework_installed

    return path.startswith(TASK_FRAMEWORK) and not task_framework_installed()


def package_modules(wanted) -> dict[str, object]:
    """The package's modules that ``wanted`` accepts, imported, by dotted name (migrations left out;
    so is ``task_framework`` where the app leaves the framework alone: a backport too old for it)."""
    import pkgutil

    import django_semantic_images
    from django_semantic_images.apps import task_framework_installed

    modules: dict[str, object] = {"django_semantic_images": django_semantic_images}
    for info in pkgutil.walk_packages(django_semantic_images.__path__, "django_semantic_images."):
        if ".migrations" in info.name or ".management.commands." in info.name or not wanted(info.name):
            continue
        if info.name == TASK_FRAMEWORK and not task_framework_installed():
            continue
        modules[info.name] = importlib.import_module(info.name)
    return modules


def resolve(path: str, modules: dict[str, object]) -> bool:
    """Does ``path`` name something: a full dotted path in the package, ``module.name`` with a
    module's last part (``pipeline.embed_pks``), or ``Class.attribute`` of a class of the package?"""
    parts = path.split(".")
    roots: list[object] = []
    if parts[0] == "django_semantic_images":
        for cut in range(len(parts), 0, -1):
            if ".".join(parts[:cut]) in modules:
                roots, parts = [modules[".".join(parts[:cut])]], parts[cut:]
                break
    else:
        roots = [module for name, module in modules.items() if name.rsplit(".", 1)[-1] == parts[0]]
        roots += classes_named(parts[0], modules)
        parts = parts[1:]
    for root in roots:
        value = root
        for part in parts:
            value = getattr(value, part, _MISSING)
            if value is _MISSING:
                break
        else:
            return True
    return False


_MISSING = object()


def classes_named(name: str, modules: dict[str, object]) -> list[object]:
    found = []
    for module in modules.values():
        value = getattr(module, name, None)
        if isinstance(value, type) and value.__module__.startswith("django_semantic_images"):
            found.append(value)
    return found


#: Spans that look like a module's name and an attribute but are not the package's: pgvector's
#: settings (``hnsw.ef_search``), Django's cache.
NOT_OURS = re.compile(r"hnsw\.(ef_search|iterative_scan|max_scan_tuples|scan_mem_multiplier)|cache\.\w+")


def unresolved_names(pages: list[Path], modules: dict[str, object], skip=lambda path: False) -> list[str]:
    """Code spans naming something of the package (by its full path, a module's last part or a
    class of it) that is not there; ``skip(path)`` leaves a path out (one of modules not imported)."""
    short = {name.rsplit(".", 1)[-1] for name in modules}
    missing = []
    for page, span in code_spans(pages):
        match = DOTTED.fullmatch(span.strip())
        if not match:
            continue
        path = match.group(1)
        head = path.split(".")[0]
        if NOT_OURS.fullmatch(path) or skip(path) or skip(f"django_semantic_images.{path}"):
            continue
        if path.endswith((".py", ".md", ".json", ".html", ".js", ".css", ".png", ".npz", ".onnx", ".txt")):
            continue
        if head != "django_semantic_images" and head not in short and not classes_named(head, modules):
            continue
        if head != "django_semantic_images" and importlib.util.find_spec(head) is not None:
            continue  # another package's (wagtail.images.permissions), not a module of ours
        if not resolve(path, modules):
            missing.append(f"{page}: `{span}`")
    return missing


#: Folders of the repository that a code span may name a file in.
REPO_FOLDERS = ("tests/", "docs/", "benchmarks/", "example_project/", "example_wagtail/", "django_semantic_images/")
REPO_FILE = re.compile(
    rf"((?:{'|'.join(map(re.escape, REPO_FOLDERS))})[\w./-]*\.(?:py|md|html|js|css|sh|json|png|toml))(?:::(\w+))?"
)


def missing_files(pages: list[Path]) -> list[str]:
    """Code spans naming a file of the repository (``tests/test_api.py``, ``tests/test_x.py::test_y``)
    that is not there, or a test that it does not define; and bare test names (``test_...``) that no
    test module defines."""
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("*.py"))
    defined = set(re.findall(r"^\s*def (test_\w+)", tests, flags=re.M))
    missing = []
    for page, span in code_spans(pages):
        match = REPO_FILE.fullmatch(span.strip())
        if match:
            path, test = ROOT / match.group(1), match.group(2)
            if not path.exists() or (test and not re.search(rf"^\s*def {test}\b", path.read_text(), flags=re.M)):
                missing.append(f"{page}: `{span}`")
        elif re.fullmatch(r"test_\w+", span) and span not in defined and not (ROOT / "tests" / f"{span}.py").exists():
            missing.append(f"{page}: `{span}`")
    return missing
