"""Send embedding work to the Celery queue, or run it in-process without a broker.

``request_embedding`` never raises: when the broker cannot be reached the rows
stay ``pending`` with no lease (nobody has their work), and the next sweep
(``semantic_images.sweep``) sends them; the save that asked for the work has
already succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, models

from .conf import semantic_settings
from .fields import EmbeddingStatus, get_embedding_field

logger = logging.getLogger(__name__)

#: The Celery task that embeds rows (``tasks.embed_rows``), sent by name so that this
#: layer never imports the tasks module that sits above it.
EMBED_TASK = "semantic_images.embed_rows"
SWEEP_TASK = "semantic_images.sweep"


def broker_configured() -> bool:
    """Is there a Celery app with a broker that tasks can go to?"""
    try:
        from celery import current_app
    except ImportError:  # pragma: no cover - celery is a dependency
        return False
    conf = current_app.conf
    return bool(conf.broker_url) and not conf.task_always_eager


def use_queue() -> bool:
    """``ASYNC`` is ``"auto"`` (queue when a broker is configured), True or False."""
    mode = semantic_settings.ASYNC
    if mode == "auto":
        return broker_configured()
    return bool(mode)


def queue_depth(queue: str | None = None) -> int | None:
    """Messages waiting in ``queue`` (default ``QUEUE``), not counting those workers hold.

    None when the broker cannot say (unreachable, or a transport without the count).
    """
    from celery import current_app

    name = queue or semantic_settings.QUEUE
    try:
        with current_app.connection_for_read(transport_options={"max_retries": 0}) as connection:
            channel: Any = connection.default_channel  # every kombu channel has queue_declare
            try:
                return int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors:  # no such queue: nothing was ever sent, or all is consumed
                return 0
    except Exception as exc:  # noqa: BLE001 - any broker fault: the depth is unknown
        logger.info("Could not read the depth of queue %r: %s", name, exc)
        return None


def forget_sent(model: type[models.Model], pks: Sequence[Any], field: str | None = None) -> None:
    """Work for these rows was not sent: drop their lease, so the next sweep sends them."""
    emb = get_embedding_field(model, field)
    try:
        model._default_manager.filter(
            pk__in=list(pks), **{emb.column("status"): EmbeddingStatus.PENDING, emb.column("claimed_by"): ""}
        ).update(**{emb.column("lease_until"): None})
    except DatabaseError as exc:  # then their lease runs out and the sweep finds them a little later
        logger.warning("Could not mark %s %s as unsent: %s", model._meta.label, list(pks), exc)


def chunked(pks: Sequence[Any], size: int) -> list[list[Any]]:
    """``pks`` in lists of at most ``size``."""
    size = max(1, size)
    return [list(pks[start : start + size]) for start in range(0, len(pks), size)]


def enqueue(
    model: type[models.Model],
    pks: Sequence[Any],
    *,
    field: str | None = None,
    force: bool = False,
    batch_size: int | None = None,
) -> int:
    """Publish tasks for ``pks`` (one per ``BATCH_SIZE`` rows) to ``QUEUE``; returns the task count.

    Raises the broker's error at once: the connection is opened without retries,
    so an unreachable broker costs a web request milliseconds, not seconds.
    """
    from celery import current_app

    label = model._meta.label
    chunks = chunked([str(pk) for pk in pks], batch_size or semantic_settings.BATCH_SIZE)
    with current_app.connection_for_write(transport_options={"max_retries": 0}) as connection:
        for chunk in chunks:
            current_app.send_task(
                EMBED_TASK,
                args=[label, chunk],
                kwargs={"field": field, "force": force},
                queue=semantic_settings.QUEUE,
                retry=False,
                connection=connection,
            )
    return len(chunks)


def request_embedding(model: type[models.Model], pks: Sequence[Any], *, field: str | None = None) -> bool:
    """Embed these rows: through the queue when there is one, else now, in this process.

    Returns False when the work could not be done or sent (the rows stay pending).
    """
    if not pks:
        return True
    if use_queue():
        try:
            enqueue(model, pks, field=field)
            return True
        except Exception as exc:  # noqa: BLE001 - any broker fault: leave pending for the sweep
            logger.warning(
                "Could not queue embedding of %s %s (%s); the next sweep sends them.",
                model._meta.label,
                list(pks),
                exc,
            )
            forget_sent(model, pks, field)
            return False
    from .pipeline import embed_pks

    try:
        embed_pks(model, pks, field=field)
        return True
    except Exception:  # an in-process failure must not break the save that triggered it
        logger.exception("In-process embedding of %s %s failed; the sweep will retry.", model._meta.label, list(pks))
        return False
