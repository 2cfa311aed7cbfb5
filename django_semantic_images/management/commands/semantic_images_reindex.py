"""``manage.py semantic_images_reindex``: (re)embed rows in this process or through the queue.

Examples::

    manage.py semantic_images_reindex                      # every row of every model; unchanged rows are skipped
    manage.py semantic_images_reindex --model photos.Photo --missing --batch-size 32
    manage.py semantic_images_reindex --stale --queue      # rows from another encoder, sent to the workers
    manage.py semantic_images_reindex --due                # what the periodic sweep does
"""

from __future__ import annotations

import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from tqdm import tqdm

from ...conf import semantic_settings
from ...dispatch import DJANGO_TASKS, describe_engine, forget_sent, send, unavailable_engines, use_queue
from ...fields import ImageEmbeddingField, embedding_fields, models_with_embeddings, own_embedding_fields
from ...pipeline.embedding import EmbedReport, embed_pks
from ...pipeline.failures import TRANSIENT_ERRORS
from ...pipeline.leases import free_filter
from ...pipeline.rows import primary_manager, primary_rows
from ...sweep import due_filter, mark_pending, missing_filter, stale_filter, sweep
from .. import INTERRUPTED, DatabaseCommand, ProgressFile, resolve_model

#: Rows loaded from the database at a time (each chunk is embedded in batches of ``--batch-size``).
CHUNK_BATCHES = 8


def configured(name: str) -> str:
    """`` = <value>`` of a setting, for a help text; "" while SEMANTIC_IMAGES cannot be read (the parser
    is built before the system checks, which name the problem)."""
    try:
        return f" = {getattr(semantic_settings, name)!r}"
    except ImproperlyConfigured:
        return ""


def no_queue_reason() -> str:
    """Why the work has no background engine to go to: ASYNC says so, or none can take it."""
    mode = semantic_settings.ASYNC
    if mode is False or mode == "inline":
        return f"SEMANTIC_IMAGES['ASYNC'] is {mode!r}: embedding runs in-process"
    reason = unavailable_engines().get(DJANGO_TASKS)
    if reason:
        return (
            "No Celery broker is configured (CELERY_BROKER_URL), and Django's tasks framework cannot run "
            f"the embedding tasks ({reason}; system check W005)"
        )
    return "No Celery broker is configured (CELERY_BROKER_URL), nor a background task backend (TASKS)"


