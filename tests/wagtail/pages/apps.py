from django.apps import AppConfig


class PagesConfig(AppConfig):
    name = "tests.wagtail.pages"
    label = "semantic_images_test_pages"
    default_auto_field = "django.db.models.BigAutoField"
