"""Embedding and the sweep as tasks of Django's tasks framework, for sites without Celery.

``django.tasks`` on Django 6 and later, else the ``django-tasks`` backport (which
Wagtail installs). ``apps.py`` imports this module when the framework is there and
calls :func:`register`, which hands dispatch a sender; ``ASYNC = "auto"`` then picks
this engine when no Celery broker is configured and the default task backend
(``TASKS["default"]``) runs tasks in the background: not ``ImmediateBackend`` or
``DummyBackend``.

``embed_rows`` claims its rows like the Celery task (one holder per row, a lease
renewed after every batch). The framework has no retries: on a fault that may pass
its rows are marked ``failed`` with ``TRANSIENT_PREFIX`` and the sweep sends them
again. A bad image is marked ``failed`` once, by the pipeline, and never retried.
"""

from __future__ import annotations

import logging
from typing import Any

import django

from . import worker
from .conf import semantic_settings
from .dispatch import DJANGO_TASKS, register_sender
from .pipeline.claims import claim_token
from .pipeline.failures import mark_transient_failure
from .sweep import sweep as run_sweep
from .task_body import run_embed_task

if django.VERSION >= (6, 0):
    from django.tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, task, task_backends
    from django.tasks.backends.dummy import DummyBackend
    from django.tasks.backends.immediate import ImmediateBackend
else:  # the backport, same API
    from django_tasks import DEFAULT_TASK_QUEUE_NAME, TaskContext, task, task_backends  # type: ignore[assignment,no-redef]
    from django_tasks.backends.dummy import DummyBackend  # type: ignore[assignment]
    from django_tasks.backends.immediate import ImmediateBackend  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: Backends that run a task in the process that enqueues it, or never: not a background engine.
FOREGROUND_BACKENDS = (ImmediateBackend, DummyBackend)


def queue_name(backend: Any) -> str:
    """``QUEUE`` when the backend accepts it (listed in its ``QUEUES``, or no list), else its default queue."""
    wanted = semantic_settings.QUEUE
    return wanted if not backend.queues or wanted in backend.queues else DEFAULT_TASK_QUEUE_NAME


def declared_queue() -> str:
    """The queue the tasks are declared on, which the framework checks against the default backend's
    ``QUEUES`` right here, at import: the default queue where that backend takes it (as before), else
    ``QUEUE`` (a list of the embedding queue alone is enough). Each send picks the queue again."""
    try:
        queues = task_backends["default"].queues
    except Exception:  # noqa: BLE001 - a broken TASKS setting: the declaration reports it
        return DEFAULT_TASK_QUEUE_NAME
    if not queues or DEFAULT_TASK_QUEUE_NAME in queues or semantic_settings.QUEUE not in queues:
        return DEFAULT_TASK_QUEUE_NAME
    return str(semantic_settings.QUEUE)


@task(takes_context=True, queue_name=declared_queue())
def embed_rows(
    context: TaskContext, model_label: str, pks: list[str], field: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Embed ``model_label`` rows ``pks`` (plus other waiting rows, to fill a batch)."""
    if worker.state["threads"] is None and runs_in_background():  # a worker process: size torch once
        worker.state["threads"] = worker.configure_threads(1)

    def for_the_sweep(model: Any, claimed: list[Any], exc: Exception) -> None:  # no retries here
        mark_transient_failure(model, claimed, field, exc)

    token = claim_token(f"tasks-{context.task_result.id}")
    return run_embed_task(model_label, pks, token, field=field, force=force, on_transient=for_the_sweep)


@task(queue_name=declared_queue())
def sweep(pending_timeout: float | None = None) -> dict[str, int]:
    """Send again rows whose work was lost, failed for a passing reason, or came from another encoder."""
    return run_sweep(pending_timeout=pending_timeout).queued


def runs_in_background() -> bool:
    """Does the default task backend run tasks outside the process that enqueues them?"""
    try:
        backend = task_backends["default"]
    except Exception:  # noqa: BLE001 - a broken TASKS setting: not an engine to choose by itself
        logger.exception("The default task backend could not be loaded.")
        return False
    return not isinstance(backend, FOREGROUND_BACKENDS)


class TaskFrameworkSender:
    """Dispatch's sender for ``ASYNC`` ``"django_tasks"``: tasks on the default task backend."""

    def background(self) -> bool:
        return runs_in_background()

    def send(self, model_label: str, chunks: list[list[str]], *, field: str | None, force: bool) -> int:
        queued = embed_rows.using(queue_name=queue_name(embed_rows.get_backend()))
        for chunk in chunks:
            queued.enqueue(model_label, chunk, field=field, force=force)
        return len(chunks)


def register() -> None:
    """Offer this engine to dispatch (``apps.py`` calls it at ready)."""
    register_sender(DJANGO_TASKS, TaskFrameworkSender())
