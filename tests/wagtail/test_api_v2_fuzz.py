"""Property-based query strings for Wagtail's images API v2 with this app's ``?semantic=`` and
``?similar_to=`` (no OpenAPI schema: Wagtail's API v2 has none).

Hypothesis mixes this app's parameters with Wagtail's own (``search``, ``order``, ``limit``,
``offset``, ``fields``, field filters) and junk values (empty, huge, negative, NUL characters,
unicode, 10,000 characters, repeated parameters, ids of hidden, pending and missing images),
sends them through Django's test client as an anonymous caller, and checks each answer: never a
5xx; a 400 is ``{"message": ...}`` naming a parameter of the request; a 200 is JSON with ``items``.
The same query strings go to the detail view of each kind of image too (a 404 is a missing image's).
``make fuzz`` runs both with a random seed and more cases.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import given, seed
from hypothesis import strategies as st
from wagtail.models import Collection, CollectionViewRestriction

from tests.schemathesis_run import FUZZ_CASES, fuzz_seed, generation_settings

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

V2 = "/api/v2/images/"
#: Wagtail's answer to a parameter it does not know, followed by the names.
UNKNOWN = "query parameter is not an operation or a recognised field"
EXAMPLES = 300

#: Numbers that came close to the edges before (or would, with a careless parser).
NUMBERS = (
    "",
    " ",
    "-1",
    "0",
    "1",
    "3",
    "20",
    "1.0",
    "+5",
    " 5",
    "5_0",
    "\u0661",
    "nan",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "9" * 30,
    "9" * 5000,
    "0" * 5000,
    "-" + "9" * 5000,
)
#: Words: blank, NUL characters, other scripts, emoji, longer than any limit.
WORDS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u200b",
    "a cat",
    "IMG_0001",
    "ẞ straße",
    "кот",
    "猫",
    "ꆈꌠꁱꂷ",
    "%FF",
    "x" * 10_000,
    "🐱" * 600,
)
#: ``order`` and ``fields`` specs.
SPECS = (
    "",
    "random",
    "title",
    "-title",
    "title,-id",
    "random,title",
    "id,id",
    "nope",
    "*",
    "-",
    "_",
    ",",
    "title(",
    "tags(title)",
    "-tags",
    "*,-title",
    "score",
    "-score",
    "collection",
    "\x00",
)
JUNK = (*NUMBERS, *WORDS, *SPECS, "and", "or")


def values(name: str, ids: list[str]) -> st.SearchStrategy[str]:
    """Two times in three a value of the parameter's kind that could be right, else junk."""
    visible = st.sampled_from(ids[:-3])  # ids: the visible images', then hidden, pending, missing
    words = st.one_of(st.sampled_from(("a cat", "IMG_0001", "кот", "猫")), st.text("abcdefgh ", min_size=1))
    plausible = {
        "similar_to": visible,
        "limit": st.integers(1, 20).map(str),
        "offset": st.integers(0, 10).map(str),
        "id": visible,
        "width": st.integers(0, 5000).map(str),
        "semantic": words,
        "search": words,
        "title": st.sampled_from(("IMG_0001", "IMG_0002")),
        "tags": st.sampled_from(("cat", "cat,dog")),
        "search_operator": st.sampled_from(("and", "or")),
        "order": st.sampled_from(("title", "-title", "id", "-id,title", "width", "random")),
        "fields": st.sampled_from(("title", "-title", "*", "tags", "_,id", "-tags,width")),
    }
    numbers = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(ids), st.integers(-(2**70), 2**70).map(str))
    junk = st.one_of(
        numbers if name in ("similar_to", "limit", "offset", "id", "width") else st.sampled_from(JUNK),
        st.sampled_from(WORDS) if name in ("semantic", "search", "title", "tags") else st.sampled_from(SPECS),
        st.text(max_size=30),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12).map(lambda s: s * 900),
    )
    return junk if name not in plausible else st.one_of(plausible[name], plausible[name], junk)


#: This app's parameters, Wagtail's and its field filters on images, and (a few times in 40)
#: names it does not know: Wagtail refuses those before anything else.
KNOWN = ("semantic", "similar_to", "search", "search_operator", "order", "limit", "offset", "fields")
KNOWN += ("id", "title", "width", "tags")
PARAMETERS = (*KNOWN * 3, "collection", "type", "q", "")
#: Mostly a ranking, with or without Wagtail's parameters: most strings reach a search.
FIRST = st.sampled_from(("semantic", "semantic", "similar_to", "similar_to", *PARAMETERS))


def query_strings(ids: list[str]) -> st.SearchStrategy[str]:
    """A query string of 1 to 3 pairs (a name may repeat), sometimes with a raw, badly encoded tail."""
    pair = st.sampled_from(PARAMETERS).flatmap(lambda name: st.tuples(st.just(name), values(name, ids)))
    first = FIRST.flatmap(lambda name: st.tuples(st.just(name), values(name, ids)))
    pairs = st.builds(lambda head, tail: [head, *tail], first, st.lists(pair, max_size=2))
    raw_tail = st.sampled_from(["", "", "", "", "", "&semantic=%FF%FE", "&search=%C0", "&similar_to", "&=&&"])
    return st.builds(lambda p, tail: urlencode(p) + tail, pairs, raw_tail)


