"""Whether the search database (``SEARCH_DATABASE``, a replica) can be reached.

A replica that is down would fail every search (an ``OperationalError``, a 500) although the
primary holds the same rows. Before a search opens its connection to the replica, the replica
is tried; one that cannot be reached is logged and left out for ``RETRY_AFTER`` seconds, during
which searches read the primary. A connection kept from an earlier request (``CONN_MAX_AGE``) is
checked first, once a request (``SELECT 1``, as Django's ``CONN_HEALTH_CHECKS``): one the standby
dropped meanwhile (stopped, restarted) is closed and a new one tried. A connection that breaks
after this check fails its query as any connection does; Django closes it at the end of the
request, and the next search tries the replica again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.exceptions import SynchronousOnlyOperation
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, models, router

from .conf import semantic_settings

logger = logging.getLogger(__name__)

#: Seconds a search database that could not be reached is left out.
RETRY_AFTER = 30.0

_down_until: dict[str, float] = {}


def reachable(alias: str) -> bool:
    """Whether searches may read ``alias``: connected already, or a connection opens now."""
    until = _down_until.get(alias)
    if until is not None and time.monotonic() < until:
        return False
    connection = connections[alias]
    try:
        if connection.connection is not None and still_usable(connection):
            return True
        connection.ensure_connection()
    except SynchronousOnlyOperation:  # an event loop's thread: the query's own connection will say
        return True
    except DatabaseError as exc:
        logger.warning(
            "The search database %r cannot be reached (%s); searches read the primary for %.0f s.",
            alias,
            str(exc).strip(),
            RETRY_AFTER,
        )
        _down_until[alias] = time.monotonic() + RETRY_AFTER
        return False
    _down_until.pop(alias, None)
    return True


def search_alias(queryset: models.QuerySet) -> str | None:
    """``SEARCH_DATABASE`` where a search of ``queryset`` reads from it, else None: the setting
    set, ``queryset`` neither pinned to an alias (an explicit ``using()`` wins) nor for a write
    (``select_for_update()``, ``update()``), its model one whose reads the routers leave on the
    default alias (the one the replica copies), and the replica reachable."""
    alias = semantic_settings.SEARCH_DATABASE
    state: Any = queryset  # _for_write, _db and _hints are QuerySet's, not in django-stubs
    if not alias or state._for_write or state._db is not None:
        return None
    if router.db_for_read(queryset.model, **state._hints) != DEFAULT_DB_ALIAS:
        return None
    if not reachable(str(alias)):  # a replica that is down: the primary holds the same rows
        return None
    return str(alias)


def still_usable(connection: Any) -> bool:
    """Is this open connection still answering? Asked once a request (Django's health check flag,
    reset at each request's start and end), never inside a transaction; one that is not is closed."""
    if connection.in_atomic_block or connection.health_check_done:
        return True
    usable = bool(connection.is_usable())
    connection.health_check_done = True
    if not usable:
        connection.close()
    return usable


def forget() -> None:
    """Forget which search databases were found down (tests; a site after fixing the replica)."""
    _down_until.clear()
