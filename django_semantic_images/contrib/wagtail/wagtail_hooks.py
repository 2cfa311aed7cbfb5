"""Serve Wagtail's image listing and chooser URLs with the views that rank by meaning.

Registered before Wagtail's own patterns (``order=-1``), these take the same paths, so the
URL names (``wagtailimages:index``, ``wagtailimages_chooser:choose``) still reverse to them and
every other image URL falls through to Wagtail.
"""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from wagtail import hooks

from . import edit_views, hidden, reports
from .bulk_actions import ReembedBulkAction, wagtails_image_bulk_actions
from .views import SemanticImageIndexView, chooser_viewset


@hooks.register("register_admin_urls", order=-1)
def register_admin_urls() -> list:
    chooser = chooser_viewset()
    listing = [
        path("", SemanticImageIndexView.as_view(), name="index"),
        path("results/", SemanticImageIndexView.as_view(results_only=True), name="index_results"),
    ]
    choosing = [
        path("", chooser.choose_view, name="choose"),
        path("results/", chooser.choose_results_view, name="choose_results"),
        # An image of a collection the editor may not see answers as a missing one (404).
        path("chosen/<str:pk>/", chooser.chosen_view, name="chosen"),
        path("<int:image_id>/select_format/", chooser.select_format_view, name="select_format"),
    ]
    return [
        path("images/", include((listing, "semantic_images_wagtail"))),
        path("images/chooser/", include((choosing, "semantic_images_wagtail_chooser"))),
        path("images/", include((edit_views.urlpatterns(), edit_views.NAMESPACE))),
        # Wagtail's other per-image views, answering an image the editor may not see as a missing one.
        path("images/", include((hidden.urlpatterns(), hidden.NAMESPACE))),
    ]


@hooks.register("construct_admin_api", order=1)
def construct_admin_api(router: Any) -> None:
    """Wagtail's admin API of images (``/admin/api/main/images/``), keeping to the images the editor
    sees: it takes the place of Wagtail's, registered before (order 0) under the same name."""
    router.register_endpoint("images", hidden.VisibleImagesAdminAPIViewSet)


# The listing's tools: the "Re-embed" bulk action, the "Image embeddings" report and its
# dashboard panel (search by photo is part of the listing's view itself); Wagtail's own image bulk
# actions, whose "select all" takes the images the listing ranked.
hooks.register("register_bulk_action", ReembedBulkAction)
for action in wagtails_image_bulk_actions():  # after Wagtail's (order 0): they take their places
    hooks.register("register_bulk_action", action, order=1)
hooks.register("construct_homepage_panels", reports.add_homepage_panel)
hooks.register("register_reports_menu_item", reports.menu_item)


@hooks.register("register_admin_urls")
def register_report_urls() -> list:
    view = reports.ImageEmbeddingsReportView
    urls = [
        path("", view.as_view(), name="image_embeddings"),
        path("results/", view.as_view(results_only=True), name="image_embeddings_results"),
    ]
    return [path("reports/image-embeddings/", include((urls, reports.URL_NAMESPACE)))]
