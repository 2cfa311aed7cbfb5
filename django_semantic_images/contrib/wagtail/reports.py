"""The "Image embeddings" report and dashboard panel: how many of the images an editor may see
are pending, embedded or failed, and which failed, with the reason.

Both count only the images the editor's collections let them change or delete (the Images
listing's own set); the report needs the change-image permission on some collection.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _
from wagtail.admin.menu import MenuItem
from wagtail.admin.ui.components import Component
from wagtail.admin.ui.tables import Column, DateColumn, TitleColumn
from wagtail.admin.views.reports import ReportView
from wagtail.images import get_image_model

from ...fields import EmbeddingPath, EmbeddingStatus, embedding_path
from .permissions import image_permission_policy

#: The report's URL names (namespace, then the listing and its results fragment).
URL_NAMESPACE = "semantic_images_wagtail_reports"
#: The permission the report and the panel need (on any collection).
REQUIRED_PERMISSION = "change"
#: What makes a spreadsheet read a CSV cell as a formula (OWASP's "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def as_csv_text(value: Any) -> Any:
    """``value`` as a spreadsheet will show it: a string that would start a formula gets a ``'``."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def visible_images(user: Any) -> QuerySet:
    """The images ``user`` sees in the Images listing."""
    return image_permission_policy().instances_user_has_any_permission_for(user, ["change", "delete"])


def can_see_report(user: Any) -> bool:
    return image_permission_policy().user_has_permission(user, REQUIRED_PERMISSION)


def _path() -> EmbeddingPath:
    return embedding_path(get_image_model())


def embedding_counts(images: QuerySet) -> dict[str, int]:
    """How many of ``images`` are pending (a row not embedded yet, or no row at all), embedded
    and failed."""
    path = _path()
    status = path.column("status")
    return images.aggregate(
        pending=Count("pk", filter=Q(**{status: EmbeddingStatus.PENDING}) | Q(**{status: None})),
        embedded=Count("pk", filter=Q(**{status: EmbeddingStatus.EMBEDDED})),
        failed=Count("pk", filter=Q(**{status: EmbeddingStatus.FAILED})),
    )


def _edit_url(image: Any) -> str:
    return reverse("wagtailimages:edit", args=[image.pk])


class ImageEmbeddingsReportView(ReportView):
    """Counts of the editor's images by state, and the failed ones with their reason."""

    page_title = _("Image embeddings")
    header_icon = "image"
    results_template_name = "semantic_images_wagtail/reports/image_embeddings_results.html"
    index_url_name = f"{URL_NAMESPACE}:image_embeddings"
    index_results_url_name = f"{URL_NAMESPACE}:image_embeddings_results"
    permission_required = REQUIRED_PERMISSION
    context_object_name = "images"

    @property
    def permission_policy(self) -> Any:
        """The image permission policy (Wagtail 7's ReportView checks none by itself)."""
        return image_permission_policy()

    export_headings = {
        "title": _("Title"),
        "collection.name": _("Collection"),
        "semantic_vectors.embedding_error": _("Reason"),
        "semantic_vectors.embedding_updated_at": _("Failed at"),
    }
    list_export = list(export_headings)

    model = get_image_model()
    columns = [
        TitleColumn("title", label=_("Title"), get_url=_edit_url, width="30%"),
        Column("collection", label=_("Collection"), accessor="collection.name"),
        Column("reason", label=_("Reason"), accessor="semantic_vectors.embedding_error", width="40%"),
        DateColumn("failed_at", label=_("Failed at"), accessor="semantic_vectors.embedding_updated_at"),
    ]

    def preprocess_field_value(self, field: str, value: Any, export_format: str) -> Any:
        """Titles and reasons are typed or uploaded by editors: in a CSV, never a formula (Wagtail
        guards its XLSX export only)."""
        value = super().preprocess_field_value(field, value, export_format)
        return as_csv_text(value) if export_format == self.FORMAT_CSV else value

    def get_filename(self) -> str:
        return "image-embeddings-failed"

    @cached_property
    def visible(self) -> QuerySet:
        return visible_images(self.request.user)

    def get_queryset(self) -> QuerySet:
        status, updated = _path().column("status"), _path().column("updated_at")
        return (
            self.visible.filter(**{status: EmbeddingStatus.FAILED})
            .select_related("collection", "semantic_vectors")
            .order_by(f"-{updated}", "-pk")
        )

    def get_context_data(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(*args, **kwargs)
        context["counts"] = embedding_counts(self.visible)
        return context


class ImageEmbeddingsMenuItem(MenuItem):
    def is_shown(self, request: Any) -> bool:
        return can_see_report(request.user)


def menu_item() -> ImageEmbeddingsMenuItem:
    return ImageEmbeddingsMenuItem(
        _("Image embeddings"),
        reverse(f"{URL_NAMESPACE}:image_embeddings"),
        name="image-embeddings",
        icon_name="image",
        order=1100,
    )


class ImageEmbeddingsPanel(Component):
    """A dashboard panel with the editor's pending and failed images (none when all are embedded)."""

    name = "image_embeddings"
    template_name = "semantic_images_wagtail/home/image_embeddings_panel.html"
    order = 400

    def __init__(self, user: Any) -> None:
        self.user = user

    def get_context_data(self, parent_context: Any = None) -> dict[str, Any]:
        context = super().get_context_data(parent_context)
        context["counts"] = embedding_counts(visible_images(self.user))
        context["report_url"] = reverse(f"{URL_NAMESPACE}:image_embeddings")
        return context


def add_homepage_panel(request: Any, panels: list[Any]) -> None:
    """``construct_homepage_panels``: the panel, for editors who may see the report."""
    if can_see_report(request.user):
        panels.append(ImageEmbeddingsPanel(request.user))
