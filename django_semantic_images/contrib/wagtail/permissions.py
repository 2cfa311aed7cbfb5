"""The permission policy of Wagtail's image model, on Wagtail 8 and 7."""

from __future__ import annotations

from typing import Any

from wagtail.images import get_image_model


def image_permission_policy() -> Any:
    """Wagtail's permission policy for ``WAGTAILIMAGES_IMAGE_MODEL`` (collections and uploaders).

    Wagtail 8 keeps it in ``wagtail.permissions.policy_registry``; Wagtail 7 in
    ``wagtail.images.permissions.permission_policy``.
    """
    try:
        from wagtail.permissions import policy_registry
    except ImportError:  # Wagtail 7
        from wagtail.images import permissions

        return permissions.permission_policy
    return policy_registry.get_by_type(get_image_model())
