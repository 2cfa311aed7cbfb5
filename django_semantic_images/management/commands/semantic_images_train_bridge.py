"""``manage.py semantic_images_train_bridge``: learn a bridge from the site's own captioned images.

Trains a linear map from the stored visual vectors into the text space on the
rows that have words (title, alt text, caption), checks it on held-out images
against the vectors in use, and only if it finds more right pictures installs
it as a new version and re-embeds every row.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from django.core.management.base import CommandError
from django.db import InterfaceError, OperationalError

from ...encoders import registry
from ...encoders.bridges import BridgeChanged, BridgeStore, LearnedBridge, default_bridge_dir
from ...encoders.conse import ConSEEncoder
from ...fields import embedding_fields, get_embedding_field
from ...pipeline.embedding import embed_instances
from ...pipeline.failures import TransientError
from ...pipeline.rows import primary_rows
from ...training import (
    CHUNK_SIZE,
    MIN_HELD_OUT,
    TrainingOptions,
    check_bridge,
    collect_captioned,
    fit_linear_bridge,
    semantic_without_words,
    split_holdout,
)
from .. import INTERRUPTED, DatabaseCommand, ProgressFile, resolve_model

FLOAT32_POSITIVE = "must be a number greater than 0 (and, as torch trains in float32, from 1.2e-38 to 3.4e38)"


#: The largest ``--chunk-size``: each chunk is a query's LIMIT, a PostgreSQL bigint.
MAX_SQL_LIMIT = 2**63 - 1
#: torch's largest seed (64 bits): one past it is a ValueError in the middle of the training.
MAX_SEED = 2**64 - 1


def float32_positive(value: float) -> bool:
    """Whether ``value`` is a positive float32 number: torch trains in float32, where a learning rate
    past its range overflows and a temperature below it divides by 0 (each a traceback, or NaN weights)."""
    return math.isfinite(value) and float(np.finfo(np.float32).tiny) <= value <= float(np.finfo(np.float32).max)


def check_options(opts: dict[str, Any]) -> None:
    """A CommandError naming the first option out of its range (before any row is read): torch
    and numpy would otherwise stop the training with a traceback, or a negative temperature
    would train a bridge that ranks backwards."""
    rules = [
        ("conse_weight", lambda v: 0.0 <= v <= 1.0, "must be within [0, 1]"),
        ("epochs", lambda v: v >= 1, "must be at least 1"),
        ("ensemble", lambda v: v >= 1, "must be at least 1"),
        ("chunk_size", lambda v: 1 <= v <= MAX_SQL_LIMIT, f"must be from 1 to {MAX_SQL_LIMIT}"),
        ("temperature", float32_positive, FLOAT32_POSITIVE),
        ("dropout", lambda v: 0.0 <= v < 1.0, "must be within [0, 1)"),
        ("learning_rate", float32_positive, FLOAT32_POSITIVE),
        ("holdout", lambda v: 0.0 < v < 1.0, "must be between 0 and 1 (a fraction of the images)"),
        ("max_holdout", lambda v: v >= MIN_HELD_OUT, f"must be at least {MIN_HELD_OUT}"),
        ("min_images", lambda v: v >= 1, "must be at least 1"),
        ("seed", lambda v: 0 <= v <= MAX_SEED, f"must be from 0 to {MAX_SEED}"),
    ]
    for name, valid, rule in rules:
        value = opts.get(name)
        if value is not None and not valid(value):  # a NaN fails every comparison
            raise CommandError(f"--{name.replace('_', '-')} {rule}, not {value!r}.")
    seed, ensemble = opts.get("seed"), opts.get("ensemble")
    if seed is not None and ensemble is not None and seed + ensemble - 1 > MAX_SEED:
        raise CommandError(
            f"--seed {seed} with --ensemble {ensemble} trains up to seed {seed + ensemble - 1}; "
            f"seeds go up to {MAX_SEED}."
        )


class Command(DatabaseCommand):
    help = (
        "Train a bridge (CNN -> text space) on this site's captioned images, install it only if it "
        "beats the one in use on held-out images, and re-embed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", help="app_label.ModelName (needed when several models have the field).")
        parser.add_argument("--field", help="Name of the ImageEmbeddingField (needed when the model has several).")
        parser.add_argument("--epochs", type=int, default=10, help="Passes over the training images (default 10).")
        parser.add_argument(
            "--temperature", type=float, default=0.05, help="Temperature of the contrastive loss (default 0.05)."
        )
        parser.add_argument(
            "--dropout", type=float, default=0.5, help="Dropout on the visual vectors while training (default 0.5)."
        )
        parser.add_argument(
            "--learning-rate", type=float, default=1e-3, help="AdamW's peak learning rate (default 1e-3)."
        )
        parser.add_argument("--conse-weight", type=float, default=0.2, help="Share of ConSE in the blend.")
        parser.add_argument(
            "--ensemble", type=int, default=1, help="Train this many bridges (seeds) and average them into one."
        )
        parser.add_argument(
            "--visual-transform",
            choices=["none", "sqrt"],
            default="none",
            help="sqrt: the bridge maps the square roots of the visual vectors (stored in the bridge file).",
        )
        parser.add_argument("--holdout", type=float, default=0.1, help="Fraction of images held out for the check.")
        parser.add_argument(
            "--max-holdout", type=int, default=1000, help="At most this many held-out images (the rest train)."
        )
        parser.add_argument("--min-images", type=int, default=50, help="Refuse to train on fewer captioned images.")
        parser.add_argument(
            "--seed", type=int, default=0, help="Seed of the first bridge (--ensemble: the next ones count on)."
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            default=CHUNK_SIZE,
            help="Rows read (and re-embedded) per query: memory stays bounded on large tables.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Train and check, install nothing.")
        parser.add_argument("--no-reembed", action="store_true", help="Install without re-embedding now.")

    def progress(self, items: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
        if self.verbosity < 1:
            return items
        from tqdm import tqdm

        # On the command's stderr, and only on a terminal (disable=None), as reindex's bar.
        return tqdm(items, total=total, desc=desc, file=ProgressFile(self.stderr), leave=False, disable=None)

    def handle(self, *args: Any, **opts: Any) -> None:
        self.verbosity = opts["verbosity"]
        self.installed: str | None = None  # the version installed, once it is
        self.installing: tuple[BridgeStore, str] | None = None  # the store and version being installed
        try:
            self.train(opts)
        except KeyboardInterrupt:  # Ctrl-C: say where it stopped (a batch under way is rolled back)
            if self.installed is None and self.installing is not None:
                store, version = self.installing  # stopped within the install: the pointer tells
                if store.current_version() == version:
                    self.installed = version
            if self.installed is None:
                raise CommandError("Interrupted: nothing was installed.", returncode=INTERRUPTED) from None
            raise CommandError(
                f"Interrupted while re-embedding: bridge {self.installed} is installed and in use; "
                "`manage.py semantic_images_reindex --stale` re-embeds the rows not done yet.",
                returncode=INTERRUPTED,
            ) from None
        except (OperationalError, InterfaceError) as exc:  # the connection lost: say what is in use
            if self.installed is None:
                raise  # DatabaseCommand: "The database failed: ..."
            raise CommandError(
                f"The database failed while re-embedding ({' '.join(str(exc).split())}): bridge {self.installed} "
                "is installed and in use; `manage.py semantic_images_reindex --stale` re-embeds the rows not done yet."
            ) from exc
        except TransientError as exc:  # the pipeline's fault that may pass (storage gone, every row refused)
            if self.installed is None:
                raise
            raise CommandError(
                f"Re-embedding stopped ({' '.join(str(exc).split())}): bridge {self.installed} is installed and in "
                "use; `manage.py semantic_images_reindex --stale` re-embeds the rows not done yet."
            ) from exc

    def train(self, opts: dict[str, Any]) -> None:
        """Train, check, install and re-embed (``handle``'s work)."""
        model = resolve_model(opts["model"])
        names = [f.name for f in embedding_fields(model)]
        if opts["field"] is None and len(names) > 1:
            raise CommandError(
                f"{model._meta.label} has several ImageEmbeddingFields ({', '.join(names)}): name one with --field."
            )
        try:
            field = get_embedding_field(model, opts["field"])
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        if not field.text_fields:
            raise CommandError(f"{model._meta.label}.{field.name} declares no text_fields to learn from.")
        check_options(opts)
        encoder = field.get_encoder()
        if not isinstance(encoder, ConSEEncoder):
            raise CommandError(
                f"{model._meta.label}.{field.name} uses the encoder {encoder.identity}: a learned bridge maps "
                "the ConSE encoder's CNN features into its text space, so it applies to ConSE fields only."
            )
        if encoder.bridge_path != "auto" and not opts["dry_run"]:
            raise CommandError(
                f"The encoder of {model._meta.label}.{field.name} has bridge={encoder.bridge_path!r}: it would not use "
                "a bridge installed in BRIDGE_DIR. Set ENCODER_OPTIONS['bridge'] to 'auto' (the default), or train "
                "with --dry-run to check a candidate without installing it."
            )
        store = self.store(writable=not opts["dry_run"])  # before the training, not after it
        try:
            holdout = float(opts["holdout"])
            # Only the visual vectors of this encoder's CNN: rows of another wait to be re-embedded.
            data = collect_captioned(
                model._default_manager.all(),
                field,
                chunk_size=opts["chunk_size"],
                image_identity=encoder.image_identity,
            )
            if len(data) < opts["min_images"]:
                raise CommandError(
                    f"Only {len(data)} images embedded by {encoder.image_identity} have words in "
                    f"{', '.join(field.text_fields)}; at least {opts['min_images']} are needed (--min-images)."
                )
            # The training part is ``data`` itself, compacted: one copy of the vectors in memory.
            train, held = split_holdout(data, holdout, seed=opts["seed"], max_held=opts["max_holdout"], in_place=True)
            del data
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

        encoder.ensure_loaded()
        self.say(f"{len(train)} images ({len(train.texts)} descriptions) to train on, {len(held)} held out.")
        text_train = encoder.encode_texts(train.texts)
        options = TrainingOptions(
            epochs=opts["epochs"],
            temperature=opts["temperature"],
            dropout=opts["dropout"],
            learning_rate=opts["learning_rate"],
            conse_weight=opts["conse_weight"],
            seed=opts["seed"],
            ensemble=opts["ensemble"],
            visual_transform="" if opts["visual_transform"] == "none" else opts["visual_transform"],
        )
        parts = encoder.semantic_parts
        try:
            weight, bias = fit_linear_bridge(
                train.visual, text_train, train.owner, options, progress=self.progress, parts=parts
            )
        except ValueError as exc:  # e.g. diverged: NaN weights
            raise CommandError(str(exc)) from exc
        meta = {
            "model": model._meta.label,
            "field": field.name,
            "images": len(train),
            "cnn": encoder.network.name,  # system check E011: a bridge is for one CNN's features
            "text_models": list(encoder.text_identities),  # E015: and for one text space
            **options.__dict__,
        }
        if parts:
            meta["parts"] = list(parts)
        candidate = LearnedBridge(weight, bias, conse_weight=options.conse_weight, meta=meta)
        conse, visual, kept = semantic_without_words(encoder, model, held.keys, field)
        position = {k: i for i, k in enumerate(held.keys)}
        held = held.subset(np.array([position[k] for k in kept], dtype=np.int64))
        if len(held) < MIN_HELD_OUT:
            raise CommandError("Too few readable held-out images to check the bridge.")
        compared_with = store.current_version()  # installed only if still the one in use (trainings at once)
        if encoder.bridge_path != "auto":  # a dry run (refused above otherwise): BRIDGE_DIR's is not in use
            current = encoder.bridge  # its own file, or None: ConSE alone
        else:
            try:
                current = store.current()
            except ValueError as exc:  # system check E016: replaced by this one if it does better than ConSE alone
                self.say(f"The installed bridge cannot be read ({exc}): the candidate is compared with ConSE alone.")
                current = None
        widths = (encoder.visual_dimensions, encoder.semantic_dimensions)
        if current is not None and (
            current.weight.shape != widths
            or current.cnn != encoder.network.name
            or current.text_models not in (None, encoder.text_identities)
        ):
            current = None  # for another text model or CNN (system checks E010, E011, E015): compared as ConSE alone
        check = check_bridge(
            candidate, current, conse, visual, encoder.encode_texts(held.texts), held.owner, seed=opts["seed"]
        )
        in_use = f"bridge {current.version}" if current else "ConSE alone"
        self.say(f"held out ({check.held_out_images} images, {check.held_out_queries} queries):")
        self.say(f"  in use ({in_use}): {check.current}")
        self.say(f"  candidate {candidate.version}:  {check.candidate}")
        if not check.better:
            raise CommandError(
                f"Refused: the new bridge scores R@5 {check.candidate.r5:.1f} on held-out images, "
                f"not better than {check.current.r5:.1f} of {in_use}. Nothing was installed."
            )
        if opts["dry_run"]:
            self.say("Dry run: nothing installed.")
            return
        metrics = {"held_out": check.candidate.as_dict(), "was": check.current.as_dict()}
        self.installing = (store, candidate.version)
        try:
            path = store.install(candidate, metrics=metrics, replaces=compared_with)
        except BridgeChanged as exc:
            raise CommandError(f"Refused: {exc} Nothing was installed; run the training again to compare.") from exc
        except OSError as exc:  # e.g. the disk is full
            raise CommandError(f"Installing the bridge in {store.directory} failed: {exc}") from exc
        self.installed = candidate.version
        registry.reset()
        encoder = field.get_encoder()
        if f"bridge:{candidate.version}" not in encoder.identity:
            raise CommandError(
                f"Installed {path}, but the configured encoder does not use it (ENCODER_OPTIONS['bridge'] "
                "must be 'auto', the default)."
            )
        self.stdout.write(self.style.SUCCESS(f"Installed bridge {candidate.version} at {path}."))
        if opts["no_reembed"]:
            self.say("Not re-embedded (--no-reembed): run semantic_images_reindex, or rows update on their next save.")
            return
        report = None
        for chunk in self.progress(
            self.chunks(model, opts["chunk_size"]),
            -(-primary_rows(model).count() // opts["chunk_size"]),
            "re-embedding",
        ):
            part = embed_instances(chunk, field=field.name, encoder=encoder)
            if report is None:
                report = part
            else:
                report.merge(part)
        self.say(f"Re-embedded: {report if report is not None else 'no rows'}.")

    @staticmethod
    def chunks(model: Any, size: int) -> Iterable[list[Any]]:
        """Every row, ``size`` at a time in key order (one query each), never all at once: those a default
        manager hides too, read where they are written (``primary_rows``), as the pipeline reads them."""
        rows = primary_rows(model).order_by("pk")
        last = None
        while True:
            chunk = list((rows if last is None else rows.filter(pk__gt=last))[:size])
            if chunk:
                yield chunk
            if len(chunk) < size:
                return
            last = chunk[-1].pk

    def store(self, *, writable: bool = True) -> BridgeStore:
        """``BRIDGE_DIR``'s store; ``writable``: made now if missing, and refused unless this process can
        write there (else the install would fail after the whole training)."""
        directory = default_bridge_dir()
        if directory is None:
            raise CommandError("Set SEMANTIC_IMAGES['BRIDGE_DIR'] or MEDIA_ROOT: there is nowhere to store the bridge.")
        if writable:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CommandError(f"SEMANTIC_IMAGES['BRIDGE_DIR'] ({directory}) cannot be made: {exc}") from exc
            if not os.access(directory, os.W_OK | os.X_OK):
                raise CommandError(f"SEMANTIC_IMAGES['BRIDGE_DIR'] ({directory}) is not writable by this process.")
        return BridgeStore(directory)

    def say(self, text: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(text)
