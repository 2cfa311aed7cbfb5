"""``query``: text -> images, image -> images, composition with filters, the HNSW plan."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.db import connection, models
from django.test.utils import CaptureQueriesContext, isolate_apps
from PIL import Image, ImageOps

from django_semantic_images import ImageEmbeddingField, SemanticDistance, SemanticImageManager, hnsw_message
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.query import ranked_rows, searchable, semantic_search, text_search
from photos.models import Photo
from tests.sent_sql import CaptureSentQueries

pytestmark = pytest.mark.django_db


def test_the_cat_ranks_first_for_a_cat_lying_on_a_blanket(sample_photos):
    results = list(Photo.objects.semantic_search("a cat lying on a blanket")[:5])
    assert results[0].pk == sample_photos["chelsea"].pk
    assert results[0].score > results[1].score
    assert results[0].distance == pytest.approx(1 - results[0].score)


def test_the_coffee_ranks_first_for_a_cup_of_coffee(sample_photos):
    assert Photo.objects.semantic_search("a cup of coffee").first().pk == sample_photos["coffee"].pk


def test_lazy_words_rank_and_calibrate_as_their_text(sample_photos):
    """A lazily translated string (``gettext_lazy``) is words: the same ranking and calibration."""
    from django.utils.translation import gettext_lazy

    lazy = Photo.objects.semantic_search(gettext_lazy("a cup of coffee"))
    plain = Photo.objects.semantic_search("a cup of coffee")
    assert [r.pk for r in lazy] == [r.pk for r in plain]
    assert lazy.calibration() == plain.calibration()


def test_a_flipped_copy_finds_its_original_first(sample_photos, sample_paths):
    flipped = ImageOps.mirror(Image.open(sample_paths["astronaut"]).convert("RGB"))
    assert Photo.objects.similar_to(flipped).first().pk == sample_photos["astronaut"].pk


def test_similar_to_an_instance_excludes_itself(sample_photos, make_photo, sample_paths):
    cat = sample_photos["chelsea"]
    cropped = Image.open(sample_paths["chelsea"]).convert("RGB").crop((20, 20, 400, 280))
    copy = make_photo(cropped, name="cat-crop.jpg")
    embed_instances([copy])
    results = list(Photo.objects.similar_to(cat)[:3])
    assert cat.pk not in [r.pk for r in results]
    assert results[0].pk == copy.pk


def test_expression_composes_with_annotate_and_order_by(sample_photos):
    qs = Photo.objects.annotate(d=SemanticDistance("embedding", "a cup of coffee")).order_by("d")
    assert qs.exclude(embedding_semantic=None).first().pk == sample_photos["coffee"].pk


def test_search_composes_with_filters(sample_photos):
    Photo.objects.filter(pk=sample_photos["coffee"].pk).update(published=False)
    results = list(Photo.objects.filter(published=True).semantic_search("a cup of coffee")[:20])
    assert sample_photos["coffee"].pk not in [r.pk for r in results]
    assert len(results) == len(sample_photos) - 1


@pytest.mark.parametrize("blank", ["   ", "\x00", "\u200b\ufeff\u2060"], ids=ascii)
def test_empty_query_is_refused(blank):
    """Blank as the APIs define it: NUL or zero-width characters alone were ranked by the vector of nothing."""
    with pytest.raises(ValueError, match="empty"):
        Photo.objects.semantic_search(blank)
    with pytest.raises(ValueError, match="empty"):
        text_search(Photo.objects.all(), blank)


def test_a_property_among_the_text_fields_is_left_out_of_the_keyword_match(monkeypatch):
    """Words the text model cannot read are matched in the field's text fields; one that is a property
    of the model (which ``text_fields`` takes) is no column: the filter on it was a FieldError (a 500)."""
    from django_semantic_images.fields import get_embedding_field

    monkeypatch.setattr(get_embedding_field(Photo), "text_fields", ("title", "caption_words"))
    monkeypatch.setattr(Photo, "caption_words", property(lambda self: self.alt_text), raising=False)
    cat = Photo.objects.create(title="кот на одеяле")
    Photo.objects.create(title="собака")
    rows, note = text_search(Photo.objects.all(), "кот")
    assert [row.pk for row in rows] == [cat.pk]
    assert note is not None and "in title (" in note


def test_keywords_find_a_text_stored_decomposed(monkeypatch):
    """Search words are read composed (NFC); a text stored decomposed (NFD: a title from a macOS file
    name, an import) holds other code points, and ``icontains`` missed it: each term now matches
    in either form."""
    import unicodedata

    decomposed = Photo.objects.create(title=unicodedata.normalize("NFD", "йогурт и кофе"))
    composed = Photo.objects.create(alt_text="йогурт")
    rows, note = text_search(Photo.objects.all(), unicodedata.normalize("NFD", "Йогурт"))
    assert note is not None and sorted(row.pk for row in rows) == [decomposed.pk, composed.pk]


def test_words_holding_a_lone_surrogate_are_a_value_error():
    """No text model reads one: the tokenizer's TypeError said the words were not text at all."""
    for search in (Photo.objects.semantic_search, lambda words: text_search(Photo.objects.all(), words)):
        with pytest.raises(ValueError, match=r"not valid Unicode: it holds a lone surrogate \('\\udc80'\)"):
            search("a cat \udc80")


