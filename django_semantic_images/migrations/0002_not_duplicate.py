"""The pairs that editors marked "not duplicates" (docs/duplicates.md)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("semantic_images", "0001_vector_extension"),
    ]

    operations = [
        migrations.CreateModel(
            name="NotDuplicate",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("first_pk", models.CharField(max_length=255, verbose_name="first id")),
                ("second_pk", models.CharField(max_length=255, verbose_name="second id")),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="marked at")),
                (
                    "content_type",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="contenttypes.contenttype", verbose_name="model"
                    ),
                ),
            ],
            options={
                "verbose_name": "pair marked not duplicates",
                "verbose_name_plural": "pairs marked not duplicates",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("content_type", "first_pk", "second_pk"), name="semantic_images_pair_once"
                    )
                ],
            },
        ),
    ]
