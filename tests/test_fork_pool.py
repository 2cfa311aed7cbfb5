"""Django's connection pool (``OPTIONS["pool"]``, Django 5.1+) around the forks of a server's master.

The pool is shared by the process's threads and outlives ``connections.close_all()``, which hands
connections back to it: a process forked while it is open inherits its connections (sockets two
processes then talk on at once) and its state without its threads. The master of gunicorn
(``load_before_fork``) and of a Celery worker (the sweep at ``worker_ready``) must close it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.db import connection

from .celery_worker import database_url
from .test_startup import ENV, ROOT

# A master process: what it does before forking (argv[1]), then two forked workers that query at once.
MASTER = """
import json, os, signal, sys, threading
import django
django.setup()
from django.db import connection, connections

if sys.argv[1] == "preload":  # gunicorn's when_ready, after the site's own query at import
    from django_semantic_images.prefork import load_before_fork

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    load_before_fork()
else:  # a Celery worker's main process once it consumes: the sweep, in its thread
    from django_semantic_images import worker

    worker.state["embeds"] = True
    worker.on_worker_ready()
    for thread in threading.enumerate():
        if thread.name == "semantic-images-sweep":
            thread.join()
pools = {alias: not pool.closed for alias, pool in type(connections["default"])._connection_pools.items()}

def child(n):
    signal.alarm(20)  # stuck on a connection another process uses: killed
    wrong = 0
    try:
        for i in range(200):
            with connection.cursor() as cursor:
                cursor.execute("SELECT %s::int", [n * 1000 + i])
                wrong += cursor.fetchone()[0] != n * 1000 + i
            connections.close_all()
        return {"wrong": wrong, "error": None}
    except Exception as exc:
        return {"wrong": wrong, "error": repr(exc)[:300]}

children = []
for n in range(2):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(child(n)).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
results = []
for pid, read in children:
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    results.append(json.loads(answer) if answer else {"killed": status})
print(json.dumps({"open_pools": pools, "children": results}))
"""


@pytest.fixture
def pooled_database(django_db_setup, django_db_blocker) -> dict[str, str]:
    """The environment of a process of the test site with Django's connection pool on."""
    with django_db_blocker.unblock():
        url = database_url(connection.settings_dict)
    return {**ENV, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": url, "SEMANTIC_IMAGES_TEST_POOL": "1"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("before_fork", ["preload", "sweep"])
def test_a_master_forks_its_workers_with_no_pooled_connection_of_its_own(pooled_database, before_fork):
    """Two workers forked after the master's preload (gunicorn) or start-up sweep (Celery) each get
    their own answers: with the master's pool left open, they shared its connections (one got the
    other's rows, the other hung)."""
    proc = subprocess.run(
        [sys.executable, "-c", MASTER, before_fork],
        env=pooled_database,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not any(report["open_pools"].values()), report
    assert report["children"] == [{"wrong": 0, "error": None}] * 2, report
