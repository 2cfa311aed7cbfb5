"""Near-duplicate images: groups of rows whose visual (CNN) vectors are nearly the same.

Never all pairs: for each embedded row of the queryset, its ``neighbours`` nearest rows of
the same queryset come from the HNSW index on the visual vectors (one correlated subquery
per row, ``ORDER BY visual <=> row.visual LIMIT neighbours``, ``BATCH_ROWS`` rows per
query). Pairs within ``threshold`` (cosine distance) are joined nearest first into groups
(union-find), except that a join that would put together a pair an editor marked "not
duplicates" (:class:`~django_semantic_images.models.NotDuplicate`) is skipped: such a pair
is never in one group. See docs/duplicates.md.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.contrib.postgres.expressions import ArraySubquery
from django.db import models
from django.db.models import F, OuterRef
from django.db.models.functions import JSONObject
from pgvector.django import CosineDistance

from .conf import semantic_settings
from .fields import EmbeddingStatus, embedding_path
from .hnsw import hnsw_settings
from .models import NotDuplicate
from .replica import search_alias

#: Nearest rows looked at per row: a picture with more copies than this still forms one
#: group, as long as its copies are each other's neighbours.
DUPLICATE_NEIGHBOURS = 10
#: The most neighbours a probe can ask for: pgvector's largest ``hnsw.ef_search`` (each probe
#: keeps at least as many candidates as the neighbours it returns).
MAX_NEIGHBOURS = 1000
#: Rows whose neighbours one query fetches.
BATCH_ROWS = 500
#: Candidates the HNSW index keeps per probe (``hnsw.ef_search``), instead of ``HNSW_EF_SEARCH``:
#: copies are far nearer than the matches a search ranks, and each probe costs about 4 times
#: less than at 200 (docs/duplicates.md#scale).
DUPLICATE_EF_SEARCH = 40

Pair = tuple[Any, Any, float]


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows that look like copies of one picture.

    ``pks`` ascending; ``distance`` is the largest cosine distance among the pairs that
    joined the group (its loosest link; each row is within it of another member, not
    necessarily of every member).
    """

    pks: tuple[Any, ...]
    distance: float

    def __len__(self) -> int:
        return len(self.pks)


