"""REST search API (Django REST Framework): text, photo and similar-image search.

``SemanticSearchViewSet`` and ``SemanticResultSerializer`` are what a site subclasses;
see docs/api.md.
"""

from .pagination import RankedPagination
from .serializers import SemanticResultSerializer
from .throttling import SemanticSearchThrottle
from .viewsets import SemanticSearchViewSet

__all__ = ["RankedPagination", "SemanticResultSerializer", "SemanticSearchThrottle", "SemanticSearchViewSet"]