def test_nul_and_zero_width_characters_in_words_count_as_spaces(sample_photos):
    words = list(Photo.objects.semantic_search("a cup of coffee").values_list("pk", "distance"))
    assert list(Photo.objects.semantic_search("a cup\x00of\u200bcoffee ").values_list("pk", "distance")) == words


def test_filtered_search_still_fills_the_page(index_forced, settings):
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    random_rows = index_forced
    assert "Index Scan" in Photo.objects.filter(published=True).semantic_search(random_rows[7])[:30].explain()
    query = random_rows[7]
    page = list(Photo.objects.filter(published=True).semantic_search(query)[:30])
    assert len(page) == 30
    assert all(p.published for p in page)
    distances = [p.distance for p in page]
    assert distances == sorted(distances)


def test_without_iterative_scan_a_filtered_page_comes_back_short(index_forced, settings):
    """The control for the test above: plain HNSW + a 10% filter returns ~ef_search/10 rows."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40, "HNSW_ITERATIVE_SCAN": ""}
    page = list(Photo.objects.filter(published=True).semantic_search(index_forced[7])[:30])
    assert len(page) < 30


def test_query_plan_uses_the_hnsw_index(random_rows, settings):
    # The planner weighs ef_search against the table size: at 2,000 rows and the default
    # ef_search of 200 an exact scan is cheaper; at 40 the index wins even here.
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    plan = Photo.objects.semantic_search(random_rows[3])[:10].explain()
    assert "Index Scan using photos_photo_sem_" in plan, plan
    # The ranking's second key (pk) sorts only the rows at one distance, over the index scan.
    assert "Incremental Sort" in plan and "Presorted Key" in plan, plan


def test_similar_to_has_the_shape_the_visual_index_serves(index_forced):
    """1280-d rows are TOASTed and the planner prefers an exact scan at 2,000 rows; the SQL
    shape (ORDER BY visual <=> query LIMIT n) is one the HNSW index can serve."""
    plan = Photo.objects.similar_to(np.ones(1280, dtype=np.float32))[:10].explain()
    assert "Index Scan using photos_photo_vis_" in plan, plan


def test_query_vectors_reach_postgresql_bit_for_bit():
    """The SQL literal of a query vector gives PostgreSQL exactly the float32 values."""
    from django.db import connection

    from django_semantic_images.expressions import vector_literal

    rng = np.random.default_rng(7)
    vectors = [rng.normal(size=384).astype(np.float32), np.array([1e-38, -3.4e38, 0.1, 1 / 3], np.float32)]
    with connection.cursor() as cursor:
        for vector in vectors:
            cursor.execute("SELECT %s::vector::real[]", [vector_literal(vector)])
            assert np.array_equal(np.array(cursor.fetchone()[0], dtype=np.float32), vector)


def test_a_ranked_iterator_returns_the_rows_a_list_does(index_forced, settings):
    """``.iterator()`` (a server-side cursor) runs inside the HNSW settings too: with a 10%
    filter, plain HNSW would return ~ef_search/10 rows instead of the 30 asked for."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[11])[:30]
    as_list = [p.pk for p in ranked.all()]
    assert len(as_list) == 30
    assert [p.pk for p in ranked.all().iterator(chunk_size=7)] == as_list
    early = ranked.all().iterator(chunk_size=5)
    assert next(early).pk == as_list[0]
    early.close()  # stopping early ends the settings' transaction cleanly
    assert [p.pk for p in ranked.all()] == as_list


