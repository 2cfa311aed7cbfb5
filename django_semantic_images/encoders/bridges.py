"""Learned bridges: a linear map from CNN visual vectors into the text space, blended with ConSE.

A bridge is a small ``.npz`` artefact (weights, bias, blend weight, metadata),
named by a hash of its content. It is trained by ``manage.py
semantic_images_train_bridge`` on a site's own (image, caption) pairs, stored in a
``BridgeStore`` (``SEMANTIC_IMAGES["BRIDGE_DIR"]``, by default
``MEDIA_ROOT/semantic_images``) and picked up by ``ConSEEncoder``, whose identity
then names the bridge's version, so every vector made without it is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np

from .base import normalize_parts
from .cache import file_lock, temporary_beside
from .networks import DEFAULT_CNN

POINTER = "current.json"
#: The file ``BridgeStore.locked`` locks: installs in several processes take turns.
LOCK = ".lock"
#: What ``current_version`` says of a pointer that cannot be read.
UNREADABLE = "unreadable"


class BridgeChanged(ValueError):
    """Another bridge was installed than the one a candidate was compared with."""

    def __init__(self, found: str | None, expected: str | None) -> None:
        self.found, self.expected = found, expected
        super().__init__(
            f"Bridge {found or '(none)'} was installed meanwhile, not {expected or '(none)'}: "
            "the candidate was not compared with it."
        )


VISUAL_TRANSFORMS = ("", "sqrt")


def transform_visual(visual: np.ndarray, transform: str = "") -> np.ndarray:
    """Visual vectors as a bridge reads them: L2-normalised; with ``"sqrt"``, the square roots of those
    (CNN features are non-negative after ReLU6; negatives are clipped), normalised again. The square
    root is scale-free, so it gives the same for the stored (normalised) vectors as for the raw features."""
    if transform not in VISUAL_TRANSFORMS:
        raise ValueError(f"Unknown visual transform {transform!r}; expected one of {VISUAL_TRANSFORMS}.")
    x = normalize_parts(visual, None)
    if transform == "sqrt":
        x = normalize_parts(np.sqrt(np.clip(x, 0.0, None)), None)
    return x


@dataclass
class LearnedBridge:
    """``semantic = normalise(conse_weight * ConSE + (1 - conse_weight) * normalise(visual @ W + b))``.

    ``visual`` is the L2-normalised CNN vector (the one stored as ``embedding_visual``),
    so a bridge can be trained from the database without running the CNN again.
    """

    weight: np.ndarray  # (visual_dim, text_dim)
    bias: np.ndarray  # (text_dim,)
    conse_weight: float = 0.2
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Content hash of what makes its vectors: a retrained bridge, or the same weights read another
        way (``visual_transform``, ``parts``), is a new version and makes vectors stale. Those two are
        hashed only when set, so a bridge without them keeps the version it had before they were."""
        h = hashlib.sha1(np.ascontiguousarray(self.weight, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.bias, np.float32).tobytes())
        h.update(f"{self.conse_weight:.4f}".encode())
        if self.visual_transform:
            h.update(f"|visual_transform={self.visual_transform}".encode())
        if self.parts:
            h.update(f"|parts={','.join(str(p) for p in self.parts)}".encode())
        return h.hexdigest()[:10]

    @property
    def parts(self) -> tuple[int, ...] | None:
        """The text space's pieces normalised apart (``meta["parts"]``, an encoder's
        ``semantic_parts`` at training: ``RoutedConSEEncoder``'s two text models), or None."""
        parts = self.meta.get("parts")
        return tuple(int(p) for p in parts) if parts else None

    @property
    def cnn(self) -> str:
        """The network whose features it was trained on (``meta["cnn"]``, an encoder's ``cnn``
        option); a bridge saved before that option existed was trained on Lite0's."""
        return str(self.meta.get("cnn") or DEFAULT_CNN)

    @property
    def text_models(self) -> tuple[str, ...] | None:
        """The identities of the text models whose space it maps into (``meta["text_models"]``, an
        encoder's ``text_identities``); None for a bridge saved before they were recorded."""
        found = self.meta.get("text_models")
        return tuple(str(t) for t in found) if found else None

    @property
    def visual_transform(self) -> str:
        """``meta["visual_transform"]``: ``"sqrt"`` maps the square roots of the (normalised, non-negative)
        visual vectors, renormalised; ``""`` (bridges trained before the option) the vectors themselves."""
        return str(self.meta.get("visual_transform") or "")

    def project(self, visual: np.ndarray) -> np.ndarray:
        """Visual vectors (normalised here too) into the text space."""
        return normalize_parts(transform_visual(visual, self.visual_transform) @ self.weight + self.bias, self.parts)

    def apply(self, visual: np.ndarray, conse: np.ndarray) -> np.ndarray:
        """The blend with ConSE vectors of the same images (piece by piece with ``parts``)."""
        w = self.conse_weight
        parts = self.parts
        return normalize_parts(w * normalize_parts(conse, parts) + (1.0 - w) * self.project(visual), parts)

    def save(self, path: str | Path) -> Path:
        """Write the bridge to ``path`` atomically: into a file beside it, renamed into place, so a
        process reading ``path`` meanwhile (the pointer may name it already) sees it whole or not."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_beside(path)  # the umask's mode: processes of other users read bridges too
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    weight=self.weight.astype(np.float32),
                    bias=self.bias.astype(np.float32),
                    conse_weight=np.float32(self.conse_weight),
                    meta=np.array(json.dumps(self.meta)),
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> LearnedBridge:
        """The bridge saved at ``path``; a ValueError naming it for any file that is not one (missing,
        cut short, not a zip, arrays missing or of shapes that do not make a map, values ``problem()`` names)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                bridge = cls(
                    weight=data["weight"],
                    bias=data["bias"],
                    conse_weight=float(data["conse_weight"]),
                    meta=json.loads(str(data["meta"])),
                )
            problem = bridge.problem()  # in the try: odd metadata (``parts`` of words) is a TypeError
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{path} is not a readable bridge file: {type(exc).__name__}: {exc}") from exc
        if problem is not None:
            raise ValueError(f"{path} is not a readable bridge file: {problem}.")
        return bridge

    def problem(self) -> str | None:
        """Why these arrays make no bridge (shapes, a dtype that is not a real number, NaN or infinity,
        a blend weight outside [0, 1], an unknown visual transform); None when they make one. Applied,
        such a bridge would fail at embed time or put NaN into every semantic vector."""
        weight, bias = self.weight, self.bias
        if not isinstance(self.meta, dict):
            return f"its metadata is {type(self.meta).__name__}, not an object"
        if weight.ndim != 2 or bias.shape != (weight.shape[1],):
            return f"weight {weight.shape}, bias {bias.shape} make no linear map"
        for name, values in (("weight", weight), ("bias", bias)):
            if values.dtype.kind not in "fiu":
                return f"{name} holds {values.dtype} values, not real numbers"
            with np.errstate(over="ignore"):
                finite = np.isfinite(values.astype(np.float32)).all()
            if not finite:
                return f"{name} holds NaN or infinite values (or values beyond float32's range)"
        if not 0.0 <= self.conse_weight <= 1.0:
            return f"conse_weight {self.conse_weight!r} is not within [0, 1]"
        if self.visual_transform not in VISUAL_TRANSFORMS:
            return f"unknown visual_transform {self.visual_transform!r}"
        if self.parts and sum(self.parts) != weight.shape[1]:
            return f"its parts {self.parts} do not add up to its {weight.shape[1]}-d text vectors"
        return None


