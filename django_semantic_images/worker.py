"""Celery worker set-up: CPU threads and model loading, once per worker process.

Nothing here runs when Django or the app is imported: the handlers fire only in
a Celery worker. ``worker_init`` (main process, before the pool starts) notes the
worker's concurrency and whether it consumes ``SEMANTIC_IMAGES["QUEUE"]``;
``worker_process_init`` (each pool process) sets torch's thread count and starts
loading the encoder in a background thread, so the process reports ready at once
(Celery kills a pool process that takes over ``worker_proc_alive_timeout``, 4 s,
to start) and its first task waits on the encoder's load lock instead.
``worker_ready`` (main process, once it consumes) runs the sweep, so work lost
while no worker was running is sent again as soon as one is; it then closes its database
connections and pool, which the pool processes forked later would otherwise share.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready
from django.db import connections

from .conf import semantic_settings
from .fields import models_with_embeddings, own_embedding_fields

logger = logging.getLogger(__name__)

#: What this worker process knows about itself (reported by the ``semantic_images.worker_info`` task).
state: dict[str, Any] = {"concurrency": 1, "embeds": True, "threads": None, "loaded_at": None, "load_seconds": None}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def torch_threads(concurrency: int) -> int:
    """``WORKER_THREADS``, else this process's share of the cores it is given, less one.

    The core left over decodes the next batch while torch encodes this one. More
    torch threads than free cores is far worse than fewer: OpenMP threads that
    wait on each other spin (measured in docs/performance.md).
    """
    configured = semantic_settings.WORKER_THREADS
    if configured:
        return int(configured)
    share = available_cores() // max(1, concurrency)
    return max(1, share - 1)


def configure_threads(concurrency: int = 1) -> int:
    """Set torch's intra-op thread count for this process; returns it."""
    threads = torch_threads(concurrency)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return threads


@worker_init.connect
def on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    """Main worker process: remember the pool size and whether this worker embeds at all."""
    concurrency = getattr(sender, "concurrency", 1)
    state["concurrency"] = concurrency if isinstance(concurrency, int) and concurrency > 0 else 1
    try:
        queues = sender.app.amqp.queues
        consumed = queues.consume_from if queues.consume_from is not None else queues
        state["embeds"] = semantic_settings.QUEUE in consumed
    except AttributeError:  # an unusual worker object: assume it embeds
        state["embeds"] = True


@worker_process_init.connect
def on_worker_process_init(**kwargs: Any) -> None:
    """Each pool process: size torch's thread pool, then load the models in the background."""
    if not state["embeds"]:
        return
    state["threads"] = configure_threads(state["concurrency"])
    threading.Thread(target=preload, name="semantic-images-load", daemon=True).start()


@worker_ready.connect
def on_worker_ready(**kwargs: Any) -> None:
    """A worker that embeds sweeps once it consumes: lost work comes back without waiting for beat."""
    if state["embeds"]:
        threading.Thread(target=sweep_now, name="semantic-images-sweep", daemon=True).start()


def sweep_now() -> None:
    """Run the sweep in this thread (its own database connection, closed afterwards)."""
    from .sweep import sweep

    try:
        sweep()
    except Exception:  # noqa: BLE001 - the periodic sweep tries again
        logger.exception("The semantic images sweep at worker start failed.")
    finally:
        close_connections()  # this main process forks pool processes later (replacing one that died)


def close_connections() -> None:
    """Close this process's database connections and their pools (Django 5.1+ ``OPTIONS["pool"]``).

    Before a fork: ``connections.close_all()`` hands a pooled connection back to its pool, which
    stays open, shared by the process's threads, with its connections and its threads. Processes
    forked from it then talk to PostgreSQL on the same sockets at once (one reads the other's
    rows, or waits for ever) and have none of its threads. A closed pool opens at the next query.
    """
    connections.close_all()
    for connection in connections.all():
        if connection.settings_dict.get("OPTIONS", {}).get("pool") and hasattr(connection, "close_pool"):
            connection.close_pool()


def field_encoders() -> list[Any]:
    """The encoders of every ImageEmbeddingField (one per distinct recipe)."""
    found: dict[int, Any] = {}
    for model in models_with_embeddings():
        for field in own_embedding_fields(model):
            encoder = field.get_encoder()
            found[id(encoder)] = encoder
    return list(found.values())


def describe(encoder: Any) -> str:
    """``<identity> on <device>``, or why it cannot embed (an unreadable learned bridge, E016)."""
    try:
        return f"{encoder.identity} on {encoder.device}"
    except ValueError as exc:
        return f"{type(encoder).__name__} on {encoder.device} (cannot embed: {exc})"


def preload() -> None:
    """Load the fields' encoders now (once per process; later calls return at once)."""
    started = time.perf_counter()
    try:
        encoders = field_encoders()
        for encoder in encoders:
            encoder.ensure_loaded()
    except Exception:  # noqa: BLE001 - the first task will raise the same error with its context
        logger.exception("Loading the semantic images encoder failed.")
        return
    state["load_seconds"] = round(time.perf_counter() - started, 2)
    state["loaded_at"] = time.time()
    logger.info(
        "Semantic images encoders %s loaded in %.1f s (pid %s, %s torch threads).",
        ", ".join(describe(e) for e in encoders),
        state["load_seconds"],
        os.getpid(),
        state["threads"],
    )
