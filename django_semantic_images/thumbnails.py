"""Thumbnails of stored images, made by sorl-thumbnail (the ``thumbnails`` extra) when the site
installs it: the API's ``thumbnail_url``, the admin's thumbnails and the example's public page.

A thumbnail fits in a ``THUMBNAIL_SIZE`` square (never enlarged) and is made on first use, then
served from storage: sorl-thumbnail's key-value store (by default its database table behind
Django's cache) remembers it. Without ``sorl.thumbnail`` in ``INSTALLED_APPS`` there are none.

Asking sorl-thumbnail costs a few hundred microseconds even for a stored thumbnail (it builds
the key from the options and storage, reads its store and deserializes the entry), so the
thumbnail's name is also kept in Django's cache under one key per image: one cache read per
page of results (``thumbnail_urls``). A file that gives no thumbnail (missing, not an image) is remembered for
``RETRY_AFTER`` seconds and not read again on every listing.

Files of different storages may share a name (``photos/a.jpg`` in the default storage and in a
model's own ``FileSystemStorage(location=PRIVATE_ROOT)``): both keys name the storage
(``storage_identity``), and a storage that sorl-thumbnail would know only by its class (one that
is not an alias of ``STORAGES``) is named in the thumbnail's options too, so each file gets its own
thumbnail, never another storage's picture.

A file whose kind can be transparent keeps its transparency: a ``.png``, ``.gif``, ``.bmp`` or
``.tif(f)`` gets a PNG thumbnail and a ``.webp`` or ``.avif`` a WebP one (``TRANSPARENT_FORMATS``),
as Wagtail keeps PNG for PNG; sorl-thumbnail's ``THUMBNAIL_FORMAT`` (JPEG by default, which has no
alpha: the transparent part came out black) stays for the rest, photos, where it is the smallest.
The file name's extension decides, so a listing reads no source to choose; the format is part of
sorl-thumbnail's options, so of the thumbnail's name, and of the cache key.

A thumbnail is named after the file's name, not its content: a save that puts another file in a
model's image field (``signals.image_file_changed``, a picture written over under the same name,
or a new row's upload under the name of a deleted one, included) drops what is kept of it
(``forget_thumbnail``, wired by ``connect``). A deleted row's thumbnail is left, as sorl-thumbnail
leaves it: forgetting it would need a ``post_delete`` receiver, which makes Django load every row
of a ``QuerySet.delete()`` instead of running one ``DELETE``.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from django.apps import apps
from django.core.cache import cache
from django.core.files.storage import storages
from django.db.models import Model
from django.utils.functional import LazyObject, empty
from django.utils.module_loading import import_string

from .conf import semantic_settings
from .signals import image_file_changed

logger = logging.getLogger(__name__)

#: The app a site adds to ``INSTALLED_APPS`` to have thumbnails.
SORL_APP = "sorl.thumbnail"
#: Seconds Django's cache keeps a thumbnail's name (then sorl-thumbnail's store is asked again).
KEEP = 3600
#: Seconds a file that gave no thumbnail is not read again.
RETRY_AFTER = 300
#: What sorl-thumbnail's store says when a concurrent request has not stored the source yet.
KVSTORE_RACE = "not in kvstore"
#: The sorl-thumbnail option that names a storage it would otherwise know by its class alone.
STORAGE_OPTION = "semantic_images_storage"
#: What ``storage_identity`` prefixes to the alias of a storage configured in ``STORAGES``.
ALIAS_PREFIX = "alias:"
#: sorl-thumbnail's format of the thumbnail of a file whose kind (by extension) may be transparent:
#: PNG for the lossless kinds, WebP (lossy, with alpha, small) for WebP and AVIF.
TRANSPARENT_FORMATS = {
    ".png": "PNG",
    ".gif": "PNG",
    ".bmp": "PNG",
    ".tif": "PNG",
    ".tiff": "PNG",
    ".webp": "WEBP",
    ".avif": "WEBP",
}


def thumbnails_enabled() -> bool:
    """Whether sorl-thumbnail is installed and in ``INSTALLED_APPS`` (its store needs its table)."""
    return apps.is_installed(SORL_APP)


def thumbnail_geometry() -> str:
    """sorl-thumbnail's geometry for ``THUMBNAIL_SIZE``: fit in that square, keep the proportions."""
    size = int(semantic_settings.THUMBNAIL_SIZE)
    return f"{size}x{size}"


