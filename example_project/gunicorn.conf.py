"""gunicorn settings of the example site: serving it as a production site would be.

    cd example_project && ../.venv/bin/gunicorn       # reads ./gunicorn.conf.py

Options given on the command line or in ``GUNICORN_CMD_ARGS`` win over this file, e.g.
``GUNICORN_CMD_ARGS="--bind 0.0.0.0:8000 --workers 4"``; ``WEB_CONCURRENCY`` sets the workers.
Deployment notes: docs/installation.md#serving-with-gunicorn; measured under load with
``benchmarks/load.py`` (docs/performance.md#under-load-gunicorn-and-32-clients).

* ``preload_app``: the master imports the site and loads the search models once
  (``when_ready``), then forks the workers, which share them and answer at once: none loads
  a model, so gunicorn's timeout never meets a model load (it still must not meet a cold
  model cache in the master: run ``manage.py semantic_images_prepare`` at deploy time).
* Workers: the cores (at least 2), each with 4 threads (``gthread``): a search is a few
  milliseconds of CPU for words and 50-200 ms for a photo, plus the database; threads keep a
  worker busy while another request waits on PostgreSQL. Each worker gives torch its share of
  the cores (``post_fork``).
* The example settings are made production-like before the import: ``DEBUG`` off (so neither
  ``/media/`` nor ``/static/`` are served by Django: put a web server or a CDN in front, or set
  ``DJANGO_DEBUG=1`` to try it locally) and database connections kept for 10 minutes.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "600")

wsgi_app = "example_project.wsgi:application"
bind = "127.0.0.1:8000"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, CORES)))
worker_class = "gthread"
threads = 4
preload_app = os.environ.get("GUNICORN_PRELOAD", "1") != "0"  # GUNICORN_PRELOAD=0: each worker imports the site
# Seconds a worker may go silent before the master kills it; its models come from the master,
# so a worker's start is quick.
timeout = 30
graceful_timeout = 30  # SIGTERM: requests in progress get this long to finish
keepalive = 5  # seconds an idle keep-alive connection is held (behind a proxy, above its own)
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat files off the disk
errorlog = "-"


def when_ready(server):
    """Master, before the first fork: load the search models once (single-threaded: fork-safe)."""
    if not server.cfg.preload_app:  # each worker loads them on its first search
        return
    from django_semantic_images.prefork import load_before_fork

    for line in load_before_fork():
        server.log.info("Semantic images: %s", line)


def post_fork(server, worker):
    """Each worker: torch gets its share of the cores."""
    from django_semantic_images.prefork import after_fork

    threads = after_fork(server.cfg.workers)
    server.log.info("Worker %s: %s torch thread(s)", worker.pid, threads)


def worker_exit(server, worker):
    """Each worker, last: ``os._exit`` with its status, as multiprocessing ends forked children
    (ONNX Runtime's destructors hang in a worker forked from a preloaded master)."""
    from django_semantic_images.prefork import exit_worker

    exit_worker()
