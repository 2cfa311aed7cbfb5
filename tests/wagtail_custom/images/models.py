"""A custom Wagtail image model with a field of its own, as Wagtail's docs show it."""

from django.db import models
from wagtail.images.models import AbstractImage, AbstractRendition, Image


class CustomImage(AbstractImage):
    caption = models.CharField(blank=True, max_length=255)

    admin_form_fields = (*Image.admin_form_fields, "caption")


class CustomRendition(AbstractRendition):
    image = models.ForeignKey(CustomImage, on_delete=models.CASCADE, related_name="renditions")

    class Meta:
        unique_together = (("image", "filter_spec", "focal_point_key"),)
