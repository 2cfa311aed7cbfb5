"""Searches on a read replica: a real streaming standby of the test server (``pg_basebackup -R``).

The standby is a second alias, ``replica``, mirrored in tests like a site would declare it
(``TEST: {"MIRROR": "default"}``: no test database of its own, the same name as the primary's).
Rows are written and embedded on the primary and committed (transactional tests); the
standby replays them once the WAL has streamed in, and ``pg_wal_replay_pause()`` makes it lag
on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.db import close_old_connections, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_semantic_images import EmbeddingStatus
from django_semantic_images.duplicates import near_duplicates
from django_semantic_images.sweep import sweep
from photos.models import Photo

from .aliases import mirror_alias
from .conftest import upload
from .pg_cluster import Cluster, wait_until
from .sent_sql import CaptureSentQueries

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

REPLICA = "replica"


class ReadsFromTheReplica:
    """A site's primary/replica router (Django's documented pattern): every read on the replica."""

    def db_for_read(self, model, **hints):
        return REPLICA

    def db_for_write(self, model, **hints):
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True

    def allow_migrate(self, db, app_label, **hints):
        return db == "default"


@pytest.fixture(scope="module")
def standby(django_db_setup, django_db_blocker) -> Iterator[Cluster]:
    """A hot standby of the test server, streaming from it, as the alias ``replica``."""
    with django_db_blocker.unblock():
        cluster = Cluster(connections["default"].settings_dict, port=5433, standby=True)
        try:
            cluster.start()
            replica = cluster.settings_dict()
            replica["TEST"]["MIRROR"] = "default"
            connections.settings[REPLICA] = replica
            yield cluster
        finally:
            if REPLICA in connections.settings:
                connections[REPLICA].close()
                del connections[REPLICA]
                del connections.settings[REPLICA]
            cluster.remove()


def one(alias: str, sql: str, params: list | None = None):
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()[0]


def caught_up() -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    lsn = one("default", "SELECT pg_current_wal_lsn()")
    wait_until(lambda: one(REPLICA, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]), 30, "the standby")


@pytest.fixture
def paused(standby) -> Iterator[None]:
    """The standby receives WAL but replays none of it: a replica lagging behind."""
    caught_up()
    one(REPLICA, "SELECT pg_wal_replay_pause()")
    wait_until(lambda: one(REPLICA, "SELECT pg_get_wal_replay_pause_state()") == "paused", 30, "replay to pause")
    try:
        yield
    finally:
        one(REPLICA, "SELECT pg_wal_replay_resume()")


def test_the_replica_is_a_streaming_standby_of_the_test_server(standby):
    assert one(REPLICA, "SELECT pg_is_in_recovery()") is True
    assert one("default", "SELECT pg_is_in_recovery()") is False
    assert one(REPLICA, "SELECT current_database()") == one("default", "SELECT current_database()")
    assert one(REPLICA, "SHOW data_directory") == str(standby.pgdata)


def test_searches_read_from_the_search_database_once_it_has_caught_up(standby, sample_paths, settings):
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")  # embedded in-process, on the primary
    coffee = upload(sample_paths["coffee"], title="a cup of coffee")
    assert set(Photo.objects.values_list("embedding_status", flat=True)) == {EmbeddingStatus.EMBEDDED}
    cat_row = Photo.objects.get(pk=cat.pk)  # with its vectors
    caught_up()

    ranked = Photo.objects.semantic_search("a cat")
    assert ranked.db == REPLICA
    with CaptureQueriesContext(connections["default"]) as primary, CaptureSentQueries(connections[REPLICA]) as rep:
        results = list(ranked[:5])
        similar = list(Photo.objects.similar_to(cat_row)[:5])
    assert [p.pk for p in results] == [cat.pk, coffee.pk]
    assert [p.pk for p in similar] == [coffee.pk]
    assert {p._state.db for p in results + similar} == {"default"}  # carried as the primary's rows
    assert primary.captured_queries == []  # nothing of the search touched the primary
    sqls = [q["sql"] for q in rep.captured_queries]
    assert sum("set_config('hnsw.ef_search'" in sql for sql in sqls) == 2, sqls  # on the alias searched
    assert sum("<=>" in sql for sql in sqls) == 2, sqls
    # The duplicates search too (it read the primary); the "not duplicates" marks come from the primary.
    with CaptureQueriesContext(connections["default"]) as primary, CaptureSentQueries(connections[REPLICA]) as rep:
        groups = Photo.objects.near_duplicates(1.0)
    assert groups == near_duplicates(Photo.objects.using("default"), 1.0)
    assert [q["sql"] for q in primary.captured_queries if "<=>" in q["sql"]] == []
    assert any("<=>" in q["sql"] for q in rep.captured_queries)

    # Writes through a ranked queryset still go to the primary (a standby refuses them).
    assert Photo.objects.semantic_search("a cat").filter(pk=coffee.pk).update(published=False) == 1
    assert Photo.objects.get(pk=coffee.pk).published is False
    # An explicit using() wins over the setting.
    assert Photo.objects.semantic_search("a cat").using("default").db == "default"


def test_a_lagging_replica_answers_without_the_newest_rows_and_no_error(standby, paused, sample_paths, settings):
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")
    assert Photo.objects.get(pk=cat.pk).embedding_status == EmbeddingStatus.EMBEDDED  # on the primary

    assert list(Photo.objects.semantic_search("a cat")[:5]) == []  # not replayed yet: no error, no row
    assert Photo.objects.semantic_search("a cat").count() == 0

    one(REPLICA, "SELECT pg_wal_replay_resume()")
    caught_up()
    assert [p.pk for p in Photo.objects.semantic_search("a cat")[:5]] == [cat.pk]


def test_behind_a_router_that_reads_from_a_lagging_replica_embedding_uses_the_primary(
    standby, paused, sample_paths, settings
):
    settings.DATABASE_ROUTERS = [f"{__name__}.ReadsFromTheReplica"]
    primary = Photo.objects.using("default")
    cat = upload(sample_paths["chelsea"], title="a cat")  # embedded in-process after the commit
    assert primary.get(pk=cat.pk).embedding_status == EmbeddingStatus.EMBEDDED

    # A row whose embedding failed for a passing reason, on the primary only: the sweep finds it.
    coffee = upload(b"not yet", "coffee.jpg")
    assert primary.get(pk=coffee.pk).embedding_status == EmbeddingStatus.FAILED
    primary.filter(pk=coffee.pk).update(image=upload_name(sample_paths["coffee"]))
    primary.filter(pk=coffee.pk).update(embedding_error="Temporary failure, will be retried: storage timed out")
    assert sweep().total == 1
    assert primary.get(pk=coffee.pk).embedding_status == EmbeddingStatus.EMBEDDED

    # Searches follow the router: the replica has not replayed these rows yet.
    ranked = Photo.objects.semantic_search("a cat")
    assert ranked.db == REPLICA
    assert list(ranked[:5]) == []


def upload_name(path) -> str:
    """Store ``path`` in the media folder; its name there."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    return default_storage.save(f"photos/{path.name}", ContentFile(path.read_bytes()))


