"""An image's edit page in Wagtail's admin, with its embedding state and its nearest images.

``SemanticImageEditView`` is Wagtail's own ``EditView`` with more context for its template (which
extends Wagtail's ``wagtailimages/images/edit.html``): the state of the image's vectors (pending,
embedded, failed with the reason), the images nearest to it by visual likeness among those the
editor may see, and the URL of the *Re-embed* button. ``ReembedView`` answers that button (POST
only): it marks the image pending and queues it, like an upload, on the database the image's
writes go to. ``wagtail_hooks`` serves both on
Wagtail's paths (``images/<id>/``) and ``images/<id>/reembed/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.translation import gettext as _
from django.views import View
from wagtail.admin import messages
from wagtail.images.views.images import DeleteView, EditView, UsageView

from ...bidi import name_in_sentence
from ...fields import EmbeddingStatus
from ...query import similar_to
from .hidden import HiddenAsMissingMixin
from .models import RELATED_NAME
from .permissions import image_permission_policy
from .redirects import next_url_from
from .renditions import guard_renditions
from .signals import image_database, request_embedding

#: The URL namespace of these views (``semantic_images_wagtail_edit:reembed``).
NAMESPACE = "semantic_images_wagtail_edit"
#: The permissions that let an editor see an image in the panel: the Images listing's (an image
#: there links to its edit page, as each one in the panel does).
VISIBLE_WITH = ("change", "delete")


@dataclass(frozen=True)
class EmbeddingState:
    """What the edit page says about an image's vectors."""

    status: str
    error: str = ""

    @property
    def label(self) -> str:
        return str(EmbeddingStatus(self.status).label)

    @property
    def is_embedded(self) -> bool:
        return self.status == EmbeddingStatus.EMBEDDED


def embedding_state(image: models.Model) -> EmbeddingState:
    """The state of ``image``'s vectors; an image without a row yet (uploaded before the app was
    installed) is pending, as ``semantic_images_reindex`` would make it."""
    try:
        field = getattr(image, RELATED_NAME).embedding
    except ObjectDoesNotExist:
        return EmbeddingState(EmbeddingStatus.PENDING)
    return EmbeddingState(field.status or EmbeddingStatus.PENDING, field.error or "")


class UnchangedFileMixin:
    """For Wagtail's image form: a file left as it is is not assigned to the image again. Django's
    image field reads the dimensions of a file assigned again: one cut short or corrupt raised (a
    500 for any save of its edit page, a new title included)."""

    changed_data: list[str]
    cleaned_data: dict[str, Any]

    def clean_file(self) -> Any:
        # None is "no change" to a model's file field (FileField.save_form_data).
        return self.cleaned_data.get("file") if "file" in self.changed_data else None

    def _get_validation_exclusions(self) -> set[str]:
        # The model's validation of a field assigns its value again too (Model.clean_fields).
        excluded: set[str] = super()._get_validation_exclusions()  # type: ignore[misc]
        return excluded if "file" in self.changed_data else excluded | {"file"}


