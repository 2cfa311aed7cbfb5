from django.apps import AppConfig


class MultilingualPhotosConfig(AppConfig):
    name = "tests.multilingual.photos"
    label = "multilingualphotos"
    default_auto_field = "django.db.models.BigAutoField"