OTHER = "other"


class PhotosReadElsewhere:
    """A site's router that keeps the photos' reads on an alias of their own (``other``)."""

    def db_for_read(self, model, **hints):
        return OTHER if model is Photo else None


@pytest.fixture(scope="module")
def other_alias(django_db_setup, django_db_blocker) -> Iterator[str]:
    """A second alias of the primary's test database (``TEST: {"MIRROR": "default"}``)."""
    with mirror_alias(OTHER, django_db_blocker) as alias:
        yield alias


@pytest.mark.django_db(transaction=True, databases=["default", "replica", "other"])
def test_search_database_leaves_a_model_that_the_routers_read_elsewhere_where_they_read_it(
    standby, other_alias, sample_paths, settings
):
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    settings.DATABASE_ROUTERS = [f"{__name__}.PhotosReadElsewhere"]
    cat = upload(sample_paths["chelsea"], title="a cat")
    ranked = Photo.objects.semantic_search("a cat")
    assert ranked.db == OTHER  # the router's alias: the replica copies the default alias, not this one
    with CaptureQueriesContext(connections[REPLICA]) as rep, CaptureQueriesContext(connections[OTHER]) as other:
        assert [p.pk for p in ranked[:5]] == [cat.pk]
    assert rep.captured_queries == []
    assert sum("<=>" in q["sql"] for q in other.captured_queries) == 1


def test_a_search_result_saved_or_deleted_with_only_search_database_set_is_written_on_the_primary(
    standby, sample_paths, settings
):
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")
    coffee = upload(sample_paths["coffee"], title="a cup of coffee")
    caught_up()
    with CaptureQueriesContext(connections["default"]) as primary:
        found = list(Photo.objects.semantic_search("a cat")[:5])
    assert [p.pk for p in found] == [cat.pk, coffee.pk]
    assert primary.captured_queries == []  # read on the replica ...
    assert {p._state.db for p in found} == {"default"}  # ... and carried as the primary's rows
    found[0].title = "renamed"
    found[0].save()  # the standby would answer "cannot execute UPDATE in a read-only transaction"
    assert Photo.objects.using("default").get(pk=cat.pk).title == "renamed"
    found[1].delete()
    assert not Photo.objects.using("default").filter(pk=coffee.pk).exists()
    with CaptureQueriesContext(connections["default"]) as primary:
        found[0].refresh_from_db()
    assert len(primary.captured_queries) == 1
    # What select_related() and prefetch_related() read with them too, also through iterator().
    Photo.objects.filter(pk=cat.pk).update(owner=User.objects.create(username="editor"))
    caught_up()
    with CaptureQueriesContext(connections["default"]) as primary:
        joined = Photo.objects.semantic_search("a cat").select_related("owner")[:1].get()
        [prefetched] = Photo.objects.semantic_search("a cat").prefetch_related("owner").iterator(chunk_size=10)
    assert primary.captured_queries == []
    assert {joined._state.db, joined.owner._state.db, prefetched._state.db, prefetched.owner._state.db} == {"default"}


