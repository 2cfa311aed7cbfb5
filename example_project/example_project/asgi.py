"""The site under an ASGI server (``uvicorn example_project.asgi:application``): Django's ASGI
application, with uploads over the search-by-photo limit kept from being received
(``django_semantic_images.asgi.UploadLimitMiddleware``)."""

import os

from django.core.asgi import get_asgi_application

from django_semantic_images.asgi import UploadLimitMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
application = UploadLimitMiddleware(get_asgi_application())
