"""Search models loaded once in a server's master process, before it forks its workers.

With gunicorn's ``preload_app`` the master imports the site and forks every worker from
itself: what it loaded, each worker has at once (a restarted worker too) and shares with the
others until written (copy-on-write). ``load_before_fork()`` loads there what searches
need: the query text model (ONNX Runtime, or torch) for words, the CNN and the class vectors
for search by photo. ``after_fork()`` then gives each worker its share of torch threads.

Fork safety: a thread pool does not survive a fork (the child has the pool's state but not
its threads), so nothing may start one before the fork. GNU OpenMP, torch's CPU thread pool,
hangs in a child that runs torch with several threads after its parent did (measured: the
child's first image never finished); ONNX Runtime's session threads would be missing the same
way. So the master runs torch with one thread and makes the ONNX Runtime session with one
thread (its count follows torch's); a worker may then raise torch's count (measured: a child
given 2 threads after a 1-thread parent runs the CNN). Search words then run in one ONNX
Runtime thread per request (a few milliseconds); a server gets its parallelism from workers
and threads.

Exit: a process forked from one that had set up the site and the encoder hangs at its normal
exit once it has used ONNX Runtime (whether the session was made before or after the fork),
in the library's C++ destructors (a ``pthread_cond_destroy`` that never returns); under
gunicorn the master then saw each worker die of SIGABRT seconds after SIGTERM. A process that
was not forked exits cleanly. So a worker ends the way ``multiprocessing`` ends its forked
children: ``exit_worker()`` closes the database connections, flushes the standard streams and
calls ``os._exit`` with the worker's status (``tests/test_startup.py`` checks the exits).
"""

from __future__ import annotations

import os
import sys
import time


def load_before_fork() -> list[str]:
    """Load every field's encoder for searching, single-threaded; one line per encoder.

    Call it in the master process once the site is imported and before any fork (gunicorn:
    ``when_ready`` with ``preload_app = True``). Database connections opened meanwhile (the site's
    own queries at import too) are closed, and Django's connection pool with them: a connection
    must not be shared by forked processes.
    """
    import torch
    from PIL import Image

    from .worker import close_connections, field_encoders

    torch.set_num_threads(1)  # no OpenMP team before the fork; the ONNX Runtime session gets 1 thread
    loaded = []
    for encoder in field_encoders():
        started = time.perf_counter()
        encoder.encode_queries(["a photo"])  # the query model: ONNX Runtime's session, or torch's MiniLM
        try:
            encoder.encode_images([Image.new("RGB", (64, 64))])  # the CNN and the class vectors
            name = encoder.identity
        except ValueError as exc:  # an unreadable learned bridge (E016): searches need none, serve them
            encoder.encode_visual([Image.new("RGB", (64, 64))])  # the CNN, for search by photo
            name = f"{type(encoder).__name__} (cannot embed: {exc})"
        loaded.append(f"{name} loaded in {time.perf_counter() - started:.1f} s")
    close_connections()
    return loaded


def worker_threads(workers: int) -> int:
    """A worker's share of the cores: ``cores // workers``, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))  # the affinity mask: a container's cpuset counts
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def after_fork(workers: int) -> int:
    """In each forked worker: torch gets ``worker_threads(workers)`` threads; returns that.

    Imports nothing of Django's: it may run before the site is imported (no ``preload_app``).
    """
    import torch

    threads = worker_threads(workers)
    torch.set_num_threads(threads)
    return threads


def exit_worker() -> None:
    """End this forked worker at once with the status it is exiting with (gunicorn: ``worker_exit``).

    Called while the worker's ``SystemExit`` propagates (its status is read from it; any
    other exception gives 1). Skips the interpreter's shutdown: atexit handlers and C++
    destructors of state copied from the master, which may hang (see above).
    """
    exc = sys.exc_info()[1]
    code = exc.code if isinstance(exc, SystemExit) else (1 if exc is not None else 0)
    status = code if isinstance(code, int) else (0 if code is None else 1)
    try:
        from django.db import connections

        connections.close_all()
    except Exception:  # noqa: BLE001, S110 - Django not set up here: nothing to close
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream
            pass
    os._exit(status)