def thumbnail_url(file: Any) -> str | None:
    """The URL of ``file``'s thumbnail, made now if it is not stored yet; None when there are no
    thumbnails (sorl-thumbnail not installed), no file, or a file that is missing or not an image.

    A failure is logged, never raised: a listing shows the rest of its pictures.
    """
    return thumbnail_urls([file])[0]


def thumbnail_urls(files: Sequence[Any]) -> list[str | None]:
    """``thumbnail_url`` of each of ``files`` (a page of results), with one read of Django's
    cache for them all: one round trip to a shared cache (Redis, Memcached) per page, not per row."""
    if not thumbnails_enabled():
        return [None] * len(files)
    from sorl.thumbnail import default as sorl

    geometry = thumbnail_geometry()
    options = [thumbnail_options(file) if file else {} for file in files]
    keys = [cache_key(file, geometry, opts) if file else None for file, opts in zip(files, options, strict=True)]
    names: dict[str, str] = cache.get_many([key for key in keys if key is not None])
    urls: list[str | None] = []
    for file, key, opts in zip(files, keys, options, strict=True):
        if key is None:
            urls.append(None)
            continue
        name = names.get(key)
        if name is None:
            name = names[key] = make_thumbnail(file, geometry, opts)
            cache.set(key, name, KEEP if name else RETRY_AFTER)
        # The URL is asked of the storage each time: a storage's URLs may expire (signed URLs).
        urls.append(sorl.storage.url(name) if name else None)
    return urls


def thumbnail_options(file: Any) -> dict[str, Any]:
    """sorl-thumbnail's options for ``file``'s thumbnail: never enlarged, the format that keeps
    a transparent kind transparent (``TRANSPARENT_FORMATS``), the storage when sorl-thumbnail
    would know it by its class alone."""
    options: dict[str, Any] = {"upscale": False}
    image_format = TRANSPARENT_FORMATS.get(PurePosixPath(str(getattr(file, "name", file))).suffix.lower())
    if image_format:
        options["format"] = image_format
    identity = storage_identity(getattr(file, "storage", None))
    if identity and not identity.startswith(ALIAS_PREFIX):
        # sorl-thumbnail names such a storage by its class: two of them (or one and the default
        # storage) would share each name's thumbnail. The option goes into the thumbnail's name.
        options[STORAGE_OPTION] = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return options


def make_thumbnail(file: Any, geometry: str, options: dict[str, Any] | None = None) -> str:
    """The storage name of ``file``'s thumbnail from sorl-thumbnail (made if it is not stored yet),
    or "" when it cannot be made. ``options``: ``thumbnail_options(file)``, when known."""
    from sorl.thumbnail import get_thumbnail
    from sorl.thumbnail.helpers import ThumbnailError

    if options is None:
        options = thumbnail_options(file)
    for attempt in range(2):
        try:
            thumbnail = get_thumbnail(file, geometry, **dict(options))  # sorl-thumbnail adds its defaults
            break
        except ThumbnailError as exc:
            # Two requests making the same new thumbnail at once: one can find the source's
            # entry in sorl-thumbnail's store missing while the other writes it. Asked again,
            # the store has it: not a file without a thumbnail.
            if attempt == 0 and KVSTORE_RACE in str(exc):
                continue
            logger.warning("No thumbnail for %s.", getattr(file, "name", file), exc_info=True)
            return ""
        except Exception:  # noqa: BLE001 - Pillow raises many kinds on a broken file; a listing must go on
            logger.warning("No thumbnail for %s.", getattr(file, "name", file), exc_info=True)
            return ""
    # sorl-thumbnail answers a source it cannot read with an image that was never made (and
    # has no size): that is no thumbnail.
    return str(thumbnail.name) if thumbnail.size is not None else ""


