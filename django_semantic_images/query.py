"""``SemanticImageQuerySet``: ranked search that stays a queryset.

``semantic_search()`` and ``similar_to()`` annotate ``distance`` and ``score``
and order by distance, then primary key (a total order: rows at one distance keep their
place from page to page), so they compose with ``.filter()``, permissions and
pagination. Evaluation sets pgvector's ``hnsw.ef_search`` and iterative index scan
for the query only (``SET LOCAL``; inside a caller's transaction they get their previous
values back after it), so a filtered search still fills its page: ``list()`` sends the
settings and the query in one message (one round trip).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any, Self

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, connections, models, router
from django.utils.functional import Promise

from .calibration import Calibration, reference_for
from .duplicates import DUPLICATE_NEIGHBOURS, DuplicateGroup, near_duplicates
from .expressions import Score, SemanticDistance, VisualDistance, query_array
from .fields import EmbeddingPath, EmbeddingStatus, ImageEmbeddingField, embedding_path
from .hnsw import apply_hnsw_settings as apply_hnsw_settings  # re-exported
from .hnsw import hnsw_settings
from .hnsw_message import settings_in_force
from .replica import search_alias
from .words import keyword_columns, keyword_matches, search_words, unreadable_note

#: The order of a ranked queryset: by distance, then by primary key, so that rows at one distance
#: (identical vectors) come in one order in every query and each row is on one page only. The
#: HNSW index still serves it: PostgreSQL reads the rows by distance from the index and sorts
#: each run of equal distances by pk (an Incremental Sort over the index scan, ``limit + 1``
#: rows; docs/performance.md#ties-the-primary-key-as-a-second-key).
RANKING = ("distance", "pk")


def ranked_rows(queryset: models.QuerySet) -> list[Any]:
    """``list(queryset)`` (model instances; for ``values_list()`` its tuples, flat values or named
    rows; for ``values()`` its dicts), read with the HNSW settings in force, in one round trip.

    With the settings in a transaction of their own, a ranked query takes four round trips
    (BEGIN, the settings, the query, COMMIT): on a busy server each one waits to be scheduled.
    Evaluating a ranked queryset (``semantic_search()``, ``similar_to()``) already sends the
    settings and the query as one message of two statements, which PostgreSQL runs as one
    transaction; this does the same for any other queryset that walks an HNSW index (one ranked
    with ``SemanticDistance`` / ``VisualDistance`` in ``annotate()``, a union). Inside a caller's
    transaction the settings get their previous values back in the same message. A connection
    that binds parameters on the server (``OPTIONS["server_side_binding"]``) cannot send two
    statements at once: there the settings go in a statement of their own (see ``hnsw_settings``).
    """
    if isinstance(queryset, SemanticQuerySetMixin) and queryset._vector_ranked:
        return list(queryset.all())  # its evaluation sends the settings (_fetch_all)
    with settings_in_force(queryset.db, index_field(queryset)):
        return list(queryset.all())


def same_rows(one: type[models.Model], other: type[models.Model]) -> bool:
    """Whether a row of ``one`` and a row of ``other`` with one primary key are one row: the same
    concrete model (a proxy of it included), or one inheriting from the other's table."""
    first, second = one._meta.concrete_model or one, other._meta.concrete_model or other
    return issubclass(first, second) or issubclass(second, first)


def carry_default_alias(rows: Iterable[Any], searched_on: str) -> None:
    """Mark the instances that a search read on ``searched_on`` (``SEARCH_DATABASE``) as read from
    the default alias, the database the replica copies: ``save()``, ``delete()``,
    ``refresh_from_db()`` and the relations read from them later then go where they would from an
    ordinary queryset's instances, never to a standby that refuses writes. Followed into what
    ``select_related()`` and ``prefetch_related()`` read with them (also a ``to_attr`` list)."""
    stack = list(rows)
    while stack:
        obj = stack.pop()
        if not isinstance(obj, models.Model) or obj._state.db != searched_on:
            continue
        obj._state.db = DEFAULT_DB_ALIAS
        stack.extend(obj._state.fields_cache.values())
        for prefetched in getattr(obj, "_prefetched_objects_cache", {}).values():
            stack.extend(getattr(prefetched, "_result_cache", None) or ())
        stack.extend(
            item
            for value in vars(obj).values()
            if isinstance(value, list) and value and isinstance(value[0], models.Model)
            for item in value
        )


