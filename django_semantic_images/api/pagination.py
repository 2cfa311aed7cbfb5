"""Paging for ranked vector results: ``limit`` (capped), ``offset`` (capped) and a relevance floor.

The same paging serves the plain list of a viewset (no ranking, so no ``min_score``, and no cap
on ``offset``: its deep pages are an ordinary ``OFFSET`` in the site's order).

A ranked page is ``ORDER BY distance, pk LIMIT limit + 1 OFFSET offset``, which the HNSW
index serves; the extra row tells whether a next page exists, so no page ever counts
the whole table (a count would score every row). For one query and an unchanged
table the index walk is deterministic, and rows at one distance come by pk (an exact
scan too), so consecutive pages neither repeat nor skip rows. Deep pages cost more (the
index walks ``offset + limit`` rows), hence ``max_offset``. A list already made in full (the
groups of ``duplicates/``) costs nothing more deep down: its pages go on to its end, past
``max_offset``.

``min_score`` drops rows scoring below it and ends the paging at the first page that
drops one. Scores are not comparable across queries: a floor that suits one query
cuts another too early, so treat it as a per-query tuning knob, not a relevance test.
``min_relevance`` is the floor that means the same for every query: a relevance from 0
to 1 turned into this query's own score threshold by ``QuerySet.calibration()``
(docs/relevance.md#the-relevance-cutoff); with both, the higher floor applies. Every
ranked row gets its ``relevance``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from ..expressions import BY_SCORE
from .querystring import strict_integer, strict_number

LIMIT_MESSAGE = "limit must be a whole number of at least 1."
OFFSET_MESSAGE = "offset must be a whole number of at least 0."
MIN_SCORE_MESSAGE = "min_score must be a number from -1 to 1."
MIN_RELEVANCE_MESSAGE = "min_relevance must be a number from 0 to 1, such as 0.99."
#: The actions whose pages are not ranked by a score, so take no ``min_score``.
UNRANKED_ACTIONS = ("list", "duplicates")
#: The actions whose deep pages cost no index walk, so take any ``offset``: the plain list (the
#: site's own order, an ordinary ``OFFSET``) and a list made in full (every group of duplicates is
#: found before the first page is cut).
UNCAPPED_ACTIONS = ("list", "duplicates")
#: Their ``offset`` still ends at PostgreSQL's: an ``OFFSET`` is a bigint.
MAX_SQL_OFFSET = 2**63 - 1


def _parse(request: Any, name: str, parse: Callable[[str, str, str], Any], message: str) -> Any:
    raw = request.query_params.get(name)
    return None if raw is None else parse(name, raw, message)


class RankedPagination(BasePagination):
    """Limit/offset paging without a count, for querysets ordered by distance."""

    default_limit = 20
    max_limit = 100
    max_offset = 1000
    limit_query_param = "limit"
    offset_query_param = "offset"
    min_score_query_param = "min_score"
    min_relevance_query_param = "min_relevance"

    def get_params(
        self, request: Any, ranked: bool = True, capped: bool = True, in_sql: bool = True
    ) -> tuple[int, int, float | None]:
        """``(limit, offset, min_score)`` from the query string; a bad value is a 400.

        ``min_score`` is read for a ranked queryset only (None otherwise); ``min_relevance``
        is checked too and kept in ``self.min_relevance``. ``capped``: an offset past
        ``max_offset`` is a 400 (not for a list already in memory); ``in_sql``: the offset goes into
        SQL, so past PostgreSQL's bigint it is a 400.
        """
        limit = _parse(request, self.limit_query_param, strict_integer, LIMIT_MESSAGE)
        offset = _parse(request, self.offset_query_param, strict_integer, OFFSET_MESSAGE)
        min_score = self.min_relevance = None
        if ranked:
            min_score = _parse(request, self.min_score_query_param, strict_number, MIN_SCORE_MESSAGE)
            self.min_relevance = _parse(request, self.min_relevance_query_param, strict_number, MIN_RELEVANCE_MESSAGE)
            if self.min_relevance is not None and not 0.0 <= self.min_relevance <= 1.0:
                raise ValidationError({self.min_relevance_query_param: [MIN_RELEVANCE_MESSAGE]})
        if limit is None:
            limit = self.default_limit
        if limit < 1:
            raise ValidationError({self.limit_query_param: [LIMIT_MESSAGE]})
        offset = offset or 0
        if offset < 0:
            raise ValidationError({self.offset_query_param: [OFFSET_MESSAGE]})
        if capped and offset > self.max_offset:
            raise ValidationError(
                {self.offset_query_param: [f"offset is capped at {self.max_offset}; refine the search instead."]}
            )
        if in_sql and offset > MAX_SQL_OFFSET:
            raise ValidationError({self.offset_query_param: [f"offset must be at most {MAX_SQL_OFFSET}."]})
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise ValidationError({self.min_score_query_param: [MIN_SCORE_MESSAGE]})
        return min(limit, self.max_limit), offset, min_score

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        self.request = request
        ranked = is_ranked(queryset)
        # A list already in memory (the groups of duplicates/) or the plain list: no deep page walks the index.
        self.capped = not isinstance(queryset, (list, tuple)) and getattr(view, "action", None) not in UNCAPPED_ACTIONS
        in_sql = not isinstance(queryset, (list, tuple))
        self.limit, self.offset, self.min_score = self.get_params(request, ranked, self.capped, in_sql)
        calibration = queryset.calibration() if ranked and hasattr(queryset, "calibration") else None
        min_relevance = self.min_relevance if calibration is not None else None  # nothing to cut by
        by_distance = ranked and sorted_by_distance(queryset)
        if ranked and not by_distance:
            # The best matches sorted by another column: the floors filter those rows (a row without a
            # score, NULL, passes none).
            if self.min_score is not None:
                queryset = queryset.filter(score__gte=self.min_score)
            if min_relevance is not None and calibration is not None:
                queryset = queryset.filter(score__gt=calibration.threshold(min_relevance))
        rows = list(queryset[self.offset : self.offset + self.limit + 1])
        self.has_next = len(rows) > self.limit and (not self.capped or self.offset + self.limit <= self.max_offset)
        for row in rows if ranked else ():
            row.relevance = (
                calibration.relevance(row.score) if calibration is not None and row.score is not None else None
            )
        ahead, rows = rows[self.limit :], rows[: self.limit]
        if by_distance:
            # pgvector's relaxed_order index scan may return a page slightly out of order.
            # A row without a score (its distance NaN, which compares with nothing) last.
            rows.sort(key=lambda row: (row.score is None, row.distance if row.score is not None else 0.0))
            kept = [row for row in rows if self.passes(row, min_relevance)]
            # The floor ends the results on this page, or exactly at its end (the row read ahead is below it).
            if len(kept) < len(rows) or not all(self.passes(row, min_relevance) for row in ahead):
                self.has_next = False
            rows = kept
        return rows

    def passes(self, row: Any, min_relevance: float | None) -> bool:
        """Whether a ranked row clears ``min_score`` and ``min_relevance`` (each when given); a row
        without a score or relevance (a zero vector) clears neither."""
        if self.min_score is not None and (row.score is None or row.score < self.min_score):
            return False
        return min_relevance is None or (row.relevance is not None and row.relevance >= min_relevance)

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.limit_query_param, self.limit)
        return replace_query_param(url, self.offset_query_param, self.offset + self.limit)

    def get_previous_link(self) -> str | None:
        if self.offset <= 0:
            return None
        url = replace_query_param(self.request.build_absolute_uri(), self.limit_query_param, self.limit)
        previous = max(0, self.offset - self.limit)
        if previous == 0:
            return remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.offset_query_param, previous)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            OrderedDict(
                [
                    ("limit", self.limit),
                    ("offset", self.offset),
                    ("next", self.get_next_link()),
                    ("previous", self.get_previous_link()),
                    ("results", data),
                ]
            )
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        url = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["limit", "offset", "next", "previous", "results"],
            "properties": {
                "limit": {"type": "integer", "example": self.default_limit},
                "offset": {"type": "integer", "example": 0},
                "next": {**url, "description": "The next page, or null at the end or past the floor."},
                "previous": {**url, "description": "The previous page, or null on the first."},
                "results": schema,
                "note": {
                    "type": "string",
                    "description": "Only when the text search could not rank by meaning: why, and what was "
                    "done instead (words in a script the text model cannot read are matched as keywords).",
                },
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        """The paging parameters of ``view``'s action (the plain list and the duplicates have no ``min_score``)."""
        params = [
            {
                "name": self.limit_query_param,
                "in": "query",
                "required": False,
                "description": f"Results per page (default {self.default_limit}; larger values are cut to "
                f"{self.max_limit}).",
                "schema": {"type": "integer", "minimum": 1},
            },
            {
                "name": self.offset_query_param,
                "in": "query",
                "required": False,
                "description": f"Rows to skip, at most {self.max_offset}.",
                "schema": {"type": "integer", "minimum": 0, "maximum": self.max_offset},
            }
            if getattr(view, "action", None) not in UNCAPPED_ACTIONS
            else {
                "name": self.offset_query_param,
                "in": "query",
                "required": False,
                "description": "Groups to skip." if getattr(view, "action", None) == "duplicates" else "Rows to skip.",
                "schema": {"type": "integer", "minimum": 0}
                | ({} if getattr(view, "action", None) == "duplicates" else {"maximum": MAX_SQL_OFFSET}),
            },
            {
                "name": self.min_score_query_param,
                "in": "query",
                "required": False,
                "description": "Relevance floor: drop results scoring below it and end paging there. Scores are "
                "not comparable across queries, so a fixed floor suits some queries and cuts others.",
                "schema": {"type": "number", "minimum": -1, "maximum": 1},
            },
            {
                "name": self.min_relevance_query_param,
                "in": "query",
                "required": False,
                "description": "Relevance floor that means the same for every query: keep results that score "
                "higher than this share of the collection's images do for the same query (estimated on a sample "
                "of them), e.g. 0.99; paging ends at the first result below it. Each result's relevance is in "
                "the response.",
                "schema": {"type": "number", "minimum": 0, "maximum": 1},
            },
        ]
        if getattr(view, "action", None) in UNRANKED_ACTIONS:
            ranked_only = {self.min_score_query_param, self.min_relevance_query_param}
            params = [p for p in params if p["name"] not in ranked_only]
        return params


def is_ranked(queryset: Any) -> bool:
    """Whether ``queryset`` is ordered by vector distance (``semantic_search`` / ``similar_to``)."""
    query = getattr(queryset, "query", None)
    return query is not None and "distance" in query.annotations


def sorted_by_distance(queryset: Any) -> bool:
    """Whether a ranked ``queryset`` is still ordered best first (not sorted by another column)."""
    ordering = list(queryset.query.order_by)
    return bool(ordering) and (ordering[0] in ("distance", "-score") or ordering[0] == BY_SCORE)
