"""Semantic search for Wagtail's images.

Add ``"django_semantic_images.contrib.wagtail"`` to ``INSTALLED_APPS`` (after
``"django_semantic_images"`` and Wagtail's apps) and run ``migrate``. Every image of
``WAGTAILIMAGES_IMAGE_MODEL`` gets a row of vectors (:class:`~.models.ImageVectors`), embedded
after upload; the admin's Images listing and the image chooser rank their search results by
meaning. See docs/wagtail.md.
"""
