"""The package's REST search API (``SemanticSearchViewSet``) over Wagtail's images, with
Wagtail's collection permissions.

.. code-block:: python

    from rest_framework.routers import DefaultRouter
    from django_semantic_images.contrib.wagtail.search_api import WagtailImageSearchViewSet

    router = DefaultRouter()
    router.register("images", WagtailImageSearchViewSet, basename="wagtail-image-search")

gives ``images/search/?q=words``, ``POST images/search/`` (a photo) and
``images/{id}/similar/``, over the images the caller may choose in Wagtail's admin: those in
the collections their groups may choose from (all for a superuser, none for an anonymous
caller). Override ``get_queryset()`` for another rule.
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError
from django.db.models import QuerySet
from wagtail.images import get_image_model
from wagtail.images.exceptions import InvalidFilterSpecError
from wagtail.images.models import SourceImageIOError

from ...api import SemanticResultSerializer, SemanticSearchViewSet
from ...conf import semantic_settings
from .permissions import image_permission_policy


class WagtailImageResultSerializer(SemanticResultSerializer):
    """A Wagtail image found by a search: id, title, description, score, the original file's
    URL and a rendition's (Wagtail makes it once and keeps it, like its admin's thumbnails)."""

    #: The rendition's Wagtail filter spec (e.g. ``"fill-300x300"``); None for no thumbnail; ""
    #: for ``max-{THUMBNAIL_SIZE}x{THUMBNAIL_SIZE}`` (``"max-400x400"`` by default).
    thumbnail_spec: str | None = ""

    class Meta:
        model = get_image_model()
        fields = ["id", "title", "description", "score", "relevance", "image_url", "thumbnail_url"]
        read_only_fields = fields

    def get_image_url(self, obj: Any) -> str | None:
        return self.file_url(obj.file)

    def get_thumbnail_spec(self) -> str | None:
        """``thumbnail_spec``, or the spec ``THUMBNAIL_SIZE`` gives when it is ""."""
        if self.thumbnail_spec == "":
            size = int(semantic_settings.THUMBNAIL_SIZE)
            return f"max-{size}x{size}"
        return self.thumbnail_spec

    def get_thumbnail_url(self, obj: Any) -> str | None:
        spec = self.get_thumbnail_spec()
        if not spec:
            return None
        try:
            rendition = obj.get_rendition(spec)
        except DatabaseError:
            raise
        except (SourceImageIOError, InvalidFilterSpecError, OSError):  # a lost or unreadable file
            return None
        except Exception:  # noqa: BLE001 - a file that no longer decodes (AVIF: RuntimeError): the page goes on
            return None
        return self.file_url(rendition.file)


class WagtailImageSearchViewSet(SemanticSearchViewSet):
    """Search by words, by a photo and by likeness over the Wagtail images the caller may see:
    ``permission_policy.instances_user_has_any_permission_for(user, actions)``."""

    queryset = get_image_model().objects.all()
    serializer_class = WagtailImageResultSerializer
    #: The collection permissions that let a user find an image (any of them).
    collection_actions: tuple[str, ...] = ("choose",)
    #: Where words the text model cannot read are matched: the image's own title, description and
    #: tag names (the vectors' texts are properties of their row, not columns to match).
    keyword_fields: tuple[str, ...] | None = ("title", "description", "tags__name")

    def get_queryset(self) -> QuerySet:
        policy = image_permission_policy()
        return policy.instances_user_has_any_permission_for(self.request.user, list(self.collection_actions))