class BridgeStore:
    """A folder of bridge versions (``bridge-<version>.npz``) and a pointer to the one in use.

    Installing writes the file, then replaces ``current.json``, each atomically (written beside,
    renamed into place: two trainings at once leave one whole pointer and whole files); encoders
    in other processes (Celery workers) notice the pointer change on their next batch.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def pointer(self) -> Path:
        return self.directory / POINTER

    def path_for(self, version: str) -> Path:
        return self.directory / f"bridge-{version}.npz"

    def current_info(self) -> dict[str, Any] | None:
        """The pointer's content (version, file, installed_at, metrics), or None; a ValueError for one
        that cannot be read or names no bridge file of this folder (a hand-written ``{"version": ...}``)."""
        try:
            info = json.loads(self.pointer.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.pointer} is not a readable bridge pointer: {exc}") from exc
        if not info:
            return None
        file = info.get("file") if isinstance(info, dict) else None
        if not isinstance(file, str) or Path(file).name != file or not file:
            raise ValueError(f"{self.pointer} is not a readable bridge pointer: it names no bridge file ({info!r}).")
        return info

    def current(self) -> LearnedBridge | None:
        """The bridge in use, or None when none is installed."""
        info = self.current_info()
        if not info:
            return None
        return LearnedBridge.load(self.directory / info["file"])

    def stamp(self) -> tuple[int, ...] | None:
        """Changes whenever another bridge is installed: the pointer's file (each install writes a new
        one, renamed into place) and its mtime, so two installs within the file system's time
        resolution differ too. None when none is installed."""
        try:
            found = self.pointer.stat()
        except FileNotFoundError:
            return None
        return (found.st_dev, found.st_ino, found.st_mtime_ns, found.st_size)

    def current_version(self) -> str | None:
        """The version the pointer names (None: none installed; ``"unreadable"`` for a pointer that
        cannot be read), without reading the bridge file."""
        try:
            info = self.current_info()
        except ValueError:
            return UNREADABLE
        return str(info.get("version")) if info else None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the store across processes (``.lock``), for a compare-and-install."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with file_lock(self.directory / LOCK):
            yield

    def install(
        self, bridge: LearnedBridge, metrics: dict[str, Any] | None = None, *, replaces: str | None | EllipsisType = ...
    ) -> Path:
        """Store ``bridge`` as a new version and point ``current.json`` at it.

        ``replaces``: the version the caller compared ``bridge`` with (None: none installed; left
        out: whatever is installed is replaced); when
        another is installed by then (a second training at once), nothing changes and
        ``BridgeChanged`` says which.
        """
        with self.locked():
            if not isinstance(replaces, EllipsisType):
                found = self.current_version()
                if found != replaces:
                    raise BridgeChanged(found, replaces)
            path = bridge.save(self.path_for(bridge.version))
            info = {
                "version": bridge.version,
                "file": path.name,
                "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "metrics": metrics or {},
            }
            self._write_pointer(info)
        return path

    def uninstall(self) -> None:
        """Go back to ConSE alone (the bridge files stay for a later reinstall)."""
        self.pointer.unlink(missing_ok=True)

    def versions(self) -> list[str]:
        return sorted(p.stem.removeprefix("bridge-") for p in self.directory.glob("bridge-*.npz"))

    def _write_pointer(self, info: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_beside(self.pointer)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.pointer)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def default_bridge_dir() -> Path | None:
    """``SEMANTIC_IMAGES["BRIDGE_DIR"]`` (``~`` is the home folder, as for ``MODEL_CACHE_DIR``), else
    ``MEDIA_ROOT/semantic_images`` (None without either)."""
    from django.conf import settings

    from ..conf import semantic_settings

    if semantic_settings.BRIDGE_DIR:
        return Path(semantic_settings.BRIDGE_DIR).expanduser()
    media = getattr(settings, "MEDIA_ROOT", "")
    return Path(media) / "semantic_images" if media else None