def test_ranked_rows_send_the_hnsw_settings_with_the_query(index_forced, settings, monkeypatch):
    """``ranked_rows``: the settings and the query in one round trip, the settings in force
    (with a 10% filter plain HNSW would return ~ef_search/10 rows, not 30); a connection that
    binds on the server gets the usual evaluation, with the same rows."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[11]).values_list("pk", "distance")
    with CaptureSentQueries(connection) as queries:
        rows = ranked_rows(ranked[:30])
    assert len(queries) == 1 and "set_config" in queries[0]["sql"]
    assert len(rows) == 30 and rows == list(ranked[:30])
    assert [distance for _, distance in rows] == sorted(distance for _, distance in rows)
    assert ranked_rows(ranked.filter(pk__in=[])) == []
    monkeypatch.setattr(hnsw_message, "ClientCursor", type("ServerSideOnly", (), {}))
    assert ranked_rows(ranked[:30]) == rows


def test_ranked_rows_give_what_the_queryset_gives(index_forced, settings, monkeypatch):
    """``ranked_rows(qs)`` is ``list(qs)`` with the settings in force: the tuples of a
    ``values_list()`` (without the ordering column Django adds for ``distinct()``), its flat
    values and named rows, the dicts of ``values()``, model instances; on a connection that
    binds on the server too. A queryset ranked by an annotation alone gets the settings."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[11])
    shapes = [
        ranked.values_list("pk").distinct()[:30],
        ranked.values("pk", "distance")[:30],
        ranked.values_list("pk", flat=True)[:30],
        ranked.values_list("pk", "distance", named=True)[:30],
        ranked.defer("embedding_visual", "embedding_semantic")[:30],
    ]
    expected = [list(qs.all()) for qs in shapes]
    pks = expected[2]
    # distinct() is planned as an exact scan (Sort + Unique over every row), the others walk the
    # HNSW graph: the same 30 best only where the graph finds them all; the rows are 1-tuples.
    assert len(pks) == 30 and len(expected[0]) == 30 and {len(row) for row in expected[0]} == {1}
    assert expected[1][0] == {"pk": pks[0], "distance": expected[3][0].distance}
    annotated = (
        Photo.objects.filter(published=True, embedding_semantic__isnull=False)
        .annotate(d=SemanticDistance("embedding", index_forced[11]))
        .order_by("d", "pk")
        .values_list("pk", flat=True)[:30]
    )
    assert len(list(annotated.all())) < 30  # plain Django: no HNSW settings
    with CaptureSentQueries(connection) as queries:
        assert [ranked_rows(qs) for qs in shapes] == expected
        assert ranked_rows(annotated) == pks
    assert len(queries) == len(shapes) + 1 and all("set_config" in q["sql"] for q in queries)
    monkeypatch.setattr(hnsw_message, "ClientCursor", type("ServerSideOnly", (), {}))
    assert [ranked_rows(qs) for qs in shapes] == expected
    assert ranked_rows(annotated) == pks