class Command(DatabaseCommand):
    help = "Embed images again: all rows, only missing or stale ones, or what the sweep would queue."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", help="app_label.ModelName (default: every model with an ImageEmbeddingField).")
        parser.add_argument("--field", help="The ImageEmbeddingField's name, when a model has several.")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--missing", action="store_true", help="Only rows without vectors (not failed for good).")
        which.add_argument(
            "--stale",
            action="store_true",
            help="Only rows embedded by another encoder (after a text-side change, rows with a stored norm "
            "are rebuilt from their stored CNN output, without reading the image).",
        )
        which.add_argument(
            "--due",
            action="store_true",
            help="What the sweep queues: pending too long, failed for a passing reason, or from another encoder.",
        )
        parser.add_argument("--force", action="store_true", help="Recompute rows even when nothing changed.")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help=f"Images per batch (default SEMANTIC_IMAGES['BATCH_SIZE']{configured('BATCH_SIZE')}).",
        )
        parser.add_argument(
            "--queue",
            action="store_true",
            help="Send the rows to the workers instead (Celery, or Django's tasks framework: see ASYNC).",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **opts: Any) -> None:
        self.verbosity = opts["verbosity"]
        batch_size = semantic_settings.BATCH_SIZE if opts["batch_size"] is None else opts["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if opts["queue"] and not use_queue():
            raise CommandError(f"{no_queue_reason()}; run without --queue to embed in this process.")
        targets = self.targets(opts["model"], opts["field"])
        if opts["due"] and opts["queue"]:
            models_swept = list(dict.fromkeys(model for model, _ in targets))
            report = sweep(models_swept, pending_timeout=None, fields={emb.name for _, emb in targets})
            if report.unsent:  # they stay due: the next sweep sends them
                raise CommandError(f"Sweep: {report}.")
            self.say(f"Sweep: {report}.")
            return
        for model, emb in targets:
            try:
                emb.get_encoder().identity  # noqa: B018 - an unreadable learned bridge (E016) stops here, with its reason
            except ValueError as exc:
                raise CommandError(f"{model._meta.label}.{emb.name}: {exc}") from exc
            add_missing_rows = getattr(primary_manager(model), "add_missing_rows", None)
            if add_missing_rows is not None:
                # A table of vectors kept beside another model's rows (contrib.wagtail) gets
                # rows for the images that have none yet.
                added = add_missing_rows()
                if added:
                    self.say(f"{model._meta.label}: added {added} missing rows.")
            qs = primary_rows(model).filter(self.selection(emb, opts)).order_by("pk")
            pks = list(qs.values_list("pk", flat=True))
            label = f"{model._meta.label}.{emb.name}"
            if not pks:
                self.say(f"{label}: nothing to do.")
                continue
            if opts["queue"]:
                self.send(model, emb, pks, label, batch_size, opts)
            else:
                self.embed(model, emb, pks, label, batch_size, opts)

    def targets(self, label: str | None, field: str | None) -> list[tuple[type[models.Model], ImageEmbeddingField]]:
        model_list = [resolve_model(label)] if label else models_with_embeddings()
        if not model_list:
            raise CommandError("No installed model has an ImageEmbeddingField.")
        # Every table once, with the fields it holds; a model named: all its fields, inherited too.
        fields_of = embedding_fields if label else own_embedding_fields
        found = [(m, f) for m in model_list for f in fields_of(m) if field in (None, f.name)]
        if not found:
            raise CommandError(
                f"No ImageEmbeddingField named {field!r} on {', '.join(m._meta.label for m in model_list)}."
            )
        return found

    def say(self, text: str) -> None:
        """A report line, left out at --verbosity 0 (the rows that failed are printed all the same)."""
        if self.verbosity >= 1:
            self.stdout.write(text)

    @staticmethod
    def selection(emb: ImageEmbeddingField, opts: dict[str, Any]) -> Q:
        if opts["missing"]:
            return missing_filter(emb)
        if opts["stale"]:
            return stale_filter(emb)
        if opts["due"]:
            return due_filter(emb)
        return Q()

    def progress(self, total: int, label: str, opts: dict[str, Any], unit: str = "img") -> tqdm:
        """A bar with count, rate and ETA (on the command's stderr; off with --no-progress or when not a terminal)."""
        # None: tqdm hides itself when stderr is not a tty.
        disable = True if opts["no_progress"] or self.verbosity < 1 else None
        return tqdm(
            total=total, desc=label, unit=unit, file=ProgressFile(self.stderr), disable=disable, dynamic_ncols=True
        )

    def embed(
        self,
        model: type[models.Model],
        emb: ImageEmbeddingField,
        pks: list[Any],
        label: str,
        batch_size: int,
        opts: dict[str, Any],
    ) -> None:
        report = EmbedReport()
        again = (
            "Run the command again to continue: with --force it recomputes every row again (without it, "
            "rows already up to date are skipped)."
            if opts["force"]
            else "Run the command again to continue (finished rows are skipped)."
        )
        started = time.perf_counter()
        chunk = batch_size * CHUNK_BATCHES
        done = 0  # rows of the batches written so far (a chunk's report comes only at its end)

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            bar.update(rows)

        with self.progress(len(pks), label, opts) as bar:
            for start in range(0, len(pks), chunk):
                try:
                    part = embed_pks(
                        model,
                        pks[start : start + chunk],
                        field=emb.name,
                        force=opts["force"],
                        batch_size=batch_size,
                        progress=advance,
                    )
                except TRANSIENT_ERRORS as exc:
                    raise CommandError(f"{label}: stopped after {done} of {len(pks)} rows: {exc}. {again}") from exc
                except KeyboardInterrupt:  # Ctrl-C: the batch under way is rolled back, the written ones stay
                    raise CommandError(
                        f"{label}: interrupted after {done} of {len(pks)} rows. {again}",
                        returncode=INTERRUPTED,
                    ) from None
                report.merge(part)
        seconds = time.perf_counter() - started
        rate = len(pks) / seconds if seconds else 0.0
        self.say(f"{label}: {report} in {seconds:.1f} s ({rate:.1f} rows/s).")
        for pk, reason in list(report.failed.items())[:20]:
            self.stdout.write(self.style.WARNING(f"  pk={pk}: {reason}"))
        if len(report.failed) > 20:
            self.stdout.write(self.style.WARNING(f"  ... and {len(report.failed) - 20} more failed."))

    def send(
        self,
        model: type[models.Model],
        emb: ImageEmbeddingField,
        pks: list[Any],
        label: str,
        batch_size: int,
        opts: dict[str, Any],
    ) -> None:
        tasks = sent = 0  # the bar counts nothing while it is off
        with self.progress(len(pks), f"{label} (queueing)", opts, unit="row") as bar:
            for start in range(0, len(pks), batch_size * CHUNK_BATCHES):
                part = pks[start : start + batch_size * CHUNK_BATCHES]
                try:
                    if opts["stale"]:  # marked sent, as the admin's action does: the sweep leaves them to these tasks
                        mark_pending(model, emb, part, stale_filter(emb) & free_filter(emb, timezone.now()))
                    tasks += send(model, part, field=emb.name, force=opts["force"], batch_size=batch_size)
                except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - any broker fault, or Ctrl-C, ends the command
                    if opts["stale"]:
                        forget_sent(model, part, emb.name)  # the next sweep sends them
                    if isinstance(exc, KeyboardInterrupt):
                        raise CommandError(
                            f"{label}: interrupted after {sent} of {len(pks)} rows were sent.", returncode=INTERRUPTED
                        ) from None
                    raise CommandError(f"{label}: the queue refused the work after {sent} rows: {exc}") from exc
                sent += len(part)
                bar.update(len(part))
        self.say(
            f"{label}: {len(pks)} rows sent as {tasks} tasks to {describe_engine()}; "
            "`manage.py semantic_images_status` shows the workers' progress."
        )
