"""The Images listing's "Re-embed" bulk action: mark the selected images pending and queue them;
and Wagtail's own image bulk actions with the same selection (``SelectionMixin``).

Wagtail's bulk-action machinery does the rest: the confirmation page, the ``before_bulk_action``
/ ``after_bulk_action`` hooks, the transaction, the success message. Each image needs the
editor's change permission (``check_perm``); an image the editor may not see at all is left out
as if it did not exist, and a selection of nothing visible is a 404, as for a missing image. So is
an id no image can have (``?id=abc``), and "select all" in a collection that is malformed, missing
or one the editor may not change in (Wagtail filtered by such values as given: a 500). The
``next`` they go back to must be on this site, and over HTTPS from a page served so (``redirects``).
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.http import Http404, HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from wagtail.images.views.bulk_actions import AddTagsBulkAction, AddToCollectionBulkAction, DeleteBulkAction
from wagtail.images.views.bulk_actions.image_bulk_action import ImageBulkAction
from wagtail.models import Collection

from ...keys import well_formed_keys
from .permissions import image_permission_policy
from .redirects import next_url_from
from .signals import image_database, request_embedding
from .views import SemanticImageIndexView, bad_search


class SelectionMixin:
    """For an image bulk action: "select all in listing" takes the images the listing lists, an
    image the editor may not see answers as a missing one, and so does an id no image can have."""

    request: HttpRequest
    model: type[models.Model]
    next_url: str

    def __init__(self, request: HttpRequest, model: type[models.Model]) -> None:
        """Wagtail's, with the ``next`` it goes back to checked by ``next_url_from`` (Wagtail's check
        lets a page served over HTTPS go on to ``http://``); without one, the request's path, as Wagtail."""
        super().__init__(request, model)  # type: ignore[call-arg]
        self.next_url = next_url_from(request) or request.path

    @classmethod
    def get_queryset(cls, model: type[models.Model], object_ids: Any) -> Any:
        """Wagtail's, without the ids no image can have (a list from ``?id=``; "select all" gives
        keys): Wagtail filtered by ``?id=abc`` as given, a 500."""
        if isinstance(object_ids, (list, tuple)):
            object_ids = well_formed_keys(model, object_ids)
        return super().get_queryset(model, object_ids)  # type: ignore[misc]

    def get_all_objects_in_listing_query(self, parent_id: Any) -> Any:
        """Select all: the images the listing lists for the query string it sends (its search by
        words or by photo, its filters), in the collection ``childOf`` names. Wagtail's own took
        the images its keyword search of ``q`` finds, and ignored a photo search. None for a
        malformed collection, or search words the listing refuses (NUL, too long)."""
        malformed = parent_id is not None and not well_formed_keys(Collection, [parent_id])
        if malformed or "\x00" in self.request.GET.get("q", "") or bad_search(self.request) is not None:
            return self.model._default_manager.none().values_list("pk", flat=True)
        listing = SemanticImageIndexView()
        listing.setup(self.request)
        images = listing.get_queryset()
        if isinstance(images, models.QuerySet):
            if parent_id is not None:
                images = images.filter(collection_id=parent_id)
            return images.values_list("pk", flat=True)
        # Wagtail's keyword search (words the text model cannot read): its results, not a queryset.
        return [image.pk for image in images if parent_id is None or str(image.collection_id) == str(parent_id)]

    def get_actionable_objects(self) -> tuple[list[Any], dict[str, Any]]:
        """Wagtail's, without the images the editor may not see at all (Wagtail named them, by
        title, among those they may not act on); with nothing visible left, a 404 as for a
        missing image."""
        objects, extra = super().get_actionable_objects()  # type: ignore[misc]
        refused = extra["items_with_no_access"]
        if refused:
            visible = set(
                image_permission_policy()
                .instances_user_has_any_permission_for(self.request.user, ["change", "delete"])
                .filter(pk__in=[image.pk for image in refused])
                .values_list("pk", flat=True)
            )
            refused = [image for image in refused if image.pk in visible]
        if not objects and not refused:
            raise Http404
        return objects, {**extra, "items_with_no_access": refused}


class ReembedBulkAction(SelectionMixin, ImageBulkAction):
    display_name = _("Re-embed")
    action_type = "semantic_reembed"
    aria_label = _("Embed the selected images again")
    template_name = "semantic_images_wagtail/bulk_actions/confirm_bulk_reembed.html"
    action_priority = 50

    def check_perm(self, image: Any) -> bool:
        return self.permission_policy.user_has_permission_for_instance(self.request.user, "change", image)

    @classmethod
    def execute_action(cls, images: list[Any], **kwargs: Any) -> tuple[int, int]:
        for image in images:
            request_embedding(image.pk, image_database(image))
        return len(images), 0

    def get_success_message(self, num_parent_objects: int, num_child_objects: int) -> str:
        return ngettext(
            "%(count)d image will be embedded again.",
            "%(count)d images will be embedded again.",
            num_parent_objects,
        ) % {"count": num_parent_objects}


def wagtails_image_bulk_actions() -> list[type]:
    """Wagtail's own image bulk actions (delete, add tags, add to collection) with ``SelectionMixin``;
    registered after Wagtail's, they take their places."""
    return [
        type(action.__name__, (SelectionMixin, action), {"__module__": __name__})
        for action in (DeleteBulkAction, AddTagsBulkAction, AddToCollectionBulkAction)
    ]
