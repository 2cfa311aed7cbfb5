"""Settings of the Celery worker processes that the integration tests start.

The tests' own settings (same database server and media folder, passed through
the environment), plus the broker, result backend and SEMANTIC_IMAGES of the test.
"""

import json
import os

from tests.settings import *  # noqa: F403

CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND")
CELERY_BROKER_TRANSPORT_OPTIONS = json.loads(os.environ.get("CELERY_BROKER_TRANSPORT_OPTIONS", "{}"))
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = json.loads(os.environ.get("CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS", "{}"))
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
SEMANTIC_IMAGES = json.loads(os.environ.get("SEMANTIC_IMAGES_JSON", "{}"))
CELERY_BEAT_SCHEDULE = json.loads(os.environ.get("CELERY_BEAT_SCHEDULE_JSON", "{}"))
# Persistent connections, as a production worker has them (the fault tests: tests/test_worker_faults.py).
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("SEMANTIC_IMAGES_TEST_CONN_MAX_AGE", "0"))  # noqa: F405