def test_the_hnsw_settings_end_with_the_query_inside_a_transaction(index_forced, settings, monkeypatch):
    """Inside a caller's transaction (this test's, as ``atomic()`` or ``ATOMIC_REQUESTS``), every
    way of running a ranked query gives the HNSW parameters back their values after it, a
    site's own SET LOCAL included: the message of a page ends with a statement that does so
    (still one round trip); a query in a transaction of its own takes one more."""
    from django_semantic_images.duplicates import near_duplicates

    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}

    def current() -> tuple[str, ...]:
        with connection.cursor() as cursor:
            names = ("hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples")
            cursor.execute("SELECT " + ", ".join("current_setting(%s)" for _ in names), names)
            return cursor.fetchone()

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 77")
    before = current()
    assert before[0] == "77" and before[1] == "off"
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[7])
    with CaptureQueriesContext(connection) as queries:
        assert len(ranked[:30]) == 30
    assert len(queries) == 1 and current() == before
    runs = [
        lambda: ranked_rows(ranked.values_list("pk")[:30]),
        lambda: list(ranked[:30].iterator(chunk_size=7)),
        lambda: ranked[:30].explain(),
        lambda: ranked.best(20).count(),
        lambda: ranked.best(20).update(title="best"),
        lambda: near_duplicates(Photo.objects.filter(pk__in=ranked.values_list("pk", flat=True)[:20])),
    ]
    for run in runs:
        run()
        assert current() == before

    def twice(execute, sql, params, many, context):  # a site's wrapper that retries a query
        execute(sql, params, many, context)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(twice):
        assert len(ranked[:30]) == 30 and current() == before
    monkeypatch.setattr(hnsw_message, "ClientCursor", type("ServerSideOnly", (), {}))
    assert len(ranked[:30]) == 30 and current() == before


def test_a_plain_queryset_over_a_ranked_subquery_needs_the_settings_around_it(index_forced, settings):
    """A ranked queryset inside a plain one (``pk__in=ranked.values("pk")[:n]``, ``Subquery``)
    runs as the plain one does, without the HNSW settings: with a 10% filter the index finds
    ~ef_search/10 rows. ``best(n)`` or ``hnsw_settings`` around it give them (docs/field.md)."""
    from django_semantic_images.fields import get_embedding_field
    from django_semantic_images.hnsw import hnsw_settings

    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[7])
    outer = Photo.objects.filter(pk__in=ranked.values("pk")[:30])
    assert len(outer.all()) < 30
    with hnsw_settings("default", field=get_embedding_field(Photo)):
        assert len(outer.all()) == 30
    assert len(outer.all()) < 30  # given back after the block
    assert ranked.best(30).count() == 30


def test_a_ranked_page_is_one_round_trip_with_the_settings_in_force(index_forced, settings, monkeypatch):
    """Evaluating a ranked queryset sends the HNSW settings and the query as one message (it
    took a round trip for the settings and, outside a transaction, BEGIN and COMMIT); the
    settings are in force (a 10% filter fills the page). A connection that binds on the server
    gets the settings in a statement of their own, and the same rows (inside this test's
    transaction, a third statement gives the settings back their previous values)."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[11])[:30]
    with CaptureSentQueries(connection) as queries:
        page = [p.pk for p in ranked.all()]
    assert len(queries) == 1 and "set_config('hnsw.ef_search', '40', true)" in queries[0]["sql"]
    assert len(page) == 30
    monkeypatch.setattr(hnsw_message, "ClientCursor", type("ServerSideOnly", (), {}))
    with CaptureSentQueries(connection) as queries:
        assert [p.pk for p in ranked.all()] == page
    assert len(queries) == 3 and "set_config" not in queries[1]["sql"] and "set_config" in queries[2]["sql"]


@isolate_apps("photos")
def test_a_model_keeps_its_own_manager():
    """The manager is optional: a model with an ImageEmbeddingField keeps the manager it declares."""

    class Picture(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    assert type(Picture.objects) is models.Manager
    assert not isinstance(Picture.objects, SemanticImageManager)
    assert Picture._meta.get_field("embedding_visual").dimensions == 8


class _OwnQuerySet(models.QuerySet):
    def published(self) -> _OwnQuerySet:
        return self.filter(published=True)


def test_any_queryset_can_search_and_keeps_its_own_methods(sample_photos):
    Photo.objects.filter(pk=sample_photos["rocket"].pk).update(published=False)
    own = _OwnQuerySet(model=Photo)
    ranked = semantic_search(own.published(), "a cup of coffee")
    assert isinstance(ranked, _OwnQuerySet)
    assert ranked.first().pk == sample_photos["coffee"].pk
    assert sample_photos["rocket"].pk not in [p.pk for p in ranked.published()]
    assert searchable(ranked) is ranked
    assert type(searchable(own)) is type(searchable(_OwnQuerySet(model=Photo)))  # one class per queryset class


def test_best_n_is_what_order_by_sorts_within(index_forced, settings):
    """``.best(20).order_by(...)`` sorts the 20 best matches (found through the HNSW index),
    not every matching row; without an order_by they stay best first."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[7])
    best = [p.pk for p in ranked[:20]]
    assert [p.pk for p in ranked.best(20)] == best
    newest_first = list(ranked.best(20).order_by("-pk"))
    assert [p.pk for p in newest_first] == sorted(best, reverse=True)
    assert all(p.score is not None and p.published for p in newest_first)
    assert ranked.best(20).count() == 20
    assert ranked.order_by("-pk").count() > 20  # what order_by alone would sort
    assert "Index Scan using photos_photo_sem_" in ranked.best(20).order_by("-pk").explain()


