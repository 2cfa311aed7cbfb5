"""Send embedding work to the site's background engine, or run it in-process without one.

The engine (``engine()``, from ``ASYNC``): Celery when a broker is configured;
else Django's tasks framework when the site's default task backend runs tasks in
the background; else inline, in this process after the commit. Celery tasks are
sent by name; the tasks framework's sender is registered (``register_sender``) by
``task_framework`` when the app is ready, so this layer imports neither.

``request_embedding`` never raises: when the work cannot be sent the rows stay
``pending`` with no lease (nobody has their work), and the next sweep sends them;
the save that asked for the work has already succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, models

from .conf import semantic_settings
from .fields import EmbeddingStatus, get_embedding_field

logger = logging.getLogger(__name__)

#: The Celery task that embeds rows (``tasks.embed_rows``), sent by name so that this
#: layer never imports the tasks module that sits above it.
EMBED_TASK = "semantic_images.embed_rows"
SWEEP_TASK = "semantic_images.sweep"

#: Seconds the broker has to accept a connection and to answer each command of one send or depth
#: read (the site's own ``socket_connect_timeout``/``socket_timeout`` transport options win): a Redis
#: that takes the connection and never answers (stopped, or its host cut off) held for good the
#: request that had saved the row.
BROKER_TIMEOUT = 2.0

#: The engines ``ASYNC`` chooses from (``True`` means Celery, ``False`` inline, ``"auto"`` picks one).
CELERY, DJANGO_TASKS, INLINE = "celery", "django_tasks", "inline"
ENGINES = (CELERY, DJANGO_TASKS, INLINE)


class Sender(Protocol):
    """Sends embedding work through an engine other than Celery (registered by a higher layer)."""

    def background(self) -> bool:
        """Does the engine run tasks outside this process (what ``ASYNC = "auto"`` asks)?"""
        ...

    def send(self, model_label: str, chunks: list[list[str]], *, field: str | None, force: bool) -> int:
        """Enqueue one task per chunk of primary keys; returns the task count. Raises when it cannot."""
        ...


_senders: dict[str, Sender] = {}
#: Engines installed but unable to run the embedding tasks, with the reason (for the system check).
_unavailable: dict[str, str] = {}


def register_sender(engine_name: str, sender: Sender) -> None:
    """Make ``engine_name`` (``"django_tasks"``) available to ``ASYNC``; called at app ready."""
    if engine_name != DJANGO_TASKS:
        raise ValueError(f"Unknown engine {engine_name!r}; expected {DJANGO_TASKS!r}.")
    _senders[engine_name] = sender
    _unavailable.pop(engine_name, None)


def engine_unavailable(engine_name: str, reason: str) -> None:
    """``engine_name`` is installed but cannot run the embedding tasks (called at app ready)."""
    _unavailable[engine_name] = reason


def unavailable_engines() -> dict[str, str]:
    """Installed engines that could not be offered, with why (``checks`` reports them)."""
    return dict(_unavailable)


def unregister_sender(engine_name: str) -> Sender | None:
    """Forget a registered sender; returns it (tests, and sites that opt out)."""
    return _senders.pop(engine_name, None)


def broker_configured() -> bool:
    """Is there a Celery app with a broker that tasks can go to?"""
    try:
        from celery import current_app
    except ImportError:  # pragma: no cover - celery is a dependency
        return False
    conf = current_app.conf
    return bool(conf.broker_url) and not conf.task_always_eager


def engine() -> str:
    """The engine that embeds new uploads: ``"celery"``, ``"django_tasks"`` or ``"inline"``.

    ``ASYNC = "auto"``: Celery when a broker is configured, else the tasks framework when
    the site's default task backend runs in the background, else inline. ``True`` is
    Celery and ``False`` inline, as before; an engine's name forces it.
    """
    mode = semantic_settings.ASYNC
    if isinstance(mode, bool):
        return CELERY if mode else INLINE
    if mode == "auto":
        if broker_configured():
            return CELERY
        sender = _senders.get(DJANGO_TASKS)
        return DJANGO_TASKS if sender is not None and sender.background() else INLINE
    if mode in (CELERY, INLINE):
        return str(mode)
    if mode == DJANGO_TASKS:
        if DJANGO_TASKS not in _senders:
            if DJANGO_TASKS in _unavailable:
                raise ImproperlyConfigured(
                    'SEMANTIC_IMAGES["ASYNC"] is "django_tasks" but Django\'s tasks framework cannot run the '
                    f"embedding tasks: {_unavailable[DJANGO_TASKS]} (docs/workers.md)."
                )
            raise ImproperlyConfigured(
                'SEMANTIC_IMAGES["ASYNC"] is "django_tasks" but Django\'s tasks framework is not available: it '
                "needs Django 6 (django.tasks) or the django-tasks package in a release with TaskContext (0.12 "
                "is tested; Wagtail 7.0 installs 0.7, which has none), and a default task backend that accepts "
                "the embedding tasks (see the warning logged at startup)."
            )
        return DJANGO_TASKS
    raise ImproperlyConfigured(
        f'SEMANTIC_IMAGES["ASYNC"] must be "auto", "celery", "django_tasks", "inline", True or False; got {mode!r}.'
    )


def describe_engine(chosen: str | None = None) -> str:
    """Where the work goes, in words (for commands and logs)."""
    chosen = chosen or engine()
    if chosen == CELERY:
        return f"queue {semantic_settings.QUEUE!r}"
    if chosen == DJANGO_TASKS:
        return "Django's tasks framework (TASKS['default'])"
    return "in-process (no broker)"


def use_queue() -> bool:
    """Does work go to a background engine (Celery or the tasks framework), not run here?"""
    return engine() != INLINE


def broker_options() -> dict[str, Any]:
    """Transport options for one send or depth read: no connection retries, and ``BROKER_TIMEOUT``
    for an answer unless the site set its own socket timeouts."""
    from celery import current_app

    site = current_app.conf.broker_transport_options or {}
    return {"socket_connect_timeout": BROKER_TIMEOUT, "socket_timeout": BROKER_TIMEOUT, **site, "max_retries": 0}


def queue_depth(queue: str | None = None) -> int | None:
    """Messages waiting in ``queue`` (default ``QUEUE``), not counting those workers hold.

    None when the broker cannot say (unreachable, or a transport without the count).
    """
    from celery import current_app

    name = queue or semantic_settings.QUEUE
    try:
        with current_app.connection_for_read(transport_options=broker_options()) as connection:
            channel: Any = connection.default_channel  # every kombu channel has queue_declare
            try:
                return int(channel.queue_declare(queue=name, passive=True).message_count)
            except connection.channel_errors:  # no such queue: nothing was ever sent, or all is consumed
                # ... or kombu's Redis transport under a ``global_keyprefix``, whose passive declare
                # looks for the key without its prefix: its virtual channel counts the messages itself.
                size = getattr(channel, "_size", None)
                return int(size(name)) if callable(size) else 0
    except Exception as exc:  # noqa: BLE001 - any broker fault: the depth is unknown
        logger.info("Could not read the depth of queue %r: %s", name, exc)
        return None


def forget_sent(model: type[models.Model], pks: Sequence[Any], field: str | None = None) -> None:
    """Work for these rows was not sent: drop their lease, so the next sweep sends them."""
    emb = get_embedding_field(model, field)
    try:
        model._base_manager.filter(  # every row: a default manager may hide some
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

    Raises the broker's error at once: the connection is opened without retries, so an unreachable
    broker costs a web request milliseconds, and one that does not answer ``BROKER_TIMEOUT``
    seconds a command (``broker_options``), not seconds of backoff or for good. The tasks' results
    are not kept (nothing here reads them): sending one that keeps it first subscribes to it on
    the result backend, whose client retries for about 20 s when that is the Redis that is down.
    Nor do they carry a time limit: the worker's ``TASK_TIME_LIMIT`` ends them, not this process's.
    """
    from celery import current_app

    label = model._meta.label
    chunks = chunked([str(pk) for pk in pks], batch_size or semantic_settings.BATCH_SIZE)
    with current_app.connection_for_write(transport_options=broker_options()) as connection:
        for chunk in chunks:
            current_app.send_task(
                EMBED_TASK,
                args=[label, chunk],
                kwargs={"field": field, "force": force},
                queue=semantic_settings.QUEUE,
                retry=False,
                ignore_result=True,
                connection=connection,
                # No time limit in the message: the worker's own TASK_TIME_LIMIT applies. Celery
                # (5.7) otherwise copies the limit of a task registered in this process into the
                # message, and a worker prefers it to its own.
                time_limit=None,
                soft_time_limit=None,
            )
    return len(chunks)


