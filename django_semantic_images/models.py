"""The app's one table: pairs of images that an editor said are not duplicates."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils.translation import gettext_lazy as _


class NotDuplicate(models.Model):
    """Two rows of one model that look alike but are different pictures.

    ``near_duplicates()`` never puts such a pair in one group (docs/duplicates.md). The
    primary keys are stored as text, the smaller (as text) first, so a pair has one row.
    """

    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE, verbose_name=_("model"))
    first_pk = models.CharField(_("first id"), max_length=255)
    second_pk = models.CharField(_("second id"), max_length=255)
    created_at = models.DateTimeField(_("marked at"), auto_now_add=True)

    class Meta:
        verbose_name = _("pair marked not duplicates")
        verbose_name_plural = _("pairs marked not duplicates")
        constraints = [
            models.UniqueConstraint(fields=["content_type", "first_pk", "second_pk"], name="semantic_images_pair_once")
        ]

    def __str__(self) -> str:
        return f"{self.content_type} {self.first_pk} ≠ {self.second_pk}"

    @staticmethod
    def key(a: Any, b: Any) -> tuple[str, str]:
        """The stored form of a pair of primary keys: both as text, in order."""
        first, second = sorted((str(a), str(b)))
        return first, second
