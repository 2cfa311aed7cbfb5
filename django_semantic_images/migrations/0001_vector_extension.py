from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """Create pgvector's ``vector`` extension (needs a role allowed to create extensions)."""

    initial = True
    dependencies: list = []
    operations = [VectorExtension()]
