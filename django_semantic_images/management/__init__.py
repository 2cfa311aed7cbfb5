"""Helpers shared by the app's management commands."""

from __future__ import annotations

import re
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.db import InterfaceError, OperationalError, ProgrammingError

from ..fields import embedding_fields, embedding_path, models_with_embeddings

#: A command's exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
#: PostgreSQL's SQLSTATEs of "relation ... does not exist" and "column ... does not exist", with what
#: is missing: a database not migrated yet, or not to this release.
NOT_MIGRATED = {"42P01": "table", "42703": "column"}


def resolve_model(label: str | None, *, joined: bool = False) -> Any:
    """The model named ``app_label.Model``, or the only model with an embedding field.

    ``joined``: a model ranked by the field of a model joined to it one-to-one (Wagtail's image
    model, whose vectors are ``contrib.wagtail``'s ``ImageVectors``) is accepted too.
    """
    candidates = models_with_embeddings()
    if label:
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as exc:
            raise CommandError(f"Unknown model {label!r} (use app_label.ModelName).") from exc
        if not embedding_fields(model) and not (joined and _ranked_through_a_join(model)):
            raise CommandError(f"{label} has no ImageEmbeddingField.")
        return model
    if len(candidates) != 1:
        names = ", ".join(m._meta.label for m in candidates) or "none"
        raise CommandError(f"Name the model with --model (models with an ImageEmbeddingField: {names}).")
    return candidates[0]


def _ranked_through_a_join(model: Any) -> bool:
    try:
        embedding_path(model)
    except LookupError:
        return False
    return True


class ProgressFile:
    """A command's stderr as the file of a progress bar (tqdm): what ``call_command(stderr=...)`` names,
    written as given (no line ending added, not coloured as an error), a terminal only if it is one."""

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.write(text, style_func=str, ending="")

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return self.out.isatty()

    def __getattr__(self, name: str) -> Any:  # fileno() for the terminal's width
        return getattr(self.out, name)


class DatabaseCommand(BaseCommand):
    """A command that reads the database: a server that cannot be reached (or that drops the connection)
    ends it with a CommandError giving the reason, a table or column that is not there yet (no ``migrate``) with one
    that says so, and Ctrl-C with one of exit status 130, not a traceback (where it matters, the command
    says itself what was done)."""

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except (OperationalError, InterfaceError) as exc:
            raise CommandError(f"The database failed: {' '.join(str(exc).split())}") from exc  # on one line
        except ProgrammingError as exc:
            what = NOT_MIGRATED.get(getattr(exc.__cause__, "sqlstate", None) or "")
            if what is None:
                raise
            reason = str(exc).splitlines()[0] if str(exc) else f"a {what} is missing"
            name = re.search(r'^(?:relation|column) "?([^" ]+)"? does not exist', reason)
            missing = f'The database has no {what} "{name[1]}"' if name else f"The database misses a {what}"
            raise CommandError(f"{missing} ({reason}): run `manage.py migrate` first.") from exc
        except KeyboardInterrupt:
            raise CommandError("Interrupted.", returncode=INTERRUPTED) from None