def test_best_n_takes_the_nearest_whatever_the_order_before_it(index_forced, settings):
    """An ``order_by()`` or ``reverse()`` before ``best(n)`` sorts the n nearest, as one after it
    does: the subquery picks them by distance (it took the first n in the caller's order)."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    ranked = Photo.objects.filter(published=True).semantic_search(index_forced[7])
    best = [p.pk for p in ranked[:20]]
    assert [p.pk for p in ranked.order_by("-pk").best(20)] == sorted(best, reverse=True)
    assert [p.pk for p in ranked.order_by("pk").best(20)] == sorted(best)
    assert [p.pk for p in ranked.reverse().best(20)] == best[::-1]
    assert [p.pk for p in ranked.reverse().best(20).reverse()] == best
    assert ranked.order_by("-pk").best(20).count() == 20


def test_rows_at_one_distance_are_each_on_one_page(make_photo, sample_paths):
    """Identical vectors are at one distance from any query: the ranking orders them by pk
    (its second key), so pages of an exact scan show each row once (by distance alone, a
    top-N sort put some of them on two pages and others on none)."""
    from django_semantic_images.encoders.base import l2_normalize

    template = make_photo(sample_paths["coffee"], published=False)
    rng = np.random.default_rng(5)
    same = l2_normalize(rng.normal(size=(1, 384)).astype(np.float32))[0]
    others = l2_normalize(rng.normal(size=(400, 384)).astype(np.float32))
    visual = np.ones(1280, dtype=np.float32)
    rows = Photo.objects.bulk_create(
        Photo(image=template.image.name, embedding_status="embedded", embedding_semantic=v, embedding_visual=visual)
        for v in [same] * 40 + list(others)
    )
    tied = sorted(p.pk for p in rows[:40])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE photos_photo")
        cursor.execute("SET LOCAL enable_indexscan = off")
    ranked = Photo.objects.semantic_search(same)
    assert "Index Scan" not in ranked[:7].explain()
    seen = [p.pk for offset in range(0, 42, 7) for p in ranked[offset : offset + 7]]
    assert len(set(seen)) == 42
    assert seen[:40] == tied


def test_best_needs_a_ranking_and_a_positive_count():
    with pytest.raises(TypeError, match="semantic_search"):
        Photo.objects.best(5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive number"):
            Photo.objects.semantic_search(np.ones(384, dtype=np.float32)).best(bad)


def test_auto_ef_search_grows_with_the_tables_estimated_rows(random_rows, settings):
    """``HNSW_EF_SEARCH = "auto"``: 200 candidates up to 100k rows, more above them (half as
    many in a graph built with m >= 24, ef_construction >= 128, a quarter with m >= 32,
    ef_construction >= 200; read from ``pg_class.reltuples``
    once per process and TTL), never more than pgvector's 1,000."""
    from django_semantic_images import hnsw

    assert [hnsw.auto_ef_search(rows) for rows in (0, 2_000, 100_000, 1_000_000, 10**8)] == [200, 200, 200, 800, 1000]
    assert [hnsw.auto_ef_search(rows, 24, 128) for rows in (300_000, 1_000_000, 10**8)] == [200, 400, 500]
    assert hnsw.auto_ef_search(1_000_000, 24, 64) == 800
    assert [hnsw.auto_ef_search(rows, 32, 200) for rows in (300_000, 1_000_000, 10**8)] == [200, 200, 250]
    assert hnsw.auto_ef_search(1_000_000, 32, 128) == 400
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": "auto"}
    hnsw._row_estimates.clear()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE photos_photo")
    ranked = Photo.objects.semantic_search(random_rows[3]).values_list("pk", flat=True)[:10]
    with CaptureSentQueries(connection) as queries:
        first, again = list(ranked.all()), list(ranked.all())
    sql = [q["sql"] for q in queries]
    assert sum("reltuples" in s for s in sql) == 1, sql  # the second search reads the cached estimate
    assert sum("'hnsw.ef_search', '200'" in s for s in sql) == 2, sql
    assert first == again and len(first) == 10
    assert hnsw._row_estimates[("default", "photos_photo")][1] == pytest.approx(2001, abs=5)
    # A million rows (the estimate as a large table's ANALYZE leaves it): 800 candidates.
    hnsw._row_estimates[("default", "photos_photo")] = (time.monotonic(), 1_000_000.0)
    with CaptureSentQueries(connection) as queries:
        assert ranked_rows(ranked.all()) == first
    assert "'hnsw.ef_search', '800'" in queries[0]["sql"]
    # An expired estimate is read again.
    hnsw._row_estimates[("default", "photos_photo")] = (time.monotonic() - hnsw.ROW_ESTIMATE_TTL - 1, 1e6)
    with CaptureSentQueries(connection) as queries:
        list(ranked.all())
    assert "reltuples" in queries[0]["sql"] and "'hnsw.ef_search', '200'" in queries[1]["sql"]
    hnsw._row_estimates.clear()