def cache_key(file: Any, geometry: str, options: dict[str, Any] | None = None) -> str:
    """The key of Django's cache under which ``file``'s thumbnail name (or "" for none) is kept:
    it names the storage, the file, the geometry and the thumbnail's format (``options``:
    ``thumbnail_options(file)``, when known), so a thumbnail of another format is not reused."""
    if options is None:
        options = thumbnail_options(file)
    storage = storage_identity(getattr(file, "storage", None))
    name = f"{storage}\0{getattr(file, 'name', file)}\0{geometry}\0{options.get('format', '')}"
    return "semantic_images:thumbnail:" + hashlib.sha256(name.encode()).hexdigest()


_identities: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def storage_identity(storage: Any) -> str:
    """Which storage a file is in, the same in every process: ``"alias:<name>"`` for a storage of
    ``STORAGES`` (the default storage included), else its class and the arguments it was made
    with (``deconstruct()``: a ``FileSystemStorage``'s ``location`` and ``base_url``); "" for none."""
    if isinstance(storage, LazyObject):  # default_storage
        if storage._wrapped is empty:
            storage._setup()
        storage = storage._wrapped
    if storage is None:
        return ""
    try:
        return _identities[storage]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable
        pass
    identity = _storage_identity(storage)
    try:
        _identities[storage] = identity
    except TypeError:
        pass
    return identity


def _backend_class(path: Any) -> Any:
    try:
        return import_string(path)
    except (ImportError, TypeError, ValueError):
        return None


def _configured(alias: str) -> Any:
    try:
        return storages[alias]
    except Exception:  # noqa: BLE001 - a broken alias is not this storage; its own users will say so
        return None


def _storage_identity(storage: Any) -> str:
    cls = type(storage)
    backends: dict[str, dict[str, Any]] = storages.backends  # type: ignore[assignment]  # django-stubs: Storage
    for alias, params in backends.items():
        # As sorl-thumbnail resolves an alias: by instance, among the aliases of this class only.
        if _backend_class(params.get("BACKEND")) is cls and _configured(alias) is storage:
            return ALIAS_PREFIX + alias
    path = f"{cls.__module__}.{cls.__qualname__}"
    deconstruct = getattr(storage, "deconstruct", None)
    if deconstruct is None:
        return path
    try:
        _path, args, kwargs = deconstruct()
    except Exception:  # noqa: BLE001 - a storage that cannot say how it was made: its class
        return path
    return f"{path}{args!r}{sorted(kwargs.items(), key=lambda item: item[0])!r}"


def forget_thumbnail(file: Any) -> None:
    """Drop what is kept of ``file``'s thumbnail: its name in Django's cache, sorl-thumbnail's
    entries (the source's and its thumbnails') and the thumbnail files. The next listing makes it
    again from the file as it is now (under the same name: sorl-thumbnail names it after the
    file's name and the options). A failure is logged, never raised: the save or delete stands."""
    if not file or not thumbnails_enabled():
        return
    from sorl.thumbnail import delete

    try:
        # sorl-thumbnail first: a listing in between finds the name cached, not the old entry.
        delete(file, delete_file=False)
        cache.delete(cache_key(file, thumbnail_geometry()))
    except Exception:  # noqa: BLE001 - a store or cache that fails must not undo the save
        logger.warning("The thumbnail of %s was not forgotten.", getattr(file, "name", file), exc_info=True)


def connect(model: type[Model]) -> None:
    """Forget the thumbnail of ``model``'s image file when a save puts another file there (a new
    picture under the same name included: ``signals.image_file_changed``)."""
    if not thumbnails_enabled():
        return
    uid = f"semantic_images:thumbnails:{model._meta.label}"
    image_file_changed.connect(_image_file_changed, sender=model, dispatch_uid=uid)


def _image_file_changed(sender: type[Model], file: Any, **kwargs: Any) -> None:
    forget_thumbnail(file)