def send(
    model: type[models.Model],
    pks: Sequence[Any],
    *,
    field: str | None = None,
    force: bool = False,
    batch_size: int | None = None,
    engine_name: str | None = None,
) -> int:
    """Enqueue tasks for ``pks`` on ``engine_name`` (default: ``engine()``); returns the task count.

    Raises the engine's error (``ImproperlyConfigured`` for ``"inline"``: nothing to send to).
    """
    chosen = engine_name or engine()
    if chosen == CELERY:
        return enqueue(model, pks, field=field, force=force, batch_size=batch_size)
    sender = _senders.get(chosen)
    if sender is None:
        raise ImproperlyConfigured(f"No background engine to send embedding work to (engine {chosen!r}).")
    chunks = chunked([str(pk) for pk in pks], batch_size or semantic_settings.BATCH_SIZE)
    return sender.send(model._meta.label, chunks, field=field, force=force)


def request_embedding(
    model: type[models.Model], pks: Sequence[Any], *, field: str | None = None, batch_size: int | None = None
) -> bool:
    """Embed these rows: through the background engine when there is one (``batch_size`` rows a
    task, default ``BATCH_SIZE``), else now, in this process.

    Returns False when the work could not be done or sent (the rows stay pending).
    """
    if not pks:
        return True
    try:
        chosen = engine()
    except ImproperlyConfigured:  # the system check reports it too; the save stands
        logger.exception("Embedding of %s %s not sent.", model._meta.label, list(pks))
        forget_sent(model, pks, field)
        return False
    if chosen != INLINE:
        try:
            send(model, pks, field=field, engine_name=chosen, batch_size=batch_size)
            return True
        except Exception as exc:  # noqa: BLE001 - any broker or backend fault: leave pending for the sweep
            logger.warning(
                "Could not queue embedding of %s %s through %s (%s); the next sweep sends them.",
                model._meta.label,
                list(pks),
                chosen,
                exc,
            )
            forget_sent(model, pks, field)
            return False
    from .pipeline.embedding import embed_pks
    from .pipeline.failures import TRANSIENT_ERRORS, mark_transient_failure

    try:
        embed_pks(model, pks, field=field)
        return True
    except TRANSIENT_ERRORS as exc:  # no retries in-process: counted, for the sweep (a bounded number of tries)
        logger.warning(
            "In-process embedding of %s %s failed (%s); the sweep will retry.", model._meta.label, list(pks), exc
        )
        mark_transient_failure(model, list(pks), field, exc)
        return False
    except Exception as exc:  # an in-process failure must not break the save that triggered it
        logger.exception("In-process embedding of %s %s failed; the sweep will retry.", model._meta.label, list(pks))
        mark_transient_failure(model, list(pks), field, exc)  # with the reason, for the sweep
        return False