def test_best_n_counts_and_updates_the_rows_it_lists(index_forced, settings):
    """``count()``, ``exists()``, ``aggregate()`` and ``update()`` of ``best(n)`` run its subquery
    (``ORDER BY distance, pk LIMIT n`` through the HNSW index) under the HNSW settings too: without
    them, a 10% filter finds ~ef_search/10 rows, not the n that a list shows (each query gives the
    settings back after it, so none runs under those of the one before)."""
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    best = Photo.objects.filter(published=True).semantic_search(index_forced[7]).best(20)
    assert best.count() == 20
    assert best.aggregate(n=models.Count("pk"))["n"] == 20
    with CaptureSentQueries(connection) as queries:
        assert best.exists()
    assert len(queries) == 1 and "set_config('hnsw.ef_search', '40', true)" in queries[0]["sql"]
    assert best.update(title="best") == 20
    assert len(best) == 20 and Photo.objects.filter(title="best").count() == 20


def test_best_n_deletes_the_rows_it_lists(index_forced, settings):
    settings.SEMANTIC_IMAGES = {"HNSW_EF_SEARCH": 40}
    best = Photo.objects.filter(published=True).semantic_search(index_forced[7]).best(20)
    assert best.delete()[0] == 20
    assert not hasattr(Photo.objects, "delete")  # as for any manager


def test_a_query_that_is_neither_words_nor_a_vector_is_refused():
    """None, a number, a list of words, an empty list: never ranked as the text of their repr."""
    for bad in (None, 3, ["red", "bicycle"], []):
        with pytest.raises(TypeError, match="words"):
            Photo.objects.semantic_search(bad)
        with pytest.raises(TypeError, match="words"):
            Photo.objects.annotate(d=SemanticDistance("embedding", bad))
    for bad in (None, 3, ["red", "bicycle"], []):
        with pytest.raises(TypeError, match="image"):
            Photo.objects.similar_to(bad)