def test_rows_of_a_search_read_one_by_one_or_singly_are_written_on_the_primary(standby, sample_paths, settings):
    """``iterator()``, ``get()``, ``first()``, ``in_bulk()`` and Django's ``aiterator()`` give the
    search's rows as ``list()`` does: read on the replica, carried as the primary's."""
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")
    coffee = upload(sample_paths["coffee"], title="a cup of coffee")
    caught_up()
    ranked = Photo.objects.semantic_search("a cat")
    with CaptureQueriesContext(connections["default"]) as primary:
        read = {
            "iterator": list(ranked.iterator()),
            "get": [ranked.get(pk=coffee.pk)],
            "first": [ranked.first()],
            "in_bulk": list(ranked.in_bulk([cat.pk, coffee.pk]).values()),
        }
    assert primary.captured_queries == []  # all read on the replica
    assert {how: [p.pk for p in rows] for how, rows in read.items()} == {
        "iterator": [cat.pk, coffee.pk],
        "get": [coffee.pk],
        "first": [cat.pk],
        "in_bulk": [cat.pk, coffee.pk],
    }
    for how, rows in read.items():
        assert {p._state.db for p in rows} == {"default"}, how
        for p in rows:
            p.save(update_fields=["title"])  # the standby would refuse the UPDATE

    async def read_asynchronously() -> list[Photo]:
        found = [p async for p in ranked.filter(title__startswith="a").aiterator(chunk_size=1)]
        for p in found:
            p.title = f"{p.title}, seen"
            await p.asave(update_fields=["title"])
        return found

    with CaptureSentQueries(connections[REPLICA]) as rep:
        found = async_to_sync(read_asynchronously)()
    assert [p.pk for p in found] == [cat.pk, coffee.pk]
    assert {p._state.db for p in found} == {"default"}
    titles = Photo.objects.using("default").order_by("pk").values_list("title", flat=True)
    assert list(titles) == ["a cat, seen", "a cup of coffee, seen"]
    # Under the search's HNSW settings, as iterator() (a filtered ranking fills its page).
    assert sum("set_config('hnsw.ef_search'" in q["sql"] for q in rep.captured_queries) == 1
    assert sum("<=>" in q["sql"] for q in rep.captured_queries) == 1

    async def first_only() -> Photo | None:
        async for p in ranked.aiterator(chunk_size=1):
            return p  # stopped early: its transaction on the replica ends all the same
        return None

    assert async_to_sync(first_only)().pk == cat.pk
    assert not connections[REPLICA].in_atomic_block


def test_the_admins_search_box_and_similar_images_rank_on_the_search_database(
    standby, sample_paths, settings, admin_client
):
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")
    coffee = upload(sample_paths["coffee"], title="a cup of coffee")
    caught_up()
    url = reverse("admin:photos_photo_changelist")
    for query, expected in (({"q": "a cat"}, [cat.pk, coffee.pk]), ({"similar_to": cat.pk}, [coffee.pk])):
        with (
            CaptureQueriesContext(connections["default"]) as primary,
            CaptureQueriesContext(connections[REPLICA]) as rep,
        ):
            response = admin_client.get(url, query)
        assert response.status_code == 200
        assert [row.pk for row in response.context["cl"].result_list] == expected
        assert [q["sql"] for q in primary.captured_queries if "<=>" in q["sql"]] == [], query
        assert any("<=>" in q["sql"] for q in rep.captured_queries), query
        assert {row._state.db for row in response.context["cl"].result_list} == {"default"}

    # An action on the rows of a search writes on the primary (the standby would refuse the delete).
    response = admin_client.post(
        f"{url}?q=a+cat", {"action": "delete_selected", "_selected_action": [coffee.pk], "post": "yes", "index": 0}
    )
    assert response.status_code == 302
    assert list(Photo.objects.using("default").values_list("pk", flat=True)) == [cat.pk]


