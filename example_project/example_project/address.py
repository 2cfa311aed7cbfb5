"""The demos' serving address, checked before they set anything up.

``runserver`` finds a port in use only once the demo has migrated and loaded its photos, and then
ends the process with ``os._exit(1)``: no exit handler runs, so the embedded PostgreSQL that the
settings started kept running (example_project/database.py). A ``CommandError`` ends it normally.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Mapping

from django.core.management.base import CommandError
from django.core.management.commands.runserver import naiveip_re


def check_free(addrport: str) -> None:
    """Raise ``CommandError`` when ``runserver addrport`` could not listen there (a port in use, an
    address not this machine's); an address ``runserver`` cannot read is left for it to name."""
    found = re.match(naiveip_re, addrport)
    if found is None:
        return
    addr, port = found["addr"] or "127.0.0.1", int(found["port"])
    if port > 65535:
        raise CommandError(f"Cannot serve on {addrport}: a port is a number from 0 to 65535.")
    addr = "0.0.0.0" if addr == "0" else addr.strip("[]")
    family = socket.AF_INET6 if found["ipv6"] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver: a port in TIME_WAIT is free
        try:
            probe.bind((addr, port))
        except OSError as exc:
            why = str(getattr(exc, "strerror", None) or exc).rstrip(".")
            stop = "stop the program that uses it (an earlier demo?) or " if exc.errno == errno.EADDRINUSE else ""
            raise CommandError(
                f"Cannot serve on {addrport}: {why}; {stop}choose another address: --addrport 127.0.0.1:8001 "
                "(HOST=127.0.0.1:8001 for make)."
            ) from exc


def site_url(addrport: str) -> str:
    """The address ``runserver addrport`` serves, to print: ``8001`` serves ``http://127.0.0.1:8001``,
    ``0:8001`` every interface (``0.0.0.0``), as runserver reads them."""
    found = re.match(naiveip_re, addrport)
    if found is None:
        return f"http://{addrport}"
    addr = found["addr"] or "127.0.0.1"
    return f"http://{'0.0.0.0' if addr == '0' else addr}:{found['port']}"


def admin_base_url(addrport: str, environ: Mapping[str, str] = os.environ) -> str:
    """The Wagtail example's ``WAGTAILADMIN_BASE_URL`` (the site address in Wagtail's emails and
    previews) when it serves at ``addrport``: the ``WAGTAILADMIN_BASE_URL`` environment variable when
    set (a proxy's public address), else the address served (``site_url``), not a fixed port 8000."""
    return environ.get("WAGTAILADMIN_BASE_URL") or site_url(addrport)
