"""The example sites' ``SECRET_KEY``: ``DJANGO_SECRET_KEY`` when set, else a random key of this
checkout's own, made on first use in a file beside the site (git ignores it).

The key is never one written in the repository: a key anybody can read lets them sign what Django
signs with it (the messages cookie, whose messages may be marked safe HTML, among others), and the
example site is also served as a production site would be (``gunicorn.conf.py``).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def secret_key(path: Path) -> str:
    """``DJANGO_SECRET_KEY``, else the key kept in ``path`` (made there, readable by its owner only,
    when missing; processes starting together all read the one that was made first)."""
    given = os.environ.get("DJANGO_SECRET_KEY")
    if given:
        return given
    try:
        return read_key(path)
    except FileNotFoundError:
        pass
    try:
        handle, draft = tempfile.mkstemp(dir=path.parent, prefix=".secret_key-")  # mode 0600
    except OSError as exc:
        raise ImproperlyConfigured(f"Cannot keep a secret key in {path} ({exc}): set DJANGO_SECRET_KEY.") from None
    try:
        with os.fdopen(handle, "w") as out:
            out.write(secrets.token_urlsafe(50))
        try:
            os.link(draft, path)  # whole or absent: never a half-written key
        except FileExistsError:  # another process made it meanwhile
            pass
    finally:
        os.unlink(draft)
    return read_key(path)


def read_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it (a new key is made) or set DJANGO_SECRET_KEY.")
    return key