def test_a_list_of_numpy_numbers_is_a_vector(random_rows):
    as_array = [p.pk for p in Photo.objects.semantic_search(random_rows[5])[:5]]
    assert [p.pk for p in Photo.objects.semantic_search(list(random_rows[5]))[:5]] == as_array
    visual = np.asarray(Photo.objects.values_list("embedding_visual", flat=True).exclude(embedding_visual=None)[7])
    assert [p.pk for p in Photo.objects.similar_to(list(visual.astype(np.float32)))[:5]] == [
        p.pk for p in Photo.objects.similar_to(visual)[:5]
    ]


def test_a_query_vector_of_another_width_or_not_finite_is_refused_before_the_database():
    for search in (Photo.objects.semantic_search, Photo.objects.similar_to):
        with pytest.raises(ValueError, match="10 numbers"):
            search(np.ones(10, dtype=np.float32))
        for bad in (np.nan, np.inf, 1e39):
            vector = np.ones(384 if search == Photo.objects.semantic_search else 1280)
            vector[3] = bad
            with pytest.raises(ValueError, match="finite"):
                search(vector)
    with pytest.raises(ValueError, match="10 numbers"):
        Photo.objects.annotate(d=SemanticDistance("embedding", [0.5] * 10))
    assert Photo.objects.count() == 0  # the connection is still usable: nothing reached PostgreSQL


def test_a_query_vector_of_zeros_is_refused_it_has_no_direction(random_rows):
    """Its cosine distance to every row is NaN: the ranking listed rows by key, each scored NaN."""
    for search, width in ((Photo.objects.semantic_search, 384), (Photo.objects.similar_to, 1280)):
        with pytest.raises(ValueError, match="zeros"):
            search(np.zeros(width, dtype=np.float32))
        with pytest.raises(ValueError, match="zeros"):
            search([0] * width)
    with pytest.raises(ValueError, match="zeros"):
        Photo.objects.annotate(d=SemanticDistance("embedding", np.zeros(384)))
    assert len(Photo.objects.semantic_search(random_rows[3])[:5]) == 5


def test_similar_to_takes_a_pathlib_path(sample_photos, sample_paths):
    assert Photo.objects.similar_to(sample_paths["rocket"]).first().pk == sample_photos["rocket"].pk
    assert Photo.objects.similar_to(str(sample_paths["rocket"])).first().pk == sample_photos["rocket"].pk


