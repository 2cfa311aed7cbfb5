"""The model cache: what is derived once from the weights, kept on disk between processes.

``SEMANTIC_IMAGES["MODEL_CACHE_DIR"]`` (default ``$XDG_CACHE_HOME/django-semantic-images``)
holds the exported ONNX query model and the ConSE class vectors. Every file is named by a
fingerprint of what it derives from, written to a temporary file and renamed into place
(``os.replace``), so a reader sees a whole file or none; a lock file keeps two processes
from building the same file at once. A warm folder is only read, so it may be mounted
read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..conf import semantic_settings

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/django-semantic-images`` (``~/.cache/...`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "django-semantic-images"


def cache_dir(configured: str | os.PathLike | None = None) -> Path:
    """``configured`` when given, else ``MODEL_CACHE_DIR``, else the default folder (``~`` expanded:
    ``Path`` keeps it as a folder named ``~`` under each process's working directory)."""
    if configured is None:
        configured = semantic_settings.MODEL_CACHE_DIR
    return Path(configured).expanduser() if configured else default_cache_dir()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (POSIX), so that one of them builds a file."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic rename is enough for correctness
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(path: Path, make: Callable[[Path], Path], lock_name: str | None = None) -> bool:
    """Make ``path`` once per machine: ``make(scratch)`` writes the file in a scratch folder beside
    ``path`` and returns it; it is moved into place atomically, under a lock between processes.

    True when this call made it; False when it was there already or another process made it
    while this one waited for the lock. The scratch folders of a build that was killed (an ONNX
    export: up to 90 MB) are removed by the next build of the same file, under the same lock.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / (lock_name or f"{path.stem}.lock")):
        if path.exists():
            return False
        prefix = f".{path.name}-building-"
        for left in path.parent.glob(f"{prefix}*"):  # only a killed build's: a live one would hold the lock
            shutil.rmtree(left, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=prefix) as scratch:
            os.replace(make(Path(scratch)), path)
    return True


def open_or_rebuild(
    path: Path, build: Callable[[], Path], open_file: Callable[[Path], Any], lock_name: str, *, made: bool
) -> Any:
    """``open_file(path)``; a file that cannot be opened (corrupt, truncated by a copy or a full disk)
    and that this process did not just make (``made``) is removed, under the builders' lock and
    only while it is still the file that failed (another process may have replaced it already),
    then ``build()`` makes it again and it is opened once more. Errors of that second try propagate."""
    seen = path.stat()
    try:
        return open_file(path)
    except Exception as exc:
        if made:
            raise
        logger.warning("%s cannot be opened (%s): making it again.", path, exc)
    with file_lock(path.parent / lock_name):
        try:
            now = path.stat()
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_ino, now.st_size, now.st_mtime_ns) == (
            seen.st_ino,
            seen.st_size,
            seen.st_mtime_ns,
        ):
            path.unlink()
    return open_file(build())


def digest(parts: Iterable[Any]) -> str:
    """A short sha256 of ``parts`` (JSON-encoded; order matters)."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_digest(folder: Path, skip: tuple[str, ...] = ("README.md",)) -> str:
    """sha256 of every file under ``folder`` (relative names and bytes; hidden files and
    ``skip`` left out): a model's identity without loading it (about 0.1 s for MiniLM)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.name in skip:
            continue
        h.update(str(rel).encode() + b"\0")
        with path.open("rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:16]


def temporary_beside(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, open for writing, with the mode the umask gives a new file
    (``mkstemp`` gives 0600: processes of another user, a site run as another user than the
    ``semantic_images_prepare`` that filled the cache, could not read it)."""
    while True:
        tmp = path.parent / f".{path.stem}-{secrets.token_hex(6)}{path.suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(tmp)
        except FileExistsError:
            continue


def save_arrays(path: Path, meta: dict[str, Any], **arrays: np.ndarray) -> None:
    """Write ``arrays`` and ``meta`` as ``.npz`` atomically (temporary file, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            payload: dict[str, Any] = {"meta": np.array(json.dumps(meta, sort_keys=True)), **arrays}
            np.savez(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_arrays(path: Path, meta: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The arrays of ``path`` when it exists, was written for ``meta`` and holds finite float
    arrays of ``shapes``; None when missing, stale or corrupt (logged; the caller rebuilds)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            found_meta = json.loads(str(data["meta"]))
            arrays = {name: np.asarray(data[name], dtype=np.float32) for name in shapes}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
        logger.warning("Rebuilding %s: the cached file is unreadable (%s).", path, exc)
        return None
    if found_meta != json.loads(json.dumps(meta, sort_keys=True)):
        logger.warning("Rebuilding %s: it was made from something else (%s).", path, found_meta)
        return None
    for name, shape in shapes.items():
        if arrays[name].shape != shape or not np.all(np.isfinite(arrays[name])):
            logger.warning("Rebuilding %s: %r is not a finite array of shape %s.", path, name, shape)
            return None
    return arrays