def check_threshold(threshold: Any, name: str = "threshold") -> float:
    """``threshold`` as a float if it is a cosine distance in (0, 1], else a ValueError naming it."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(float(threshold)):
        raise ValueError(f"{name} must be a number in (0, 1] (a cosine distance), not {threshold!r}.")
    value = float(threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (a cosine distance), not {threshold!r}.")
    return value


def default_threshold() -> float:
    """``SEMANTIC_IMAGES["DUPLICATE_THRESHOLD"]``, checked."""
    return check_threshold(semantic_settings.DUPLICATE_THRESHOLD, 'SEMANTIC_IMAGES["DUPLICATE_THRESHOLD"]')


def near_duplicates(
    queryset: models.QuerySet,
    threshold: float | None = None,
    *,
    field: str | None = None,
    neighbours: int = DUPLICATE_NEIGHBOURS,
) -> list[DuplicateGroup]:
    """Groups of near-identical images among ``queryset``'s rows, largest first, then by smallest pk.

    ``threshold`` is the largest cosine distance between the visual vectors of two copies
    (default ``SEMANTIC_IMAGES["DUPLICATE_THRESHOLD"]``); ``field`` names the
    ``ImageEmbeddingField`` as ``semantic_search()`` does. Only the queryset's rows are
    compared and grouped, so a group never names a row the queryset leaves out.
    """
    limit = default_threshold() if threshold is None else check_threshold(threshold)
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or not 1 <= neighbours <= MAX_NEIGHBOURS:
        raise ValueError(f"neighbours must be a whole number from 1 to {MAX_NEIGHBOURS:,}, not {neighbours!r}.")
    pairs = duplicate_pairs(queryset, limit, field=field, neighbours=neighbours)
    return group_pairs(pairs, not_duplicate_keys(queryset.model))


def duplicate_pairs(
    queryset: models.QuerySet, threshold: float, *, field: str | None = None, neighbours: int = DUPLICATE_NEIGHBOURS
) -> Iterator[Pair]:
    """``(pk, pk, distance)`` for each row and each of its ``neighbours`` nearest rows within
    ``threshold`` (a pair may come twice, once from each side). Read where a ranked search of
    ``queryset`` reads: ``SEARCH_DATABASE`` where it applies (``replica.search_alias``)."""
    to_python = queryset.model._meta.pk.to_python
    batches = neighbour_rows(queryset, field=field, neighbours=neighbours)
    alias = search_alias(queryset)  # a search: on SEARCH_DATABASE where it applies (docs/replicas.md)
    if alias is not None:
        batches = batches.using(alias)
    last: Any = None
    while True:
        batch = batches if last is None else batches.filter(pk__gt=last)
        with hnsw_settings(batches.db, ef_search=max(DUPLICATE_EF_SEARCH, neighbours)):
            found = list(batch[:BATCH_ROWS])
        for pk, near in found:
            for item in near or ():
                # A zero vector's distance is NaN, which JSON carries as the string "NaN": float() reads
                # it, and NaN is within no threshold (such a row joins no group).
                distance = float(item["distance"])
                if distance <= threshold and item.get("status", EmbeddingStatus.EMBEDDED) == EmbeddingStatus.EMBEDDED:
                    yield pk, to_python(item["pk"]), distance
        if len(found) < BATCH_ROWS:
            return
        last = found[-1][0]


def neighbour_rows(
    queryset: models.QuerySet, *, field: str | None = None, neighbours: int = DUPLICATE_NEIGHBOURS
) -> models.QuerySet:
    """``(pk, nearest)`` of each embedded row in pk order, ``nearest`` being the ``neighbours``
    nearest other rows of ``queryset`` as ``{"pk": ..., "distance": ..., "status": ...}`` (from the
    HNSW index: ``ORDER BY visual <=> row.visual LIMIT neighbours`` in a subquery per row).

    Only rows whose vectors are those of their picture (status ``embedded``) look for copies, and
    ``duplicate_pairs`` drops a neighbour of another status: a row being embedded again
    (``pending``) still holds the vectors of its previous picture, so a photo replaced by another
    would be grouped, and offered for deletion, as a copy of the old one. (The neighbours' status
    is read, not filtered on: a filter there could take the plan off the HNSW index.)
    """
    path = embedding_path(queryset.model, field)
    visual, status = path.column("visual"), path.column("status")
    rows = plain_rows(queryset).filter(**{f"{visual}__isnull": False})
    nearest = (
        rows.exclude(pk=OuterRef("pk"))
        .annotate(_distance=CosineDistance(F(visual), OuterRef(visual)))
        .order_by("_distance")
        .values(_pair=JSONObject(pk=F("pk"), distance=F("_distance"), status=F(status)))[:neighbours]
    )
    probing = rows.filter(**{status: EmbeddingStatus.EMBEDDED})
    return probing.annotate(_nearest=ArraySubquery(nearest)).order_by("pk").values_list("pk", "_nearest")


def plain_rows(queryset: models.QuerySet) -> models.QuerySet:
    """``queryset`` itself, or, when its rows cannot be filtered and ranked in a subquery, its rows
    by key: ``pk IN (its pks)``.

    That is a queryset that groups rows (an ``annotate(Count(...))`` in a site's or an admin's
    ``get_queryset()``: Django puts the reference to the outer row in the subquery's GROUP BY,
    which fails to compile, and its joins and grouping would run in every probe), one that is
    sliced (the latest uploads: ``order_by("-created_at")[:1000]``), distinct on fields (one row
    per owner), or a combination (``union()``): none can be filtered.
    """
    query = queryset.query
    grouped = query.group_by is not None or any(
        getattr(annotation, "contains_aggregate", False) for annotation in query.annotations.values()
    )
    shaped = query.is_sliced or bool(query.distinct_fields) or bool(query.combinator)
    if not (grouped or shaped):
        return queryset
    # The ordering picks a slice's rows and a DISTINCT ON's row of each group: kept for those.
    keys = (queryset if shaped else queryset.order_by()).values("pk")
    return queryset.model._base_manager.using(queryset.db).filter(pk__in=keys)


def group_pairs(pairs: Iterable[Pair], apart: Collection[tuple[str, str]] = ()) -> list[DuplicateGroup]:
    """Join pairs nearest first into groups (union-find), skipping any join that would put
    two rows of an ``apart`` pair (``NotDuplicate.key``) in one group."""
    edges: dict[tuple[Any, Any], float] = {}
    for a, b, distance in pairs:
        key = (a, b) if a < b else (b, a)
        edges[key] = min(distance, edges.get(key, distance))
    parent: dict[Any, Any] = {}
    members: dict[Any, list[Any]] = {}
    loosest: dict[Any, float] = {}
    partners: dict[str, set[str]] = {}
    for first, second in apart:
        partners.setdefault(first, set()).add(second)
        partners.setdefault(second, set()).add(first)

    def find(pk: Any) -> Any:
        parent.setdefault(pk, pk)
        members.setdefault(pk, [pk])
        while parent[pk] != pk:
            parent[pk] = parent[parent[pk]]
            pk = parent[pk]
        return pk

    def kept_apart(one: list[Any], other: list[Any]) -> bool:
        barred = {p for pk in one for p in partners.get(str(pk), ())}
        return bool(barred) and any(str(pk) in barred for pk in other)

    for (a, b), distance in sorted(edges.items(), key=lambda item: (item[1], item[0])):
        ra, rb = find(a), find(b)
        if ra == rb or (partners and kept_apart(members[ra], members[rb])):
            continue
        if len(members[ra]) < len(members[rb]):
            ra, rb = rb, ra
        parent[rb] = ra
        members[ra].extend(members.pop(rb))
        loosest[ra] = max(distance, loosest.pop(rb, 0.0), loosest.get(ra, 0.0))
    groups = [DuplicateGroup(tuple(sorted(group)), loosest[root]) for root, group in members.items() if len(group) > 1]
    return sorted(groups, key=lambda group: (-len(group.pks), group.pks[0]))


def not_duplicate_keys(model: type[models.Model]) -> set[tuple[str, str]]:
    """The pairs of ``model``'s rows marked not duplicates, as ``NotDuplicate.key`` tuples."""
    content_type = ContentType.objects.get_for_model(model)
    return set(NotDuplicate.objects.filter(content_type=content_type).values_list("first_pk", "second_pk"))


