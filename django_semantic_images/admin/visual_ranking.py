"""Which picture the changelist is ranked by: an uploaded photo (``?photo=``) or a row's (``?similar_to=``).

The ranking is looked up once per request, in ``changelist_view``; a photo search that has
expired, a row the editor cannot see or a row without a visual vector give an empty
ranking and a message that says why.
"""

from __future__ import annotations

import numpy as np
from django.contrib import messages
from django.http import HttpRequest
from django.utils.translation import gettext as _

from ..bidi import name_in_sentence
from ..fields import EmbeddingStatus
from .base import SemanticAdminBase, listing_message
from .ranking import PHOTO_VAR, SIMILAR_VAR, VisualRanking, field_key, load_photo_query


class VisualRankingMixin(SemanticAdminBase):
    """``get_visual_ranking(request)``: the picture of the request's visual ranking, if any."""

    def get_visual_ranking(self, request: HttpRequest) -> VisualRanking | None:
        """The picture the changelist is ranked by, from ``?photo=`` or ``?similar_to=``."""
        field = self.get_embedding_field()
        token = request.GET.get(PHOTO_VAR)
        if token:
            ranking = load_photo_query(request, token, made_for=field_key(field))
            if ranking is None:
                listing_message(
                    request,
                    messages.WARNING,
                    _("That photo search has expired or was made for other images; upload the photo again."),
                )
                return VisualRanking(vector=None, kind="photo")
            return ranking
        pk = request.GET.get(SIMILAR_VAR)
        if not pk:
            return None
        # get_object() goes through get_queryset(request): a row the editor cannot see is not found.
        source = self.get_object(request, pk)
        if source is None:
            listing_message(
                request,
                messages.WARNING,
                name_in_sentence(_("There is no image with ID “%(pk)s” that you can see."), {"pk": pk}),
            )
            return VisualRanking(vector=None, kind="similar")
        vector = getattr(source, field.visual_field)
        status = getattr(source, field.column("status"))
        if vector is None and status == EmbeddingStatus.FAILED:  # waiting will not help: say why
            reason = getattr(source, field.column("error")) or _("no reason was recorded")
            listing_message(
                request,
                messages.WARNING,
                name_in_sentence(_("“%(obj)s” could not be embedded: %(reason)s"), {"obj": source}, {"reason": reason}),
            )
            return VisualRanking(vector=None, kind="similar", source=source)
        if vector is None:
            listing_message(
                request,
                messages.WARNING,
                name_in_sentence(
                    _("“%(obj)s” has no visual vector yet (status: %(status)s)."), {"obj": source}, {"status": status}
                ),
            )
            return VisualRanking(vector=None, kind="similar", source=source)
        # pgvector's Vector and HalfVector (what some pgvector-python versions read a vector or a
        # halfvec column as) are no sequences for numpy: their own to_numpy() gives the numbers.
        values = vector.to_numpy() if callable(getattr(vector, "to_numpy", None)) else vector
        values = np.asarray(values, dtype=np.float32)
        if not values.any():  # a zero vector (written by other means): no direction, no cosine to rank by
            listing_message(
                request,
                messages.WARNING,
                name_in_sentence(
                    _("“%(obj)s” has a visual vector of all zeros: no image can be compared with it; re-embed it."),
                    {"obj": source},
                ),
            )
            return VisualRanking(vector=None, kind="similar", source=source)
        return VisualRanking(vector=values.tolist(), kind="similar", source=source)
