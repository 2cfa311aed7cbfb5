"""A list filter by embedding status: pending, embedded, failed (failed rows show their reason)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from ..fields import EmbeddingStatus, get_embedding_field


class EmbeddingStatusFilter(admin.SimpleListFilter):
    """``list_filter = [EmbeddingStatusFilter]``; works for the model's (first) embedding field,
    or the one named by the admin's ``embedding_field``."""

    title = _("embedding status")
    parameter_name = "embedding"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        self.embedding_field = getattr(model_admin, "embedding_field", None)
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return list(EmbeddingStatus.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        value = self.value()
        if value not in EmbeddingStatus.values:
            return None
        field = get_embedding_field(queryset.model, self.embedding_field)
        return queryset.filter(**{field.column("status"): value})
