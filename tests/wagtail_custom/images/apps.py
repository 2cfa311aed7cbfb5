from django.apps import AppConfig


class CustomImagesConfig(AppConfig):
    name = "tests.wagtail_custom.images"
    label = "customimages"
    default_auto_field = "django.db.models.BigAutoField"