@pytest.fixture
def image_ids(sample_images, make_image, sample_paths) -> list[str]:
    """The ids an anonymous caller may see, one it may not (a restricted collection's), a
    pending image's and a missing one."""
    root = Collection.get_first_root_node()
    private = root.add_child(name="Private")
    CollectionViewRestriction.objects.create(
        collection=private, restriction_type=CollectionViewRestriction.PASSWORD, password="secret"
    )
    hidden = make_image(sample_paths["coffee"], "IMG_0100", collection=private)
    pending = make_image(sample_paths["rocket"], "IMG_0101")  # its vectors are not made
    visible = [image.pk for image in sample_images.values()]
    return [str(pk) for pk in (*visible, hidden.pk, pending.pk, max(visible) + 1000)]


def check_answer(client: Client, query: str, pk: str | None = None) -> int:
    """Send ``query`` to the listing, or to the detail view of image ``pk``; assert the answer keeps
    the contract; return its status. A detail view's 404 is the one of a missing image, hidden or not."""
    response = client.get(f"{V2}?{query}" if pk is None else f"{V2}{pk}/?{query}")
    statuses = (200, 400) if pk is None else (200, 400, 404)
    assert response.status_code in statuses, (pk, query[:300], response.status_code, response.content[:500])
    body = response.json()
    if response.status_code == 200:
        assert isinstance(body["items"], list) if pk is None else body["id"] == int(pk), body
        return 200
    if response.status_code == 404:
        assert body == {"message": "No Image matches the given query."}, (pk, query[:300], body)
        return 404
    assert set(body) == {"message"}, body
    names = {part.split("=", 1)[0] for part in query.split("&") if part}
    message = body["message"]
    # A parameter with an empty name is named as "": Wagtail's check of the listing's names as "...: ",
    # the detail view's NUL check as " cannot contain ...".
    empty_named = "" in names and (message == f"{UNKNOWN}: " or message.startswith(" "))
    assert empty_named or any(names_parameter(message, name) for name in names if name), (query[:300], message)
    return 400


#: How Wagtail's messages name some parameters ("random ordering cannot be combined...").
ALIASES = {"order": ("order", "ordering"), "tags": ("tags", "tag")}


def names_parameter(message: str, name: str) -> bool:
    """Whether ``message`` has ``name`` (or its alias) as a word: "q" is not named by "query"."""
    return any(re.search(rf"(?<!\w){re.escape(word)}(?!\w)", message) for word in ALIASES.get(name, (name,)))


def run(
    client: Client, ids: list[str], examples: int, random_seed: int | None = None, *, detail: bool = False
) -> dict[int, int]:
    """Send ``examples`` query strings to the listing, or with ``detail`` to the detail view of one of
    ``ids`` each (it runs the listing's filters)."""
    statuses: dict[int, int] = {}

    @given(query=query_strings(ids), pk=st.sampled_from(ids) if detail else st.none())
    @generation_settings(examples, derandomize=random_seed is None)
    def send(query: str, pk: str | None) -> None:
        status = check_answer(client, query, pk)
        statuses[status] = statuses.get(status, 0) + 1

    if random_seed is not None:
        send = seed(random_seed)(send)
    send()
    return statuses


@pytest.fixture
def anonymous(settings) -> Client:
    """A caller that gets the 500 page instead of the view's exception (Wagtail's own 500s), with the
    ranking unthrottled (a run sends hundreds of ranked listings a minute)."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    return Client(raise_request_exception=False)


def test_generated_v2_query_strings_get_no_5xx_and_400s_name_the_parameter(anonymous, image_ids):
    statuses = run(anonymous, image_ids, EXAMPLES)
    print(f"\nv2 query strings: {statuses}")
    # The generator reached the listing's answers, not only its errors.
    assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 20, statuses


def test_generated_v2_query_strings_on_the_detail_view_get_no_5xx_and_400s_name_the_parameter(anonymous, image_ids):
    """The same query strings on the detail view of a visible, hidden, pending or missing image: it runs
    the listing's filters, where Wagtail checks none of their values (``?search_operator=xor`` was a 500)."""
    statuses = run(anonymous, image_ids, EXAMPLES, detail=True)
    print(f"\nv2 query strings on the detail view: {statuses}")
    assert all(statuses.get(status, 0) > 20 for status in (200, 400, 404)), statuses


@pytest.mark.skipif(not FUZZ_CASES, reason="make fuzz: set SEMANTIC_IMAGES_FUZZ_CASES")
def test_fuzz_v2_query_strings_with_a_random_seed(anonymous, image_ids):
    """``make fuzz``: SEMANTIC_IMAGES_FUZZ_CASES query strings, seed SEMANTIC_IMAGES_FUZZ_SEED or random."""
    random_seed = fuzz_seed()
    print(f"\nv2 fuzz seed: {random_seed} (rerun with SEED={random_seed})", flush=True)
    statuses = run(anonymous, image_ids, FUZZ_CASES, random_seed)
    print(f"v2 fuzz seed {random_seed}: {sum(statuses.values())} query strings, statuses {statuses}")
    statuses = run(anonymous, image_ids, FUZZ_CASES, random_seed, detail=True)
    print(f"v2 fuzz seed {random_seed}: {sum(statuses.values())} on the detail view, statuses {statuses}")