def test_similar_to_an_upload_reads_no_more_than_max_upload_bytes(sample_photos, sample_paths, settings):
    """An uploaded file (a site's view passing ``request.FILES`` on) is held to MAX_UPLOAD_BYTES, as
    the API's search by photo: it was read whole, whatever its size. A path of the site's own is not."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from django_semantic_images.imaging import ImageDecodeError

    data, rocket = sample_paths["rocket"].read_bytes(), sample_photos["rocket"].pk
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": len(data) - 1}
    with pytest.raises(ImageDecodeError, match=f"limit of {len(data) - 1:,} bytes"):
        Photo.objects.similar_to(SimpleUploadedFile("rocket.jpg", data))
    assert Photo.objects.similar_to(sample_paths["rocket"]).first().pk == rocket
    settings.SEMANTIC_IMAGES = {"MAX_UPLOAD_BYTES": len(data)}
    assert Photo.objects.similar_to(SimpleUploadedFile("rocket.jpg", data)).first().pk == rocket


def test_similar_to_a_row_of_another_model_leaves_this_models_row_of_the_same_pk(sample_photos):
    """``exclude_self`` leaves out the query instance's own row: a row of another model that
    happens to share its primary key is another picture."""
    from django_semantic_images.signals import embedding_deferred
    from tests.multifield.models import TwoImagePhoto

    cat = sample_photos["chelsea"]
    with embedding_deferred():
        other = TwoImagePhoto.objects.create(
            pk=cat.pk,
            thumbnail="x.jpg",
            picture="x.jpg",
            embedding_visual=cat.embedding_visual,
            embedding_status="embedded",
        )
    assert Photo.objects.similar_to(other).first().pk == cat.pk
    assert cat.pk not in [p.pk for p in Photo.objects.similar_to(cat)]


def test_a_searchable_queryset_pickles_and_unpickles_as_itself(random_rows):
    """``searchable()`` makes its classes at run time (pickle cannot look them up by name): a
    ranked queryset of one pickles (it is evaluated first, as any queryset) and comes back with
    its rows, its class and its ranking; a fresh process finds the class again."""
    import os
    import pickle
    import subprocess
    import sys

    ranked = semantic_search(_OwnQuerySet(model=Photo).published(), random_rows[5])[:5]
    rows = [p.pk for p in ranked]
    back = pickle.loads(pickle.dumps(ranked))
    assert type(back) is type(ranked) and isinstance(back, _OwnQuerySet)
    assert [p.pk for p in back] == rows and back._vector_ranked
    data = pickle.dumps(searchable(models.QuerySet(model=Photo).filter(published=True)).semantic_search(random_rows[5]))
    script = (
        "import django, pickle, sys; django.setup(); "
        "qs = pickle.loads(sys.stdin.buffer.read()); print(type(qs).__name__, qs._vector_ranked)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DATABASE_URL": "postgresql://localhost/unused"}
    other = subprocess.run([sys.executable, "-c", script], input=data, capture_output=True, check=True, env=env)
    assert other.stdout.decode().split() == ["SearchableQuerySet", "True"]


def test_a_calibrated_search_pickles_its_rows_and_not_those_it_is_calibrated_on(random_rows):
    """Pickling a queryset evaluates it, and pickled ``calibrated_on(rows)`` with it: every row
    the caller may see, vectors included, was read and written into the pickle (about 30 MB for
    a page of two at 2,000 rows). Now those rows are kept as their query; calibration is the same."""
    import pickle

    ranked = Photo.objects.semantic_search(random_rows[5]).calibrated_on(Photo.objects.filter(published=True))[:2]
    with CaptureQueriesContext(connection) as queries:
        data = pickle.dumps(ranked)
    assert len(queries) == 1 and len(data) < 100_000
    back = pickle.loads(data)
    assert [p.pk for p in back] == [p.pk for p in ranked]
    assert back._calibrated_on._result_cache is None
    assert str(back._calibrated_on.query) == str(ranked._calibrated_on.query)
    assert back.calibration() is not None and back.calibration() == ranked.calibration()
    own = semantic_search(_OwnQuerySet(model=Photo), random_rows[5]).calibrated_on(
        searchable(_OwnQuerySet(model=Photo))
    )
    back = pickle.loads(pickle.dumps(own[:2]))
    assert type(back._calibrated_on) is type(own._calibrated_on) and back._calibrated_on._result_cache is None


def test_the_note_of_an_unreadable_search_names_its_scripts_as_written():
    """Chinese characters' Unicode names start with "CJK": the note said "Cjk" (str.title())."""
    from django_semantic_images.words import unreadable_note

    note = unreadable_note("chat 猫 кошка", ["title", "tags__name"])
    assert note.startswith("The text model cannot read CJK, Cyrillic script, so these words were matched")
    assert "in title, name (results not ranked by meaning)" in note


def test_the_note_of_words_in_latin_letters_the_model_does_not_know_names_no_script():
    """Fullwidth letters or a ligature are Latin but mostly unknown tokens to MiniLM: the note
    said "The text model cannot read these script"."""
    from django_semantic_images.words import unreadable_note

    note = unreadable_note("ＰＨＯＴＯ ĳs", ["title"])
    assert note == (
        "The text model does not know most of these words' letters, so they were matched as keywords "
        "in title (results not ranked by meaning)."
    )
