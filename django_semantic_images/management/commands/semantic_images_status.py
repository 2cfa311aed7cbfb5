"""``manage.py semantic_images_status``: counts per model and status, the encoder, the oldest pending row."""

from __future__ import annotations

import json
from typing import Any

from django.db import connections
from django.db.models import Count, F
from django.utils import timezone

from ...conf import semantic_settings
from ...dispatch import describe_engine
from ...fields import EmbeddingStatus, embedding_fields, models_with_embeddings, own_embedding_fields
from ...pipeline.failures import TRANSIENT_PREFIX
from ...sweep import due_filter, due_now, stale_filter
from .. import DatabaseCommand, resolve_model


def field_status(model: Any, emb: Any, due: dict[str, bool] | None = None) -> dict[str, Any]:
    """Counts and the oldest pending row of one model's embedding field; ``due``: what the sweep
    counts as due now (``sweep.due_now()``, read once per command). The server's facts (index
    sizes, ``shared_buffers``) are those of the database the model's rows are read from."""
    manager = model._base_manager  # every row, as the pipeline and the sweep see them
    database = manager.db
    status, updated = emb.column("status"), emb.column("updated_at")
    counts = {s.value: 0 for s in EmbeddingStatus}
    for row in manager.values(status).annotate(n=Count("pk")).order_by():
        counts[row[status]] = row["n"]
    # A row pending with no "pending since" (bulk_create(): never sent) has waited longest.
    pending = manager.filter(**{status: EmbeddingStatus.PENDING})
    oldest = pending.order_by(F(updated).asc(nulls_first=True), "pk").first()
    oldest_info = None
    if oldest is not None:
        since = getattr(oldest, updated)
        oldest_info = {
            "pk": str(oldest.pk),
            "since": since.isoformat() if since else None,
            "age_seconds": round((timezone.now() - since).total_seconds()) if since else None,
        }
    encoder = emb.get_encoder()
    try:
        identity, error = encoder.identity, None
    except ValueError as exc:  # an unreadable learned bridge (E016): nothing is embedded until it is replaced
        identity, error = None, str(exc)
    return {
        "model": model._meta.label,
        "field": emb.name,
        "database": database,
        "encoder": identity,
        "encoder_error": error,
        "device": encoder.device,
        "dimensions": [encoder.visual_dimensions, encoder.semantic_dimensions],
        "total": sum(counts.values()),
        "counts": counts,
        "failed_transient": manager.filter(
            **{status: EmbeddingStatus.FAILED, f"{emb.column('error')}__startswith": TRANSIENT_PREFIX}
        ).count(),
        # Both compare rows with the encoder's identity: unknown without it.
        "other_encoder": None if error else manager.filter(stale_filter(emb)).count(),
        "due": None if error else manager.filter(due_filter(emb, **(due_now() if due is None else due))).count(),
        "oldest_pending": oldest_info,
        "indexed": bool(emb.index),  # False: declared with index=False (no index to miss)
        "index_bytes": index_sizes(model, emb),
        "shared_buffers_bytes": shared_buffers(database),
    }


def index_sizes(model: Any, emb: Any) -> dict[str, int | None]:
    """On-disk size of the field's two HNSW indexes (None: the index does not exist), on the
    database the model's rows are read from."""
    sizes: dict[str, int | None] = {}
    connection = connections[model._base_manager.db]
    with connection.cursor() as cursor:
        for suffix in ("semantic", "visual"):
            name = connection.ops.quote_name(emb.index_name(model, suffix))
            cursor.execute("SELECT pg_relation_size(to_regclass(%s))", [name])
            sizes[suffix] = cursor.fetchone()[0]
    return sizes


def shared_buffers(using: str) -> int:
    """The ``shared_buffers`` of the server of the alias ``using``, in bytes."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))")
        return int(cursor.fetchone()[0])


def megabytes(n: int | None) -> str:
    return "missing" if n is None else f"{n / 2**20:.0f} MB"


class Command(DatabaseCommand):
    help = "Show how many rows are embedded, pending and failed, the encoder in use and the oldest pending row."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", help="app_label.ModelName (default: every model with an ImageEmbeddingField).")
        parser.add_argument("--json", action="store_true", help="Print one JSON object (for monitoring).")

    def handle(self, *args: Any, model: str | None = None, json: bool = False, **opts: Any) -> None:
        # Every table once, with the fields it holds; a model named: all its fields, inherited too.
        pairs = (
            [(m, f) for m in [resolve_model(model)] for f in embedding_fields(m)]
            if model
            else [(m, f) for m in models_with_embeddings() for f in own_embedding_fields(m)]
        )
        due = due_now()
        fields = [field_status(m, f, due) for m, f in pairs]
        data = {
            "mode": describe_engine(),
            "pending_timeout": semantic_settings.PENDING_TIMEOUT,
            # Each field's server says its own; this one, kept for monitors that read it, the first field's.
            "shared_buffers_bytes": fields[0]["shared_buffers_bytes"] if fields else None,
            "fields": fields,
        }
        if json:
            self.stdout.write(_dumps(data))
            return
        self.stdout.write(f"Embedding: {data['mode']}.")
        for info in data["fields"]:
            c = info["counts"]
            visual, semantic = info["dimensions"]
            if info["encoder_error"]:
                self.stdout.write(f"{info['model']}.{info['field']}: the encoder cannot embed: {info['encoder_error']}")
            else:
                self.stdout.write(
                    f"{info['model']}.{info['field']}: encoder {info['encoder']} on {info['device']} "
                    f"({visual}-d visual, {semantic}-d semantic)."
                )
            unknown = "unknown"
            self.stdout.write(
                f"{info['model']}.{info['field']}: {info['total']} rows: {c['embedded']} embedded, "
                f"{c['pending']} pending, {c['failed']} failed ({info['failed_transient']} for a passing reason); "
                f"{unknown if info['other_encoder'] is None else info['other_encoder']} from another encoder; "
                f"{unknown if info['due'] is None else info['due']} due for the sweep."
            )
            sizes = info["index_bytes"]
            indexes = (
                f"HNSW indexes: semantic {megabytes(sizes['semantic'])}, visual {megabytes(sizes['visual'])}"
                if info["indexed"]
                else "no HNSW indexes (index=False)"
            )
            buffers = info["shared_buffers_bytes"]
            self.stdout.write(f"  {indexes}; shared_buffers {megabytes(buffers)} (database '{info['database']}').")
            if (sizes["semantic"] or 0) > buffers:
                self.stdout.write(
                    "  The semantic index is larger than shared_buffers: text searches read it from the "
                    "operating system's cache (docs/installation.md)."
                )
            oldest = info["oldest_pending"]
            if oldest:
                age = f"{oldest['age_seconds']} s ago" if oldest["age_seconds"] is not None else "unknown time"
                self.stdout.write(f"  oldest pending: pk={oldest['pk']}, since {oldest['since']} ({age}).")


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
