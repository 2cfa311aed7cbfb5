"""A page whose body is a StreamField of images, so that an editor meets the image chooser."""

from wagtail import blocks
from wagtail.fields import StreamField
from wagtail.images.blocks import ImageBlock, ImageChooserBlock
from wagtail.models import Page


class HomePage(Page):
    body = StreamField(
        [
            ("heading", blocks.CharBlock(form_classname="title")),
            ("paragraph", blocks.RichTextBlock()),
            ("image", ImageBlock()),
            ("gallery", blocks.ListBlock(ImageChooserBlock(), label="Gallery")),
        ],
        blank=True,
    )

    content_panels = [*Page.content_panels, "body"]
