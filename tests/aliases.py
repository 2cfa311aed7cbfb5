"""A second alias of the primary's test database, for tests of what goes to another database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections


@contextmanager
def mirror_alias(name: str, django_db_blocker: Any) -> Iterator[str]:
    """``name``, a second alias of the test database (``TEST: {"MIRROR": "default"}``) with a
    connection of its own, for the block's length."""
    with django_db_blocker.unblock():
        connections.settings[name] = {**connections["default"].settings_dict, "TEST": {"MIRROR": "default"}}
        try:
            yield name
        finally:
            connections[name].close()
            del connections[name]
            del connections.settings[name]