class SemanticImageEditView(EditView):
    """Wagtail's image edit page, plus the embedding state, a *Re-embed* button and the images
    nearest to this one."""

    template_name = "semantic_images_wagtail/images/edit.html"
    #: How many similar images the panel shows.
    similar_images_count = 12
    #: The rendition of each thumbnail, prefetched: the Images listing's, so it is reused (the
    #: panel's template names the same spec).
    similar_images_rendition = "max-165x165"

    def visible_images(self) -> models.QuerySet:
        """The images this editor may see, filtered by Wagtail's permission policy as the Images
        listing does (collections the editor's groups may change or delete in)."""
        return self.permission_policy.instances_user_has_any_permission_for(self.request.user, list(VISIBLE_WITH))

    def nearest_images(self) -> models.QuerySet | None:
        """:meth:`visible_images` ranked by visual likeness to this one, nearest first, each with
        ``distance`` and ``score`` (sliced, it reads the HNSW index of the visual vectors); None
        while this image has no vectors."""
        if not embedding_state(self.object).is_embedded:
            return None
        try:
            return similar_to(self.visible_images(), self.object)
        except ValueError:  # embedded, yet without a visual vector
            return None

    def similar_images(self) -> list[Any] | None:
        """The panel's images: the first :attr:`similar_images_count` of :meth:`nearest_images`."""
        nearest: Any = self.nearest_images()  # Wagtail's ImageQuerySet (prefetch_renditions)
        if nearest is None:
            return None
        similar = list(nearest.prefetch_renditions(self.similar_images_rendition)[: self.similar_images_count])
        guard_renditions(similar)
        return similar

    def get_object(self, queryset: Any = None) -> Any:
        """The image, if this editor may change it; any other answers 404, as a missing one does
        (Wagtail's own edit page redirects to the dashboard instead, which tells the image exists)."""
        try:
            image = super().get_object(queryset)
        except PermissionDenied:
            raise Http404 from None
        guard_renditions([image])  # a file cut short or corrupt: its preview drawn as not found, not a 500
        return image

    def get_form_class(self) -> Any:
        """Wagtail's image form (``WAGTAILIMAGES_IMAGE_FORM_BASE``), with ``UnchangedFileMixin``."""
        form_class = super().get_form_class()
        return type(form_class.__name__, (UnchangedFileMixin, form_class), {})

    @cached_property
    def next_url(self) -> str:
        """Where the page goes back to (after a save, and its panel's links): ``next_url_from``."""
        return next_url_from(self.request)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["embedding_state"] = embedding_state(self.object)
        context["similar_images"] = self.similar_images()
        context["reembed_url"] = reverse(f"{NAMESPACE}:reembed", args=(self.object.pk,))
        return context


class ReembedView(View):
    """POST: mark the image's vectors pending and queue them (after the commit, through the same
    dispatch as an upload), then go back to the edit page with a message (and the edit page's
    ``next``, the listing it returns to).

    Needs permission to change the image: an image the user may not change answers 404, exactly
    as a missing one does. Any other method answers 405.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest, image_id: int) -> HttpResponseRedirect:
        changeable = image_permission_policy().instances_user_has_permission_for(request.user, "change")
        image = get_object_or_404(changeable, pk=image_id)
        request_embedding(image.pk, image_database(image))  # where the image lives, not always `default`
        messages.success(
            request, name_in_sentence(_("Image “%(title)s” will be embedded again."), {"title": image.title})
        )
        edit_url = reverse("wagtailimages:edit", args=(image.pk,))
        # The edit page's way back to the listing (its filters, search and page), if on this site.
        next_url = next_url_from(request)
        return HttpResponseRedirect(f"{edit_url}?{urlencode({'next': next_url})}" if next_url else edit_url)


class SemanticImageDeleteView(HiddenAsMissingMixin, DeleteView):
    def get_object(self, queryset: Any = None) -> Any:
        """Wagtail's, its preview drawn as a missing file's when the file cannot be read (a 500
        before: the broken image could not be deleted from the admin)."""
        image = super().get_object(queryset)
        guard_renditions([image])
        return image


class SemanticImageUsageView(HiddenAsMissingMixin, UsageView):
    pass


def urlpatterns() -> list:
    """The edit page (on Wagtail's path, ahead of Wagtail's own) and the re-embed action, for
    ``include((urlpatterns(), NAMESPACE))`` under ``images/``."""
    return [
        path("<int:image_id>/", SemanticImageEditView.as_view(), name="edit"),
        path("<int:image_id>/reembed/", ReembedView.as_view(), name="reembed"),
        path("<int:image_id>/delete/", SemanticImageDeleteView.as_view(), name="delete"),
        path("usage/<int:image_id>/", SemanticImageUsageView.as_view(), name="image_usage"),
    ]
