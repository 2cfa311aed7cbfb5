"""Send embedding work to the Celery queue, or run it in-process without a broker.

``request_embedding`` never raises for a broker fault: the row stays
``pending`` and the periodic sweep (``semantic_images.sweep``) picks it up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import models

from .conf import semantic_settings

logger = logging.getLogger(__name__)


def broker_configured() -> bool:
    """Is there a Celery app with a broker that tasks can go to?"""
    try:
        from celery import current_app
    except ImportError:  # pragma: no cover - celery is a dependency
        return False
    conf = current_app.conf
    return bool(conf.broker_url) and not conf.task_always_eager


def use_queue() -> bool:
    mode = semantic_settings.ASYNC
    if mode == "auto":
        return broker_configured()
    return bool(mode)


def request_embedding(model: type[models.Model], pks: Sequence[Any], *, field: str | None = None) -> None:
    """Embed these rows: through the queue when there is one, else now, in this process."""
    if use_queue():
        from .tasks import embed_rows

        try:
            embed_rows.apply_async(
                args=[model._meta.label, [str(pk) for pk in pks]],
                kwargs={"field": field},
                queue=semantic_settings.QUEUE,
                retry=False,
            )
            return
        except Exception as exc:  # noqa: BLE001 - any broker fault: leave pending for the sweep
            logger.warning("Could not queue embedding of %s %s (%s); the sweep will retry.", model._meta.label, list(pks), exc)
            return
    from .pipeline import embed_pks

    try:
        embed_pks(model, pks, field=field)
    except Exception:  # an in-process failure must not break the save that triggered it
        logger.exception("In-process embedding of %s %s failed; the sweep will retry.", model._meta.label, list(pks))
