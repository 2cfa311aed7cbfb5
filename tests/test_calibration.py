"""The relevance cutoff: a per-query score threshold calibrated on a sample of the collection.

Real PostgreSQL + pgvector and the real models on the sample photos; the expected
figures are recomputed here from the stored vectors with numpy.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from django.core.cache import cache
from django.test.utils import isolate_apps
from rest_framework.test import APIClient

from django_semantic_images.encoders import get_encoder
from photos.models import Photo

pytestmark = pytest.mark.django_db

SEARCH = "/api/photos/search/"


@pytest.fixture
def client() -> APIClient:
    cache.clear()  # throttle history
    return APIClient()


def stored(column: str) -> np.ndarray:
    rows = np.stack([np.asarray(v, dtype=np.float64) for v in Photo.objects.values_list(column, flat=True)])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def expected_threshold(vectors: np.ndarray, query: np.ndarray, relevance: float) -> float:
    """The sample score a row must beat to score higher than ``relevance`` of the collection
    (``k`` of ``S`` sample rows beaten estimates a share ``k / (S + 1)``)."""
    scores = np.sort(vectors @ (query / np.linalg.norm(query)))
    return float(scores[math.ceil(relevance * (len(scores) + 1)) - 1])


def test_the_threshold_comes_from_the_sample_and_cuts_between_rows(sample_photos):
    """Each query's threshold is a percentile of the sample's scores for it; a row above it is
    kept, one below dropped, and the same relevance means another raw score for another query."""
    vectors = stored("embedding_semantic")
    thresholds = {}
    for words in ("a cup of coffee", "a rocket launch"):
        ranked = Photo.objects.semantic_search(words)
        calibration = ranked.calibration()
        assert calibration is not None and calibration.size == len(sample_photos)
        query = np.asarray(get_encoder().encode_text(words), dtype=np.float64)
        thresholds[words] = calibration.threshold(0.75)
        assert thresholds[words] == pytest.approx(expected_threshold(vectors, query, 0.75), abs=1e-5)

        scores = [row.score for row in ranked]
        between = (scores[1] + scores[2]) / 2  # the cut falls between the 2nd and 3rd best
        kept = ranked.above(calibration.relevance(between))
        assert list(kept.values_list("pk", flat=True)) == [row.pk for row in ranked][:2]
        assert list(ranked.best(1).above(calibration.relevance(between))) == [ranked[0]]  # composes with best()
        assert calibration.relevance(scores[1]) >= calibration.relevance(between) > calibration.relevance(scores[2])
    assert abs(thresholds["a cup of coffee"] - thresholds["a rocket launch"]) > 1e-3


def test_similar_images_are_calibrated_on_the_visual_vectors(sample_photos, settings):
    settings.SEMANTIC_IMAGES = {"CALIBRATION_SAMPLE": 10}
    anchor = sample_photos["chelsea"]
    calibration = Photo.objects.similar_to(anchor).calibration()
    assert calibration is not None and calibration.size == 10
    pks = list(Photo.objects.values_list("pk", flat=True))
    chosen = sorted(pks, key=lambda pk: hashlib.md5(str(pk).encode()).hexdigest())[:10]  # the same in every process
    sample = stored("embedding_visual")[[pks.index(pk) for pk in chosen]]
    query = np.asarray(anchor.embedding_visual, dtype=np.float64)
    assert calibration.threshold(0.75) == pytest.approx(expected_threshold(sample, query, 0.75), abs=1e-5)
    assert calibration.threshold(0) == -math.inf and calibration.threshold(1) == math.inf


def test_too_few_vectors_cut_nothing(make_photo, sample_paths):
    from django_semantic_images.pipeline import embed_instances

    photo = make_photo(sample_paths["coffee"])
    embed_instances([photo])
    ranked = Photo.objects.semantic_search("coffee")
    assert ranked.calibration() is None
    assert list(ranked.above(0.999)) == [photo]
    with pytest.raises(ValueError, match="from 0 to 1"):
        ranked.above(1.5)
    with pytest.raises(TypeError, match="semantic_search"):
        Photo.objects.all().above(0.5)


def test_min_relevance_keeps_what_the_calibration_says_and_pages(client, sample_photos):
    everything = client.get(SEARCH, {"q": "a cup of coffee", "limit": 100}).json()["results"]
    relevances = [row["relevance"] for row in everything]
    assert relevances == sorted(relevances, reverse=True) and 0 <= relevances[-1] < relevances[0] <= 1
    floor = (relevances[2] + relevances[3]) / 2
    kept = client.get(SEARCH, {"q": "a cup of coffee", "min_relevance": floor}).json()
    assert [row["id"] for row in kept["results"]] == [row["id"] for row in everything[:3]]
    assert kept["next"] is None
    first = client.get(SEARCH, {"q": "a cup of coffee", "min_relevance": floor, "limit": 2}).json()
    assert [row["id"] for row in first["results"]] == [row["id"] for row in everything[:2]]
    second = client.get(first["next"]).json()
    assert [row["id"] for row in second["results"]] == [everything[2]["id"]] and second["next"] is None
    by_title = client.get(SEARCH, {"q": "a cup of coffee", "min_relevance": floor, "ordering": "-title"}).json()
    assert {row["id"] for row in by_title["results"]} == {row["id"] for row in everything[:3]}
    similar = client.get(f"/api/photos/{sample_photos['chelsea'].pk}/similar/", {"limit": 100}).json()["results"]
    floor = similar[1]["relevance"]  # the relevance of the second most alike keeps the two best
    assert similar[0]["relevance"] >= floor > similar[2]["relevance"]
    alike = client.get(f"/api/photos/{sample_photos['chelsea'].pk}/similar/", {"min_relevance": floor}).json()
    assert [row["id"] for row in alike["results"]] == [row["id"] for row in similar[:2]]
    listed = client.get("/api/photos/").json()["results"]
    assert listed and all(row["relevance"] is None for row in listed)


@pytest.mark.parametrize("raw", ["abc", "2", "-1", "nan", "0.5&min_relevance=0.6"])
def test_a_bad_min_relevance_is_a_400_naming_it(client, sample_photos, raw):
    response = client.get(f"{SEARCH}?q=cat&min_relevance={raw}")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["min_relevance"], response.json()
    on_list = client.get(f"/api/photos/?min_relevance={raw}")
    assert on_list.status_code == 400 and "min_relevance" in json.dumps(on_list.json())


def test_the_schema_offers_min_relevance_on_the_ranked_actions_only(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    def param(path: str) -> list:
        return [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "min_relevance"]

    (search,) = param("/api/photos/search/")
    assert search["schema"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert len(param("/api/photos/{id}/similar/")) == 1
    assert param("/api/photos/") == []
    result = schema["components"]["schemas"]["PhotoResult"]["properties"]
    assert result["relevance"]["nullable"] is True


def test_a_reference_computes_a_repeated_querys_calibration_once(monkeypatch):
    from django_semantic_images import calibration

    rng = np.random.default_rng(3)
    reference = calibration.Reference(calibration.unit_rows(list(rng.normal(size=(50, 8)))), 0.0)
    query, other = rng.normal(size=8), rng.normal(size=8)
    first = reference.calibrate(query)
    expected = np.sort(reference.vectors.astype(np.float64) @ (query / np.linalg.norm(query)))
    np.testing.assert_allclose(first.scores, expected, atol=1e-6)
    assert reference.calibrate(query.copy()) is first  # the same words again: nothing computed
    assert reference.calibrate(other) is not first
    monkeypatch.setattr(calibration, "KEEP_CALIBRATIONS", 2)
    reference.calibrate(rng.normal(size=8))  # a third query: the kept ones are let go
    assert reference.calibrate(query) is not first and len(reference._calibrations) <= 2


def test_a_nan_score_has_no_relevance():
    """NaN sorts above every sample score: it was given the highest relevance, ``size / (size + 1)``,
    so a score nothing can compare (a zero vector's cosine) passed every floor. It has none now, like
    an unknown score."""
    from django_semantic_images import calibration

    rng = np.random.default_rng(4)
    reference = calibration.Reference(calibration.unit_rows(list(rng.normal(size=(50, 8)))), 0.0)
    found = reference.calibrate(rng.normal(size=8))
    assert found is not None and found.relevance(float(found.scores[-1]) + 1) == 50 / 51
    for nan in (float("nan"), np.float32("nan"), np.float64("nan")):
        assert found.relevance(nan) is None, repr(nan)


def embedded_row(rng: np.random.Generator, visual: np.ndarray | None = None, **fields) -> Photo:
    """A photo with random unit vectors (``visual`` given), saved without embedding it."""
    from django.core.files.base import ContentFile
    from PIL import Image

    from django_semantic_images.encoders.base import l2_normalize
    from django_semantic_images.signals import embedding_deferred
    from tests.conftest import image_bytes

    if visual is None:
        visual = rng.normal(size=1280)
    photo = Photo(embedding_status="embedded", **fields)
    photo.embedding_visual = l2_normalize(visual.reshape(1, -1).astype(np.float32))[0]
    photo.embedding_semantic = l2_normalize(rng.normal(size=(1, 384)).astype(np.float32))[0]
    photo.image.save("row.jpg", ContentFile(image_bytes(Image.new("RGB", (8, 8)))), save=False)
    with embedding_deferred():
        photo.save()
    return photo


def test_a_hidden_photo_changes_no_relevance_the_caller_sees(client):
    """A hidden row answers exactly like a missing one: the relevances (and whether there are
    any) of what an anonymous caller sees do not depend on rows outside its queryset."""
    from django_semantic_images.calibration import reset

    rng = np.random.default_rng(5)
    visible = [embedded_row(rng) for _ in range(12)]
    anchor = visible[0]
    near = np.asarray(anchor.embedding_visual) + 0.01 * rng.normal(size=1280)
    hidden = embedded_row(rng, near, published=False)
    url = f"/api/photos/{anchor.pk}/similar/"
    with_hidden = client.get(url, {"limit": 100})
    assert with_hidden.status_code == 200 and hidden.pk not in [r["id"] for r in with_hidden.json()["results"]]
    assert all(r["relevance"] is not None for r in with_hidden.json()["results"])
    hidden.delete()
    reset()  # the next search draws its sample again, as after CALIBRATION_TTL
    without = client.get(url, {"limit": 100})
    assert with_hidden.json() == without.json()


def test_a_search_calibrated_on_rows_draws_its_sample_from_them_alone():
    """``calibrated_on(rows)``: one sample per distinct set of rows, drawn from those rows; no
    rows at all calibrate nothing; a queryset of another model is refused."""
    from django.contrib.auth.models import User

    from django_semantic_images.calibration import reset

    rng = np.random.default_rng(11)
    for published in [True] * 12 + [False] * 3:
        embedded_row(rng, published=published)
    reset()
    ranked = Photo.objects.semantic_search(rng.normal(size=384))
    assert ranked.calibration().size == 15
    assert ranked.calibrated_on(Photo.objects.filter(published=True)).calibration().size == 12
    assert ranked.calibrated_on(Photo.objects.filter(published=False)).calibration() is None  # 3 rows
    assert ranked.calibrated_on(Photo.objects.none()).calibration() is None
    with pytest.raises(TypeError, match="calibrated_on"):
        ranked.calibrated_on(User.objects.all())


def test_a_search_calibrated_on_a_slice_draws_its_sample_from_the_rows_of_the_slice():
    """``calibrated_on(Photo.objects.order_by("-pk")[:12])`` (the newest rows) raised "Cannot
    reorder a query once a slice has been taken"; its sample is the slice's rows."""
    rng = np.random.default_rng(12)
    rows = [embedded_row(rng) for _ in range(15)]
    ranked = Photo.objects.semantic_search(rng.normal(size=384))
    newest = ranked.calibrated_on(Photo.objects.order_by("-pk")[:12])
    assert newest.calibration().size == 12
    same = Photo.objects.filter(pk__in=[r.pk for r in rows[3:]])
    np.testing.assert_allclose(newest.calibration().scores, ranked.calibrated_on(same).calibration().scores)
    assert ranked.calibrated_on(Photo.objects.order_by("pk")[:3]).calibration() is None


def test_a_floor_that_ends_on_a_page_boundary_gives_no_next_page(client, sample_photos):
    """Exactly ``limit`` results pass the floor: the page is the last one (its ``next`` is null),
    not a link to an empty page; the row read ahead to tell whether there is more is below it."""
    everything = client.get(SEARCH, {"q": "a cup of coffee", "limit": 100}).json()["results"]
    floor = (everything[2]["relevance"] + everything[3]["relevance"]) / 2  # three results pass
    page = client.get(SEARCH, {"q": "a cup of coffee", "min_relevance": floor, "limit": 3}).json()
    assert [row["id"] for row in page["results"]] == [row["id"] for row in everything[:3]]
    assert page["next"] is None, client.get(page["next"]).json()
    score = (everything[2]["score"] + everything[3]["score"]) / 2  # the same with a raw floor
    page = client.get(SEARCH, {"q": "a cup of coffee", "min_score": score, "limit": 3}).json()
    assert len(page["results"]) == 3 and page["next"] is None


def test_above_takes_any_real_number_from_0_to_1_and_names_itself_otherwise(sample_photos):
    """A numpy float (what numpy arithmetic on relevances gives) or a Decimal is a relevance like a
    float; anything else, NaN and values outside 0..1 are a ValueError naming above()."""
    from decimal import Decimal
    from fractions import Fraction

    ranked = Photo.objects.semantic_search("a cup of coffee")
    kept = list(ranked.above(0.5).values_list("pk", flat=True))
    assert 0 < len(kept) < len(sample_photos)
    for same in (np.float32(0.5), np.float16(0.5), Decimal("0.5"), Fraction(1, 2)):
        assert list(ranked.above(same).values_list("pk", flat=True)) == kept, repr(same)
    for bad in ("0.5", float("nan"), np.float32("nan"), -0.1, 1.01, True, None, Decimal("NaN")):
        with pytest.raises(ValueError, match=r"^above\(\) takes a relevance from 0 to 1"):
            ranked.above(bad)


@isolate_apps("photos")
def test_a_halfvec_column_is_calibrated_with_the_query_it_ranks_by():
    """PostgreSQL casts a search's vector to ``halfvec`` for a ``halfvec`` column, and the reference
    sample was scored with the float32 query: the two differ by about 1e-5, past ``TIE``, so a sample
    row could beat its own sample score (a relevance one step too high; at most ``S / (S + 1)``, which no
    row can reach) or a row be cut by ``above()`` at its own threshold."""
    from django.db import connection, models

    from django_semantic_images import ImageEmbeddingField
    from django_semantic_images.query import semantic_search

    class HalfCalibrated(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=384, halfvec=True)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    with connection.schema_editor() as editor:
        editor.create_model(HalfCalibrated)
    rng = np.random.default_rng(5)
    semantic = rng.normal(size=(40, 384)).astype(np.float32)
    HalfCalibrated.objects.bulk_create(
        HalfCalibrated(image=f"p{i}.jpg", embedding_status="embedded", embedding_semantic=semantic[i])
        for i in range(40)
    )
    for _ in range(3):
        query = rng.normal(size=384).astype(np.float32)
        ranked = semantic_search(HalfCalibrated.objects.all(), query)
        calibration = ranked.calibration()
        assert calibration is not None and calibration.size == 40
        # Every row is in the sample: the k-th lowest beats exactly the k - 1 below it.
        relevances = sorted(calibration.relevance(row.score) for row in ranked)
        assert relevances == [k / 41 for k in range(40)]
        for row in list(ranked)[:5]:
            kept = ranked.above(calibration.relevance(row.score)).values_list("pk", flat=True)
            assert row.pk in kept
    # Beyond halfvec's range the cast overflowed (a DataError from PostgreSQL) or made a zero vector
    # (every distance NaN); within it, the scale changes nothing.
    for scale in (1e5, 1e-9):
        with pytest.raises(ValueError, match="beyond halfvec's range"):
            list(semantic_search(HalfCalibrated.objects.all(), query * scale))
    scaled = {r.pk: r.score for r in semantic_search(HalfCalibrated.objects.all(), query * 1e3)}
    assert scaled == pytest.approx({r.pk: r.score for r in ranked}, abs=1e-3)  # halfvec's rounding


def test_a_nan_score_on_a_page_with_min_relevance_is_dropped_not_a_500(client):
    """A row whose stored vector is all zeros scores NaN (its cosine is undefined): its score made the
    JSON renderer fail, and ``min_relevance`` compared its relevance, None, with a number: a 500 either
    way. Its score and relevance are null now, it comes last, and it reaches no floor."""
    from django_semantic_images.calibration import reset

    rng = np.random.default_rng(6)
    rows = [embedded_row(rng) for _ in range(12)]
    anchor = rows[0]
    zero = embedded_row(rng)
    Photo.objects.filter(pk=zero.pk).update(embedding_visual=np.zeros(1280, np.float32))
    reset()
    url = f"/api/photos/{anchor.pk}/similar/"
    everything = client.get(url, {"limit": 100})
    assert everything.status_code == 200
    # An exact scan ranks it (NaN), last; pgvector leaves a zero vector out of a cosine HNSW index,
    # so a walk of the index, which the planner may choose, leaves it out.
    nan_rows = [r for r in everything.json()["results"] if r["id"] == zero.pk]
    if nan_rows:
        assert nan_rows[0]["relevance"] is None and nan_rows[0]["score"] is None
        assert everything.json()["results"][-1]["id"] == zero.pk  # after every row with a score
    assert len(everything.json()["results"]) in (11, 12)
    assert all(r["score"] is not None for r in everything.json()["results"] if r["id"] != zero.pk)
    response = client.get(url, {"limit": 100, "min_relevance": "0"})
    assert response.status_code == 200, response.content[:300]
    ids = [r["id"] for r in response.json()["results"]]
    assert zero.pk not in ids and len(ids) == 11 and response.json()["next"] is None  # the anchor is not its own


def test_a_nan_score_passes_no_floor_when_the_best_matches_are_sorted_by_a_column(client):
    """With ``ordering`` the floors filter in SQL, where PostgreSQL puts NaN above every number: a
    row scoring NaN (a zero vector) passed ``min_score=-1`` and any ``min_relevance``."""
    from django_semantic_images.calibration import reset

    rng = np.random.default_rng(7)
    rows = [embedded_row(rng, title=f"row {i}") for i in range(12)]
    Photo.objects.filter(pk=rows[0].pk).update(embedding_semantic=np.zeros(384, np.float32))
    reset()
    for floor in ({"min_score": "-1"}, {"min_relevance": "0"}):
        response = client.get(SEARCH, {"q": "a cup of coffee", "ordering": "-title", "limit": 100, **floor})
        assert response.status_code == 200, response.content[:300]
        ids = [r["id"] for r in response.json()["results"]]
        assert rows[0].pk not in ids and len(ids) == 11, floor


def test_the_relevance_of_a_ranked_row_without_a_score_is_none():
    """``calibration.relevance(row.score)`` (docs/field.md) of a zero vector's row: None, not an error."""
    from django.db import connection

    rng = np.random.default_rng(10)
    rows = [embedded_row(rng) for _ in range(12)]
    Photo.objects.filter(pk=rows[0].pk).update(embedding_semantic=np.zeros(384, np.float32))
    with connection.cursor() as cursor:  # an exact scan: pgvector leaves a zero vector out of a cosine HNSW index
        cursor.execute("SET enable_indexscan = off")  # undone with the test's transaction
    ranked = Photo.objects.semantic_search(rng.normal(size=384).astype(np.float32))
    calibration = ranked.calibration()
    relevance = {row.pk: calibration.relevance(row.score) for row in ranked}
    assert relevance.pop(rows[0].pk) is None and len(relevance) == 11 and None not in relevance.values()


def test_a_row_without_a_score_comes_after_every_scored_row_when_sorted_by_score(client, monkeypatch):
    """``ordering=-score`` (a viewset whose ``ordering_fields`` take ``score``): PostgreSQL sorts a
    zero vector's score (NaN, now NULL) above every number, so that row came first in SQL: on the
    first page, ahead of the scored rows of the next pages. It comes after all of them now."""
    from django.db import connection

    from django_semantic_images.calibration import reset
    from photos.api import PhotoSearchViewSet

    monkeypatch.setattr(PhotoSearchViewSet, "ordering_fields", ("title", "score"))
    rng = np.random.default_rng(9)
    rows = [embedded_row(rng, title=f"row {i}") for i in range(6)]
    Photo.objects.filter(pk=rows[0].pk).update(embedding_semantic=np.zeros(384, np.float32))
    reset()
    with connection.cursor() as cursor:  # an exact scan: pgvector leaves a zero vector out of a cosine HNSW index
        cursor.execute("SET enable_indexscan = off")  # undone with the test's transaction
    ids, scores, url, params = [], [], SEARCH, {"q": "a cup of coffee", "ordering": "-score", "limit": 2}
    while url:
        page = client.get(url, params).json()
        ids += [r["id"] for r in page["results"]]
        scores += [r["score"] for r in page["results"]]
        url, params = page["next"], {}
    assert sorted(ids) == sorted(row.pk for row in rows) and ids[-1] == rows[0].pk, scores
    assert scores[-1] is None and None not in scores[:-1] and scores[:-1] == sorted(scores[:-1], reverse=True)


def test_similar_to_an_image_whose_visual_vector_is_all_zeros_is_a_409_saying_so(client):
    """Its own zero vector (written by SQL: the pipeline refuses one) was the query: a ValueError, a 500."""
    rng = np.random.default_rng(8)
    rows = [embedded_row(rng) for _ in range(3)]
    Photo.objects.filter(pk=rows[0].pk).update(embedding_visual=np.zeros(1280, np.float32))
    response = client.get(f"/api/photos/{rows[0].pk}/similar/")
    assert response.status_code == 409 and "all zeros" in response.json()["detail"]
    assert client.get(f"/api/photos/{rows[1].pk}/similar/").status_code == 200