def mark_not_duplicates(model: type[models.Model], pks: Sequence[Any]) -> int:
    """Remember that the rows ``pks`` of ``model`` are all different pictures (every pair of
    them); returns how many pairs were new."""
    content_type = ContentType.objects.get_for_model(model)
    keys = {NotDuplicate.key(a, b) for i, a in enumerate(pks) for b in pks[i + 1 :] if str(a) != str(b)}
    known = not_duplicate_keys(model)
    new = [NotDuplicate(content_type=content_type, first_pk=a, second_pk=b) for a, b in sorted(keys - known)]
    NotDuplicate.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)


def forget_rows(model: type[models.Model], pks: Iterable[Any]) -> int:
    """Drop the "not duplicates" marks of deleted rows; returns how many were dropped."""
    content_type = ContentType.objects.get_for_model(model)
    keys = [str(pk) for pk in pks]
    marks = NotDuplicate.objects.filter(content_type=content_type)
    deleted, _ = marks.filter(models.Q(first_pk__in=keys) | models.Q(second_pk__in=keys)).delete()
    return deleted


def group_rows(
    queryset: models.QuerySet, groups: Iterable[DuplicateGroup]
) -> list[tuple[DuplicateGroup, list[models.Model]]]:
    """Each group with its rows, in the group's order, read in one query from ``queryset``
    (a row it no longer holds, e.g. deleted since, is left out; so is a group left with one).
    A queryset that cannot be filtered (sliced, distinct on fields, a ``union()``) is read by key
    (``plain_rows``): its rows without its own annotations."""
    groups = list(groups)
    wanted = [pk for group in groups for pk in group.pks]
    query = queryset.query
    if query.is_sliced or query.distinct_fields or query.combinator:
        queryset = plain_rows(queryset)
    found = queryset.in_bulk(wanted) if wanted else {}
    rows = [(group, [found[pk] for pk in group.pks if pk in found]) for group in groups]
    return [(group, members) for group, members in rows if len(members) > 1]
