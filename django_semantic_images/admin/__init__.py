"""Admin integration: search by meaning in the changelist, similar images, search by photo.

``class PhotoAdmin(SemanticImageAdmin)`` for the ready admin, or add
``SemanticSearchAdminMixin`` to your own ``ModelAdmin``.
"""

from .actions import reembed_selected
from .filters import EmbeddingStatusFilter
from .options import SemanticImageAdmin, SemanticSearchAdminMixin

__all__ = ["EmbeddingStatusFilter", "SemanticImageAdmin", "SemanticSearchAdminMixin", "reembed_selected"]
