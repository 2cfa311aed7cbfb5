from typing import Any

from django.db import migrations

from ..extension import create_vector_extension


def create(apps: Any, schema_editor: Any) -> None:
    create_vector_extension(schema_editor.connection)


class Migration(migrations.Migration):
    """Create pgvector's ``vector`` extension (needs a role allowed to create extensions).

    The same function runs before every ``migrate`` (apps.py); see extension.py.
    """

    initial = True
    dependencies: list[tuple[str, str]] = []  # type: ignore[misc]
    operations = [migrations.RunPython(create, migrations.RunPython.noop, elidable=False)]