def test_words_the_text_model_cannot_read_are_matched_as_keywords_on_the_search_database(
    standby, sample_paths, settings, client, admin_client
):
    """The API's search and the admin's search box fall back to keywords for a script the text
    model cannot read (Cyrillic for MiniLM): that search reads the replica too."""
    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat", alt_text="Рыжая кошка")
    upload(sample_paths["coffee"], title="a cup of coffee")
    caught_up()
    searches = {
        "api": lambda: [row["id"] for row in client.get("/api/photos/search/", {"q": "кошка"}).json()["results"]],
        "admin": lambda: [
            row.pk
            for row in admin_client.get(reverse("admin:photos_photo_changelist"), {"q": "кошка"})
            .context["cl"]
            .result_list
        ],
    }
    for where, search in searches.items():
        with (
            CaptureQueriesContext(connections["default"]) as primary,
            CaptureQueriesContext(connections[REPLICA]) as rep,
        ):
            assert search() == [cat.pk], where
        assert [q["sql"] for q in primary.captured_queries if "LIKE" in q["sql"]] == [], where
        assert any("LIKE" in q["sql"] for q in rep.captured_queries), where


def test_a_replica_that_cannot_be_reached_leaves_the_searches_to_the_primary(
    standby, sample_paths, settings, client, caplog
):
    """A standby that is down failed every search (a 500 from the API); now it is logged once and
    the searches read the primary, until it is tried again after ``replica.RETRY_AFTER``."""
    from django_semantic_images import replica

    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")
    caught_up()
    standby.stop()
    connections[REPLICA].close()  # as Django does at the end of each request
    try:
        with caplog.at_level("WARNING", logger="django_semantic_images.replica"):
            ranked = Photo.objects.semantic_search("a cat")
            assert [p.pk for p in ranked[:5]] == [cat.pk]
            response = client.get("/api/photos/search/", {"q": "a cat"})
            assert response.status_code == 200, response.content
            assert [row["id"] for row in response.json()["results"]] == [cat.pk]
        assert caplog.text.count(f"The search database '{REPLICA}' cannot be reached") == 1, caplog.text
        assert ranked.db == "default"
    finally:
        standby.start()
        replica.forget()
    caught_up()
    assert Photo.objects.semantic_search("a cat").db == REPLICA  # tried again, and up


def test_the_status_command_reports_the_server_the_rows_are_read_from(standby, settings):
    """``semantic_images_status`` read ``shared_buffers`` from ``default`` whatever database the
    model is on: behind a router reading from the standby (``shared_buffers`` 32 MB) it said the
    primary's."""
    import json

    from tests.conftest import run_command

    settings.DATABASE_ROUTERS = [f"{__name__}.ReadsFromTheReplica"]
    on_standby = one(REPLICA, "SELECT pg_size_bytes(current_setting('shared_buffers'))")
    assert on_standby != one("default", "SELECT pg_size_bytes(current_setting('shared_buffers'))")
    data = json.loads(run_command("semantic_images_status", "--json"))
    assert data["shared_buffers_bytes"] == on_standby
    assert {(f["database"], f["shared_buffers_bytes"]) for f in data["fields"]} == {(REPLICA, on_standby)}
    assert f"shared_buffers {on_standby / 2**20:.0f} MB (database '{REPLICA}')" in run_command("semantic_images_status")


def test_a_replica_that_went_down_under_a_persistent_connection_leaves_the_searches_to_the_primary(
    standby, sample_paths, settings, client
):
    """With ``CONN_MAX_AGE`` the connection to the standby outlives the request that opened it: a
    standby that stopped meanwhile left it open on this side, and the next search used it (a 500)."""
    from django_semantic_images import replica

    settings.SEMANTIC_IMAGES = {"SEARCH_DATABASE": REPLICA}
    cat = upload(sample_paths["chelsea"], title="a cat")
    caught_up()
    conn = connections[REPLICA]
    conn.close()
    conn.settings_dict["CONN_MAX_AGE"] = 600
    try:
        assert client.get("/api/photos/search/", {"q": "a cat"}).status_code == 200
        assert conn.connection is not None  # kept at the end of the request, as a site's would be
        standby.stop()
        close_old_connections()  # as at the start of each request (the test client leaves it out): kept
        assert conn.connection is not None
        response = client.get("/api/photos/search/", {"q": "a cat"})
        assert response.status_code == 200, response.content
        assert [row["id"] for row in response.json()["results"]] == [cat.pk]
        assert conn.connection is None  # the dead one is closed, not kept for the next request
    finally:
        conn.settings_dict["CONN_MAX_AGE"] = 0
        conn.close()
        standby.start()
        replica.forget()
    caught_up()
    assert Photo.objects.semantic_search("a cat").db == REPLICA