def index_field(queryset: models.QuerySet) -> ImageEmbeddingField | None:
    """The field whose HNSW index a ranked queryset walks (its model's table may be another
    than the queryset's: Wagtail's images keep their vectors in a table beside)."""
    ranked_by = getattr(queryset, "_ranked_by", None)
    return None if ranked_by is None else ranked_by[0].field


if TYPE_CHECKING:
    _QuerySetBase = models.QuerySet[Any]
else:
    _QuerySetBase = object


class SemanticQuerySetMixin(_QuerySetBase):
    """``semantic_search()`` (text -> images) and ``similar_to()`` (image -> images) for a QuerySet.

    Mixed into :class:`SemanticImageQuerySet`; :func:`searchable` mixes it into any other
    queryset class (a model whose manager is its own, e.g. Wagtail's images).
    """

    _vector_ranked = False
    # What ranked the rows, for calibration(): (path, "semantic" or "visual", query vector).
    _ranked_by: tuple[EmbeddingPath, str, Any] | None = None
    # The rows calibration() draws its sample from (None: the whole table).
    _calibrated_on: models.QuerySet[Any] | None = None
    # Reads where a ranked search reads though ranked by something else (read_as_search()).
    _read_as_search = False

    def _clone(self) -> Any:
        clone = super()._clone()  # type: ignore[misc]
        clone._vector_ranked = self._vector_ranked
        clone._read_as_search = self._read_as_search
        clone._ranked_by = self._ranked_by
        clone._calibrated_on = self._calibrated_on
        return clone

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # QuerySet's: it evaluates the queryset
        if self._calibrated_on is not None:
            state["_calibrated_on"] = UnevaluatedRows.of(self._calibrated_on)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        rows = state.get("_calibrated_on")
        if isinstance(rows, UnevaluatedRows):
            state = {**state, "_calibrated_on": rows.queryset()}
        super().__setstate__(state)  # type: ignore[misc]

    @property
    def db(self) -> str:
        """The alias this query runs on: a ranked search reads from ``SEARCH_DATABASE`` when set
        (see ``_search_database``), any other query where Django's routers say."""
        return self._search_database() or super().db

    def _search_database(self) -> str | None:
        """``SEARCH_DATABASE`` when this query reads from it, else None.

        Only reads of a ranked queryset (or one of ``read_as_search()``): an ``update()``,
        ``delete()`` or ``select_for_update()`` goes where Django's routers send writes, and an
        explicit ``using()`` wins. Only for a model whose reads the routers leave on the default
        alias (the one the replica copies): a model they read from another alias is searched there.
        A replica that cannot be reached is left out for a while (``replica.reachable``).
        """
        if not (self._vector_ranked or self._read_as_search):
            return None
        return search_alias(self)

    def _ranked(self, distance: Any, path: EmbeddingPath, kind: str, vector: Any) -> Self:
        qs = self.filter(**{f"{path.column(kind)}__isnull": False}).annotate(distance=distance, score=Score("distance"))
        qs = qs.order_by(*RANKING)
        qs._vector_ranked = True
        as_array = query_array(vector)  # a float32 array for calibration() (a pgvector Vector too)
        qs._ranked_by = (path, kind, vector if as_array is None else as_array)
        return qs

    def semantic_search(self, query: Any, *, field: str | None = None) -> Self:
        """Rows ranked by meaning: ``query`` is words (or a vector in the text space).

        ``field`` names the ImageEmbeddingField, also across a one-to-one relation
        (``"semantic_vectors__embedding"``); a model without one of its own is ranked by the
        one on the single model joined to it one-to-one (Wagtail's images).
        """
        path = embedding_path(self.model, field)
        if isinstance(query, Promise):  # gettext_lazy(...): its text now
            query = str(query)
        if isinstance(query, str):
            query = search_words(query)  # as the search boxes and the APIs read words
            if not query:
                raise ValueError("The search text is empty.")
            query = path.field.get_encoder().encode_text(query)
        return self._ranked(SemanticDistance(path.name, query), path, "semantic", query)

    def similar_to(self, query: Any, *, field: str | None = None, exclude_self: bool = True) -> Self:
        """Rows ranked by visual likeness to ``query``: a model instance, an uploaded file,
        a path, a PIL image or a visual vector."""
        path = embedding_path(self.model, field)
        qs = self
        if isinstance(query, models.Model):
            if exclude_self and query.pk is not None and same_rows(type(query), self.model):
                qs = qs.exclude(pk=query.pk)
            vector = path.value(query, "visual")
            if vector is None:
                status = path.value(query, "status") or EmbeddingStatus.PENDING
                raise ValueError(f"{query} has no visual vector yet (status: {status}).")
            query = vector
        else:
            query = VisualDistance.image_vector(query, path.field.get_encoder())
        return qs._ranked(VisualDistance(path.name, query), path, "visual", query)

    def best(self, n: int) -> Self:
        """The ``n`` best-ranked rows, still ranked, as a queryset that ``order_by()`` sorts within.

        After ``semantic_search()`` or ``similar_to()``, ``.order_by("-created_at")`` alone would
        sort every matching row by date; ``.best(100).order_by("-created_at")`` sorts the 100 best
        matches by date. One query: the 100 come from the HNSW index in a subquery
        (``pk IN (... ORDER BY distance, pk LIMIT 100)``), and each row keeps ``distance`` and
        ``score``. The 100 are always the nearest: an ``order_by()`` or ``reverse()`` before
        ``best()`` sorts them, as one after it does, and picks nothing.
        """
        if not self._vector_ranked:
            raise TypeError("best() ranks nothing by itself: call semantic_search() or similar_to() first.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"best() takes a positive number of rows, not {n!r}.")
        nearest = self.order_by(*RANKING)
        nearest.query.standard_ordering = True  # a reverse() before best() sorts the n, not picks them
        return self.filter(pk__in=nearest.values("pk")[:n])

    def calibration(self) -> Calibration | None:
        """How this search's scores compare with the collection's (docs/relevance.md#the-relevance-cutoff).

        ``calibration().relevance(row.score)`` is a row's relevance, ``calibration().threshold(0.999)``
        the raw score that relevance needs. None when the collection has too few vectors to tell.
        """
        if self._ranked_by is None:
            raise TypeError("calibration() needs a ranking: call semantic_search() or similar_to() first.")
        path, kind, vector = self._ranked_by
        return reference_for(path, kind, self.db, self._calibrated_on).calibrate(vector)

    def calibrated_on(self, rows: models.QuerySet[Any]) -> Self:
        """This queryset, its relevance measured against ``rows`` instead of the whole table.

        Give it the rows the caller may see (the API's views give their ``get_queryset()``):
        the reference sample is then drawn from them alone, so a row the caller may not see
        moves no relevance, threshold or ``above()`` cut the caller gets. One sample is drawn
        per distinct SQL of ``rows`` every ``CALIBRATION_TTL`` seconds.
        """
        if rows.model is not self.model:
            raise TypeError(f"calibrated_on() takes rows of {self.model.__name__}, not of {rows.model.__name__}.")
        clone = self._chain()  # type: ignore[attr-defined]
        clone._calibrated_on = rows
        return clone

    def above(self, relevance: float) -> Self:
        """The rows whose relevance for this search is at least ``relevance`` (0 to 1).

        ``semantic_search("red bicycle").above(0.99)`` keeps what scores higher than 99% of the
        collection does for these words (estimated on ``CALIBRATION_SAMPLE`` stored vectors): a raw
        score threshold made for this query, ``distance < 1 - threshold`` in SQL. A filter on
        distance makes an HNSW index scan walk on past the last row that passes: on a large
        table bound it with ``best(n)`` first, ``semantic_search(q).best(200).above(0.99)``.
        With too few vectors to calibrate (fewer than 10), nothing is cut.
        """
        value = relevance_value(relevance)
        if value is None:
            raise ValueError(f"above() takes a relevance from 0 to 1, not {relevance!r}.")
        calibration = self.calibration()
        threshold = -math.inf if calibration is None else calibration.threshold(value)
        if threshold == -math.inf:
            return self._chain()  # type: ignore[attr-defined]
        if threshold == math.inf:
            return self.none()
        return self.filter(distance__lt=1.0 - threshold)

    def near_duplicates(
        self, threshold: float | None = None, *, field: str | None = None, neighbours: int = DUPLICATE_NEIGHBOURS
    ) -> list[DuplicateGroup]:
        """Groups of near-identical images among these rows, largest first (see
        :func:`django_semantic_images.duplicates.near_duplicates`)."""
        return near_duplicates(self, threshold, field=field, neighbours=neighbours)

    def embedded(self, *, field: str | None = None) -> Self:
        path = embedding_path(self.model, field)
        return self.filter(**{path.column("status"): EmbeddingStatus.EMBEDDED})

    def failed(self, *, field: str | None = None) -> Self:
        path = embedding_path(self.model, field)
        return self.filter(**{path.column("status"): EmbeddingStatus.FAILED})

    @contextmanager
    def _hnsw_in_force(self, using: str | None = None, *, one_message: bool = True) -> Iterator[None]:
        """The HNSW settings for the next query on ``using`` (by default this queryset's alias):
        sent in its message (``SettingsFirst``) when the connection binds on the client and
        ``one_message``, else SET LOCAL in a transaction around it."""
        with settings_in_force(self.db if using is None else using, index_field(self), one_message=one_message):
            yield

    def _fetch_all(self) -> None:
        searched_on = self._search_database() if self._result_cache is None else None
        if self._result_cache is not None or not self._vector_ranked:
            super()._fetch_all()
        else:
            with self._hnsw_in_force():
                super()._fetch_all()
        if searched_on is not None:
            carry_default_alias(self._result_cache or (), searched_on)

    # What else runs the ranked query (``best(n)``'s ``ORDER BY distance LIMIT n`` subquery through
    # the HNSW index) runs it under the same settings: without them a filtered ranking's subquery
    # finds ~ef_search times the filter's share of rows, fewer than the n that a list shows.
    def count(self) -> int:
        if self._result_cache is not None or not self._vector_ranked:
            return super().count()
        with self._hnsw_in_force():
            return super().count()

    def exists(self) -> bool:
        if self._result_cache is not None or not self._vector_ranked:
            return super().exists()
        with self._hnsw_in_force():
            return super().exists()

    def aggregate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if not self._vector_ranked:
            return super().aggregate(*args, **kwargs)
        with self._hnsw_in_force():
            return super().aggregate(*args, **kwargs)

    def _write_alias(self) -> str:
        """The alias an ``update()`` or ``delete()`` of this queryset writes to."""
        state: Any = self
        return str(state._db or router.db_for_write(self.model, **state._hints))

    def update(self, **kwargs: Any) -> int:
        if not self._vector_ranked:
            return super().update(**kwargs)
        # A transaction around it: the row count is the UPDATE's, not that of a statement before it.
        with self._hnsw_in_force(self._write_alias(), one_message=False):
            return super().update(**kwargs)

    update.alters_data = True  # type: ignore[attr-defined]  # as QuerySet.update

    def delete(self) -> tuple[int, dict[str, int]]:
        if not self._vector_ranked:
            return super().delete()
        with self._hnsw_in_force(self._write_alias(), one_message=False):
            return super().delete()

    delete.alters_data = True  # type: ignore[attr-defined]  # as QuerySet.delete: never on a manager
    delete.queryset_only = True  # type: ignore[attr-defined]

    def _iterator(self, use_chunked_fetch: bool, chunk_size: int | None) -> Generator[Any, None, None]:
        """``.iterator()``: the rows come from a server-side cursor, read inside the same
        transaction as the HNSW settings, so they are the rows ``list()`` gives."""
        searched_on = self._search_database()
        if not self._vector_ranked:
            for row in super()._iterator(use_chunked_fetch, chunk_size):  # type: ignore[misc]
                if searched_on is not None:
                    carry_default_alias((row,), searched_on)
                yield row
            return
        with hnsw_settings(self.db, field=index_field(self)):
            try:
                for row in super()._iterator(use_chunked_fetch, chunk_size):  # type: ignore[misc]
                    if searched_on is not None:
                        carry_default_alias((row,), searched_on)
                    yield row
            except GeneratorExit:  # the caller stopped early: end the transaction normally
                return

    async def aiterator(self, chunk_size: int = 2000) -> AsyncIterator[Any]:
        """``.aiterator()``: the rows ``.iterator()`` gives (HNSW settings in force, a search's
        instances carrying the default alias), ``chunk_size`` at a time from a thread, as Django's.

        Django's own reads the query's rows itself, past ``_iterator()``.
        """
        if chunk_size <= 0:
            raise ValueError("Chunk size must be strictly positive.")
        use_chunked_fetch = not connections[self.db].settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
        rows = self._iterator(use_chunked_fetch, chunk_size)
        try:
            while True:
                chunk = await sync_to_async(next_chunk)(rows, chunk_size)
                for row in chunk:
                    yield row
                if len(chunk) < chunk_size:
                    return
        finally:  # in the thread that opened its cursor and transaction
            await sync_to_async(rows.close)()

    def explain(self, *, format: str | None = None, **options: Any) -> str:
        if self._vector_ranked:
            with hnsw_settings(self.db, field=index_field(self)):
                return super().explain(format=format, **options)
        return super().explain(format=format, **options)


@dataclass
class UnevaluatedRows:
    """A queryset as a ranked queryset's pickle keeps it (``calibrated_on()``'s rows): its class
    and state without its rows. Pickled as a queryset, it was evaluated: every row the caller may
    see, vectors included, read and written into the pickle of a page."""

    cls: type
    searchable: bool
    state: dict[str, Any]

    @classmethod
    def of(cls, rows: models.QuerySet[Any]) -> UnevaluatedRows:
        base = getattr(type(rows), "_searchable_base", None)  # a class made by searchable_class()
        state = {**vars(rows), "_result_cache": None, "_prefetch_done": False}
        return cls(base or type(rows), base is not None, state)

    def queryset(self) -> models.QuerySet[Any]:
        klass: Any = searchable_class(self.cls) if self.searchable else self.cls
        rows = klass.__new__(klass)
        rows.__dict__.update(self.state)
        return rows


def relevance_value(relevance: Any) -> float | None:
    """``relevance`` as a float when it is a real number from 0 to 1 (a numpy float, a ``Decimal``
    too; not a bool, a string or NaN), else None."""
    if isinstance(relevance, bool) or not isinstance(relevance, (numbers.Real, Decimal)):
        return None
    try:
        value = float(relevance)
    except (TypeError, ValueError, ArithmeticError):
        return None
    return value if 0.0 <= value <= 1.0 else None


def next_chunk(rows: Iterator[Any], size: int) -> list[Any]:
    """The next ``size`` items of ``rows`` (fewer at its end)."""
    return list(islice(rows, size))


class SemanticImageQuerySet(SemanticQuerySetMixin, models.QuerySet):
    """QuerySet with ``semantic_search()`` (text -> images) and ``similar_to()`` (image -> images)."""


class SemanticImageManager(models.Manager.from_queryset(SemanticImageQuerySet)):  # type: ignore[misc]
    """Manager for models with an ``ImageEmbeddingField``: ``Photo.objects.semantic_search(...)``.

    Optional: a model keeps whatever manager it declares, and :func:`searchable` gives any of
    its querysets the same methods (what the admin, the API and the commands use).
    """


_searchable_classes: dict[type, type] = {}


def searchable(queryset: models.QuerySet) -> SemanticQuerySetMixin:
    """``queryset`` (same rows, filters, ordering and database) with the search methods.

    A queryset that already has them is returned as it is; any other gets a clone whose
    class also derives from :class:`SemanticQuerySetMixin`, so its own methods stay.
    """
    if isinstance(queryset, SemanticQuerySetMixin):
        return queryset
    cls = type(queryset)
    clone = queryset._chain()  # type: ignore[attr-defined]
    clone.__class__ = searchable_class(cls)
    return clone


def searchable_class(cls: type) -> type:
    """The queryset class that :func:`searchable` gives a queryset of class ``cls`` (one per class).

    It is made at run time, so pickle cannot find it by name: its querysets pickle as
    ``cls`` plus their state, and unpickle (in any process) as this class again.
    """
    searchable_cls = _searchable_classes.get(cls)
    if searchable_cls is None:
        searchable_cls = _searchable_classes.setdefault(
            cls,
            type(
                f"Searchable{cls.__name__}",
                (SemanticQuerySetMixin, cls),
                {"__module__": cls.__module__, "__reduce_ex__": _reduce_searchable, "_searchable_base": cls},
            ),
        )
    return searchable_cls


def _reduce_searchable(self: Any, protocol: Any) -> tuple[Any, ...]:
    return (_new_searchable, (type(self)._searchable_base,), self.__getstate__())


def _new_searchable(base: type) -> Any:
    """An empty queryset of ``searchable_class(base)``, for pickle to give its state."""
    cls: Any = searchable_class(base)
    return cls.__new__(cls)


def read_as_search(queryset: models.QuerySet) -> SemanticQuerySetMixin:
    """``queryset`` reading where a ranked search reads (``SEARCH_DATABASE`` where it applies, its
    instances carrying the default alias), its writes where the routers send them: for rows that
    a ranking of one's own chose (the admin's ``pk IN (nearest rows)``)."""
    clone = searchable(queryset)._chain()  # type: ignore[attr-defined]
    clone._read_as_search = True
    return clone


def semantic_search(queryset: models.QuerySet, query: Any, *, field: str | None = None) -> SemanticQuerySetMixin:
    """``queryset``'s rows ranked by meaning (see ``SemanticQuerySetMixin.semantic_search``)."""
    return searchable(queryset).semantic_search(query, field=field)


def similar_to(queryset: models.QuerySet, query: Any, **kwargs: Any) -> SemanticQuerySetMixin:
    """``queryset``'s rows ranked by visual likeness (see ``SemanticQuerySetMixin.similar_to``)."""
    return searchable(queryset).similar_to(query, **kwargs)


def text_search(
    queryset: models.QuerySet,
    words: str,
    *,
    field: str | None = None,
    keyword_fields: Sequence[str] | None = None,
) -> tuple[Any, str | None]:
    """``(rows, note)``: ``semantic_search(words)`` and no note when the field's encoder reads
    the words (``Encoder.reads``: their script, unknown tokens); otherwise the rows whose
    ``keyword_fields`` (default: the field's ``text_fields``, its properties left out) hold every term of the words,
    unranked, and a note saying so, for the caller to show (the API's ``note``, an admin message).
    Either reads where a ranked search reads (``SEARCH_DATABASE``; ``read_as_search``).
    """
    path = embedding_path(queryset.model, field)
    words = search_words(words)
    if path.field.get_encoder().reads(words):
        return searchable(queryset).semantic_search(words, field=field), None
    if keyword_fields is not None:
        fields = list(keyword_fields)
    else:  # a property among the text fields is no column: left out
        fields = keyword_columns(queryset.model, [path.prefix + f for f in path.field.text_fields])
    return read_as_search(keyword_matches(queryset, words, fields)), unreadable_note(words, fields)
