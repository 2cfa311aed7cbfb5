"""The field's HNSW arguments reach the indexes that migrations create, halfvec storage included."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, models
from django.test.utils import isolate_apps
from pgvector import HalfVector, Vector

from django_semantic_images import ImageEmbeddingField
from django_semantic_images.fields import get_embedding_field
from django_semantic_images.management.commands.semantic_images_status import index_sizes
from django_semantic_images.query import semantic_search, similar_to
from photos.models import Photo


def index_definitions(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return dict(cursor.fetchall())


def column_types(table: str) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0",
            [connection.ops.quote_name(table)],
        )
        return dict(cursor.fetchall())


@pytest.mark.django_db
@isolate_apps("photos")
def test_hnsw_arguments_and_halfvec_reach_the_indexes_and_search_works():
    class HalfPhoto(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(
            visual_dimensions=8, semantic_dimensions=4, m=8, ef_construction=40, halfvec=True
        )

        class Meta:
            app_label = "photos"
            db_table = "SemanticHalfPhoto"  # mixed case: every identifier must be quoted

        def __str__(self) -> str:
            return self.image.name

    with connection.schema_editor() as editor:
        editor.create_model(HalfPhoto)
    table = HalfPhoto._meta.db_table
    types = column_types(table)
    assert types["embedding_visual"] == "halfvec(8)" and types["embedding_semantic"] == "halfvec(4)"
    hnsw = {name: d for name, d in index_definitions(table).items() if "USING hnsw" in d}
    assert len(hnsw) == 2
    for definition in hnsw.values():
        assert "halfvec_cosine_ops" in definition
        assert "m='8'" in definition and "ef_construction='40'" in definition

    rng = np.random.default_rng(0)
    semantic = rng.normal(size=(12, 4)).astype(np.float32)
    visual = rng.normal(size=(12, 8)).astype(np.float32)
    HalfPhoto.objects.bulk_create(
        HalfPhoto(
            image=f"p{i}.jpg", embedding_status="embedded", embedding_semantic=semantic[i], embedding_visual=visual[i]
        )
        for i in range(12)
    )
    found = list(semantic_search(HalfPhoto.objects.all(), semantic[3])[:2])
    assert found[0].image.name == "p3.jpg" and found[0].distance == pytest.approx(0.0, abs=1e-3)
    # pgvector-python before 0.5 reads a halfvec column as a HalfVector (0.5: a list), and pgvector's
    # Vector is a vector too: similar_to(row) took it for an image and failed to open it.
    row = HalfPhoto.objects.get(image="p2.jpg")
    stored = row.embedding_visual  # a list with pgvector-python 0.5 and later, a HalfVector before
    row.embedding_visual = stored if isinstance(stored, HalfVector) else HalfVector(stored)
    alike = similar_to(HalfPhoto.objects.all(), row, exclude_self=False)
    assert alike.first().pk == row.pk and alike.calibration() is not None
    by_vector = semantic_search(HalfPhoto.objects.all(), Vector(semantic[4]))
    assert by_vector.first().image.name == "p4.jpg"
    assert by_vector.calibration() == semantic_search(HalfPhoto.objects.all(), semantic[4]).calibration()
    # The status command finds the indexes of a mixed-case table (quoted identifiers).
    sizes = index_sizes(HalfPhoto, get_embedding_field(HalfPhoto))
    assert sizes["visual"] and sizes["semantic"]


def test_hnsw_arguments_default_to_the_settings(settings):
    field = get_embedding_field(Photo)
    assert (field.hnsw_m, field.hnsw_ef_construction, field.opclass) == (16, 64, "vector_cosine_ops")
    hnsw = [i for i in Photo._meta.indexes if i.fields[0] in ("embedding_visual", "embedding_semantic")]
    assert [(i.m, i.ef_construction) for i in hnsw] == [(16, 64), (16, 64)]


@isolate_apps("photos")
def test_hnsw_arguments_out_of_pgvector_limits_are_errors():
    class Bad(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4, m=40, ef_construction=50)
        other = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4, distance="manhattan")

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    errors = [e for f in (Bad.embedding, Bad.other) for e in f.check()]
    assert [e.id for e in errors] == ["semantic_images.E005", "semantic_images.E005"]
    assert "ef_construction=50" in errors[0].msg and "'manhattan'" in errors[1].msg
    l2 = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4, distance="inner_product")
    assert l2.opclass == "vector_ip_ops"


@pytest.mark.django_db
@isolate_apps("photos")
def test_search_through_a_halfvec_hnsw_index_matches_the_exact_ranking():
    """The HNSW index on a ``halfvec`` column serves the search, filtered (iterative scan) or
    not (the query's vector becomes ``halfvec``: pgvector casts vector to halfvec implicitly,
    never the column the other way), and finds what an exact ranking of the rows finds."""

    class HalfIndexed(models.Model):
        image = models.ImageField()
        group = models.IntegerField()
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=16, halfvec=True)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    with connection.schema_editor() as editor:
        editor.create_model(HalfIndexed)
    rng = np.random.default_rng(1)
    semantic = rng.normal(size=(300, 16)).astype(np.float32)
    HalfIndexed.objects.bulk_create(
        HalfIndexed(image=f"p{i}.jpg", group=i % 10, embedding_status="embedded", embedding_semantic=semantic[i])
        for i in range(300)
    )
    index = next(n for n, d in index_definitions(HalfIndexed._meta.db_table).items() if "embedding_semantic" in d)
    query = rng.normal(size=16).astype(np.float32)
    unit = semantic / np.linalg.norm(semantic, axis=1, keepdims=True)
    order = np.argsort(-(unit @ (query / np.linalg.norm(query))))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE " + connection.ops.quote_name(HalfIndexed._meta.db_table))
        cursor.execute("SET LOCAL enable_seqscan = off")  # 300 rows: without this a scan is cheaper
    for queryset, expected in (
        (HalfIndexed.objects.all(), list(order[:10])),
        (HalfIndexed.objects.filter(group=3), [i for i in order if i % 10 == 3][:10]),  # 10% of the rows
    ):
        ranked = semantic_search(queryset, query)[:10]
        assert index in ranked.explain()
        found = [int(p.image.name[1:-4]) for p in ranked]
        # halfvec rounds each number to 11 bits: the order may swap near-ties only.
        assert len(set(found) & set(expected)) >= 9, (found, expected)
        assert found[0] == expected[0]


@pytest.mark.django_db
@isolate_apps("photos")
def test_a_field_on_an_abstract_base_gives_each_concrete_model_its_indexes_and_calibration():
    """Declared on an abstract base, the field is each concrete subclass's own: its HNSW indexes
    (in the migration's options and the table) and a calibration drawn from its table. The
    subclasses got no index (the field saw only the abstract class), and ``calibration()``
    queried the abstract class (``AttributeError``)."""

    class Base(models.Model):
        image = models.ImageField()
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4, m=8, ef_construction=40)

        class Meta:
            abstract = True
            app_label = "photos"

    class First(Base):
        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image.name

    class Second(Base):
        class Meta(Base.Meta):
            pass

        def __str__(self) -> str:
            return self.image.name

    from django.db.migrations.state import ModelState

    rng = np.random.default_rng(2)
    for model in (First, Second):
        field = get_embedding_field(model)
        assert field.model is model and model.embedding is field
        hnsw = ModelState.from_model(model).options["indexes"]
        assert [(i.fields, i.m, i.ef_construction) for i in hnsw] == [
            (["embedding_visual"], 8, 40),
            (["embedding_semantic"], 8, 40),
        ]
        with connection.schema_editor() as editor:
            editor.create_model(model)
        assert sum("USING hnsw" in d for d in index_definitions(model._meta.db_table).values()) == 2
        semantic = rng.normal(size=(12, 4)).astype(np.float32)
        model.objects.bulk_create(
            model(image=f"p{i}.jpg", embedding_status="embedded", embedding_semantic=semantic[i]) for i in range(12)
        )
        ranked = semantic_search(model.objects.all(), semantic[5])
        assert ranked.first().image.name == "p5.jpg"
        assert ranked.calibration() is not None
    assert First.embedding is not Second.embedding


@pytest.mark.django_db
def test_a_proxy_is_no_second_table_of_vectors_and_its_saves_are_watched():
    """The commands, the sweep and the checks go through each table of vectors once: a proxy (or a
    subclass that inherits its parent's field) was listed again, so ``semantic_images_reindex
    --force`` embedded every row twice and the status counted them twice. Its saves still ask for work."""
    from django_semantic_images.fields import models_using_embeddings, models_with_embeddings
    from tests.multifield.models import CaptionedPhoto, PhotoProxy, TwoImagePhoto

    assert models_with_embeddings() == [Photo, TwoImagePhoto, CaptionedPhoto]
    assert PhotoProxy in models_using_embeddings()
    saved = PhotoProxy.objects.create(image="photos/proxy.jpg")
    assert Photo.objects.get(pk=saved.pk).embedding_lease_until is not None  # marked sent by pre_save


@pytest.mark.django_db
def test_a_subclass_with_a_field_of_its_own_is_gone_through_for_that_field_only(settings):
    """A multi-table subclass that declares a field and inherits its parent's was gone through for
    both: the parent's field twice (for the subclass's rows once more), in ``semantic_images_reindex``,
    ``semantic_images_status`` and the checks. Each table is now gone through for its own fields once;
    a model named on the command line still has all its fields."""
    import json
    from io import StringIO

    from django.core.management import call_command

    from django_semantic_images.checks import check_database, check_encoders
    from django_semantic_images.management.commands.semantic_images_reindex import Command

    def labels(pairs):
        return [(m._meta.label, f.name) for m, f in pairs]

    expected = [
        ("photos.Photo", "embedding"),
        ("multifield.TwoImagePhoto", "embedding"),
        ("multifield.TwoImagePhoto", "thumbnail_embedding"),
        ("multifield.CaptionedPhoto", "caption_embedding"),
    ]
    assert labels(Command().targets(None, None)) == expected
    out = StringIO()
    call_command("semantic_images_status", "--json", stdout=out)
    assert [(f["model"], f["field"]) for f in json.loads(out.getvalue())["fields"]] == expected
    assert labels(Command().targets("multifield.CaptionedPhoto", None)) == [
        ("multifield.CaptionedPhoto", "embedding"),
        ("multifield.CaptionedPhoto", "caption_embedding"),
    ]
    assert not [m for m in check_database(databases=["default"]) if "CaptionedPhoto" in m.msg]
    settings.SEMANTIC_IMAGES = {"ENCODER_OPTIONS": {"top_k": 0}}  # E013 for every field
    named = [m.msg for m in check_encoders() if m.id == "semantic_images.E013"]
    assert [n for n in named if "CaptionedPhoto" in n] and not [n for n in named if "CaptionedPhoto.embedding" in n]


@isolate_apps("photos")
def test_an_image_field_that_holds_no_file_is_a_check_error():
    """``image_field`` naming a text column (a URL, a path as text) passed the checks, and every
    embedding then failed as a passing storage error (``'str' object has no attribute 'open'``),
    retried without end: the row stayed pending. It is the check ``semantic_images.E003``."""

    class Album(models.Model):
        cover = models.ImageField()
        title = models.CharField(max_length=100)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.title

    class Picture(models.Model):
        image = models.CharField(max_length=100)
        album = models.ForeignKey(Album, on_delete=models.CASCADE)
        embedding = ImageEmbeddingField(visual_dimensions=8, semantic_dimensions=4)
        by_title = ImageEmbeddingField(image_field="album__title", visual_dimensions=8, semantic_dimensions=4)
        by_cover = ImageEmbeddingField(image_field="album__cover", visual_dimensions=8, semantic_dimensions=4)

        class Meta:
            app_label = "photos"

        def __str__(self) -> str:
            return self.image

    errors = [e for f in (Picture.embedding, Picture.by_title, Picture.by_cover) for e in f.check()]
    assert [e.id for e in errors] == ["semantic_images.E003", "semantic_images.E003"]
    assert "'image', which is not a FileField or ImageField" in errors[0].msg
    assert "'album__title', which is not a FileField or ImageField" in errors[1].msg
