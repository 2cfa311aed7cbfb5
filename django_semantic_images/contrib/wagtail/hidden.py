"""Wagtail's per-image admin views, answering an image the editor may not see as a missing one.

Wagtail's own answer an image of a collection the editor has no permission on with "permission
denied" (a redirect to the dashboard, a 403), and a missing id with a 404: which ids exist in
hidden collections could be read off. The subclasses here answer that 404 instead, on Wagtail's
paths (``wagtail_hooks`` puts :func:`urlpatterns` ahead of Wagtail's); an image the editor sees
but may not act on this way keeps Wagtail's answer. Another editor's pending upload in the
multiple uploader answers as a missing one too, and Wagtail's admin API
(``/admin/api/main/images/``) keeps to the images the editor sees (it listed and served every one).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views import View
from wagtail.images import get_image_model
from wagtail.images.api.admin.views import ImagesAdminAPIViewSet
from wagtail.images.views import images, multiple

from .api import CheckedImagesAPIViewSet
from .permissions import image_permission_policy

#: The URL namespace of these views' patterns (their URL names stay Wagtail's: ``wagtailimages:preview``).
NAMESPACE = "semantic_images_wagtail_hidden"
#: What an editor may do with an image they can see (its collection's permissions, or as its uploader).
SEEING = ["add", "change", "choose", "delete"]


def sees(user: Any, image: Any) -> bool:
    """Whether ``user`` may see ``image``: some permission on it (``SEEING``)."""
    return bool(image_permission_policy().user_has_any_permission_for_instance(user, SEEING, image))


class HiddenAsMissingMixin:
    """Wagtail's view of an image the editor may not see at all answers as a missing image (404).

    Wagtail's view looks the image up (``self.object``), then checks the editor's permission on it:
    "permission denied" (raised, or the bare 403 the URL generator's output returns) for a hidden
    image becomes the 404 of a missing one."""

    object: Any

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            response = super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        except PermissionDenied:
            self.refuse_hidden(request)
            raise
        if response.status_code == 403:
            self.refuse_hidden(request)
        return response

    def refuse_hidden(self, request: HttpRequest) -> None:
        """Raise the 404 of a missing image if the image looked up is hidden from the editor."""
        image = getattr(self, "object", None)
        if image is not None and not sees(request.user, image):
            raise Http404 from None


class HiddenUploadAsMissingMixin:
    """The multiple uploader's pending upload (a file whose other fields did not validate) of another
    editor answers as a missing one (404): Wagtail's "permission denied" told which uploads exist."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]
        except PermissionDenied:  # the only one these views raise: the upload is not this editor's
            raise Http404 from None


#: Wagtail's URL generator (its page and the output that page fetches); a guard for a Wagtail
#: release without this class (the base is then Django's ``View``, and no URL is registered).
WAGTAIL_URL_GENERATOR = getattr(images, "URLGeneratorView", None)


#: Whether Wagtail's URL generator renders its own output (``output_only``, Wagtail 7.1+); Wagtail 7.0's
#: page fetches the URL as JSON from ``GenerateURLView`` instead.
URL_GENERATOR_OUTPUT = hasattr(WAGTAIL_URL_GENERATOR, "output_only")
#: Wagtail 7.0's JSON answer of the URL generator (gone in 7.1), else None.
WAGTAIL_GENERATE_URL = getattr(images, "GenerateURLView", None)


class URLGeneratorView(HiddenAsMissingMixin, WAGTAIL_URL_GENERATOR or View):  # type: ignore[misc]
    pass


class GenerateURLView(WAGTAIL_GENERATE_URL or View):  # type: ignore[misc]
    """Wagtail 7.0's JSON of the URL generator: a hidden image answers as a missing one (Wagtail's
    own answered it with a 403 saying "You do not have permission", a missing id with this 404)."""

    def get(self, request: HttpRequest, image_id: int, filter_spec: str) -> HttpResponse:
        image = get_image_model().objects.filter(id=image_id).first()
        if image is not None and not sees(request.user, image):
            return JsonResponse({"error": "Cannot find image."}, status=404)  # Wagtail's for a missing id
        return super().get(request, image_id, filter_spec)


class MultipleEditView(HiddenAsMissingMixin, multiple.EditView):
    pass


class MultipleDeleteView(HiddenAsMissingMixin, multiple.DeleteView):
    pass


class CreateFromUploadedImageView(HiddenUploadAsMissingMixin, multiple.CreateFromUploadedImageView):
    pass


class DeleteUploadView(HiddenUploadAsMissingMixin, multiple.DeleteUploadView):
    pass


def preview(request: HttpRequest, image_id: int, filter_spec: str) -> HttpResponse:
    """Wagtail's preview of a crop (the URL generator's); a hidden image is a 404."""
    image = get_object_or_404(get_image_model(), id=image_id)
    if not sees(request.user, image):
        raise Http404
    return images.preview(request, image_id, filter_spec)


class VisibleImagesAdminAPIViewSet(CheckedImagesAPIViewSet, ImagesAdminAPIViewSet):
    """Wagtail's admin API of images, keeping to those the editor sees (listing, detail, ``find``),
    and refusing bad input with a 400 naming the parameter as the public images API does
    (``CheckedImagesAPIViewSet``: Wagtail's failed on some with a 500)."""

    def get_queryset(self) -> QuerySet:
        seen = image_permission_policy().instances_user_has_any_permission_for(self.request.user, SEEING)
        return super().get_queryset().filter(pk__in=seen.values("pk"))


def urlpatterns() -> list:
    """The views above on Wagtail's paths, for ``include((urlpatterns(), NAMESPACE))`` under ``images/``
    ahead of Wagtail's patterns (their URL names are Wagtail's, which reverse to the same paths)."""
    patterns = [
        path("<int:image_id>/preview/<str:filter_spec>/", preview, name="preview"),
        path("multiple/<int:image_id>/", MultipleEditView.as_view(), name="edit_multiple"),
        path("multiple/<int:image_id>/delete/", MultipleDeleteView.as_view(), name="delete_multiple"),
        path(
            "multiple/create_from_uploaded_image/<int:uploaded_file_id>/",
            CreateFromUploadedImageView.as_view(),
            name="create_multiple_from_uploaded_image",
        ),
        path(
            "multiple/delete_upload/<int:uploaded_file_id>/", DeleteUploadView.as_view(), name="delete_upload_multiple"
        ),
    ]
    if WAGTAIL_URL_GENERATOR is not None:
        patterns.append(path("<int:image_id>/generate_url/", URLGeneratorView.as_view(), name="url_generator"))
    if WAGTAIL_URL_GENERATOR is not None and URL_GENERATOR_OUTPUT:
        output = URLGeneratorView.as_view(output_only=True)
        patterns.append(path("<int:image_id>/generate_url/output/", output, name="url_generator_output"))
    if WAGTAIL_GENERATE_URL is not None:
        generate = GenerateURLView.as_view()
        patterns.append(path("<int:image_id>/generate_url/<str:filter_spec>/", generate, name="generate_url"))
    return patterns
