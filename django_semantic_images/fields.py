"""``ImageEmbeddingField``: one declaration that gives a model its vector columns.

Like ``GenericForeignKey``, the field itself has no column; it adds concrete
sibling fields named after it (for a field called ``embedding``):

=========================  ===============================================
``embedding_visual``       CNN image vector (image -> image), HNSW index
``embedding_visual_norm``  its length before normalising (rebuilds the semantic vector
                           after a text-model change without the CNN; None: unknown)
``embedding_semantic``     vector in the text space (text -> image), HNSW index
``embedding_encoder``      identity of the encoder that produced the vectors
``embedding_hash``         SHA-256 of the image bytes and the text fields
``embedding_status``       ``pending`` / ``embedded`` / ``failed``
``embedding_error``        why it failed, in words
``embedding_updated_at``   when the vectors were written (while pending: since when)
``embedding_labels``       the CNN's confident labels, as suggestions for editors
``embedding_claimed_by``   the worker task embedding the row now ("" when none)
``embedding_lease_until``  until when the row's holder answers for it (docs/workers.md)
=========================  ===============================================
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.core import checks
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ObjectDoesNotExist
from django.db import models
from django.db.models.constants import LOOKUP_SEP
from django.db.models.signals import class_prepared
from django.utils import translation
from django.utils.translation import gettext_lazy as _
from pgvector.django import HalfVectorField, HnswIndex, VectorField

from .conf import semantic_settings

if TYPE_CHECKING:
    from .encoders.base import Encoder


class EmbeddingStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    EMBEDDED = "embedded", _("Embedded")
    FAILED = "failed", _("Failed")


SUFFIXES = (
    "visual",
    "semantic",
    "encoder",
    "hash",
    "status",
    "error",
    "updated_at",
    "labels",
    "claimed_by",
    "lease_until",
    "visual_norm",
)

#: HNSW operator class name part per ``distance`` argument (pgvector's ``vector_cosine_ops`` etc.).
DISTANCES = {"cosine": "cosine", "l2": "l2", "inner_product": "ip"}

#: Set on an instance before its save (``signals.pre_save_handler``): the sibling columns that
#: save writes (the pending state of a row whose inputs changed). Any other is kept as stored.
WRITTEN_ATTR = "_semantic_images_written"


class KeptOnUpdate(models.Field):
    """A sibling column the pipeline writes: ``Model.save()`` of a stored row keeps the stored
    value (``SET col = col``) unless that save set it or its ``update_fields`` name it (``WRITTEN_ATTR``).

    An instance holds the state it was loaded or saved with; the vectors are written later, by
    another query (after the commit, or by a worker). Saved again, it wrote that old state back:
    a row embedded meanwhile lost its vectors and stayed pending with no work sent. An insert, a
    ``raw`` save (``loaddata``), ``bulk_create``, ``bulk_update`` and ``QuerySet.update()`` write
    what they are given. Migrations see the base class (``deconstruct``).
    """

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        value = super().pre_save(model_instance, add)
        if add or self.attname in model_instance.__dict__.get(WRITTEN_ATTR, ()):
            return value
        return models.F(self.attname)

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        base = type(self).__mro__[2]  # (KeptX, KeptOnUpdate, X, ...)
        path = f"{base.__module__}.{base.__qualname__}"
        for long in ("django.db.models.fields.json", "django.db.models.fields"):
            if path.startswith(long + "."):
                path = "django.db.models" + path[len(long) :]
                break
        return name, path, args, kwargs


class KeptVectorField(KeptOnUpdate, VectorField):
    pass


class KeptHalfVectorField(KeptOnUpdate, HalfVectorField):
    pass


class KeptCharField(KeptOnUpdate, models.CharField):
    pass


class KeptTextField(KeptOnUpdate, models.TextField):
    pass


class KeptDateTimeField(KeptOnUpdate, models.DateTimeField):
    pass


class KeptJSONField(KeptOnUpdate, models.JSONField):
    pass


class KeptFloatField(KeptOnUpdate, models.FloatField):
    pass


class ImageEmbeddingField:
    """Declare on an image model: ``embedding = ImageEmbeddingField(image_field="image")``.

    :param image_field: name of the model's ``ImageField`` / ``FileField``, or a path to one
        through a forward relation in lookup style (``"image__file"``: a table of vectors
        kept beside another app's image model).
    :param text_fields: names of text fields (title, alt text, caption) whose words are
        embedded too and fused into the semantic vector; a relation path
        (``"image__title"``) or a property of the model works too.
    :param visual_dimensions: / :param semantic_dimensions: column sizes; by default
        the configured encoder's.
    :param index: add HNSW indexes on both vector columns.
    :param m: / :param ef_construction: the HNSW build parameters (pgvector's ``m``, 2-100, and
        ``ef_construction``, 4-1000 and at least ``2 * m``); by default ``SEMANTIC_IMAGES["HNSW_M"]``
        and ``["HNSW_EF_CONSTRUCTION"]``.
    :param distance: the indexes' operator class: ``"cosine"`` (the default, and the only one the
        package's searches use), ``"l2"`` or ``"inner_product"`` (for a site's own queries).
    :param halfvec: store and index the vectors as pgvector ``halfvec`` (16-bit floats): half the
        table and index size, ``halfvec_*_ops`` operator classes.
    :param encoder: / :param encoder_options: an encoder for this field only (dotted path and
        keyword arguments); by default ``SEMANTIC_IMAGES["ENCODER"]``. A second field with a new
        encoder lets a site switch models without search downtime (docs/encoders.md).
    """

    # Django calls contribute_to_class() for attributes that define it.
    auto_created = False
    is_relation = False

    def __init__(
        self,
        image_field: str = "image",
        text_fields: Sequence[str] = (),
        *,
        visual_dimensions: int | None = None,
        semantic_dimensions: int | None = None,
        index: bool = True,
        m: int | None = None,
        ef_construction: int | None = None,
        distance: str = "cosine",
        halfvec: bool = False,
        encoder: str | None = None,
        encoder_options: dict[str, Any] | None = None,
    ) -> None:
        self.image_field = image_field
        self.text_fields = tuple(text_fields)
        self._visual_dimensions = visual_dimensions
        self._semantic_dimensions = semantic_dimensions
        self.index = index
        self.m = m
        self.ef_construction = ef_construction
        self.distance = distance
        self.halfvec = halfvec
        self.encoder_path = encoder
        self.encoder_options = encoder_options
        self.name = ""
        self.model: type[models.Model] | None = None

    # -- column names -------------------------------------------------------
    def column(self, suffix: str) -> str:
        """Attribute name of a sibling field, e.g. ``column("status") == "embedding_status"``."""
        return f"{self.name}_{suffix}"

    @property
    def visual_field(self) -> str:
        return self.column("visual")

    @property
    def semantic_field(self) -> str:
        return self.column("semantic")

    # -- model set-up ---------------------------------------------------------
    def get_encoder(self) -> Encoder:
        """The encoder that makes this field's vectors (and its query vectors)."""
        from .encoders import get_encoder

        return get_encoder(self.encoder_path, self.encoder_options)

    def contribute_to_class(self, cls: type[models.Model], name: str) -> None:
        self.name = name
        self.model = cls
        vdim, sdim = self._visual_dimensions, self._semantic_dimensions
        if vdim is None or sdim is None:
            # A bad setting, or a model whose width cannot be read (CLIP's config: a missing folder, a
            # hub name offline): the system checks name it (E009, E012, E013), not an import traceback.
            # The columns have no size until it is fixed; the checks refuse migrate meanwhile.
            try:
                encoder = self.get_encoder()
                vdim = vdim or encoder.visual_dimensions
                sdim = sdim or encoder.semantic_dimensions
            except Exception:  # noqa: BLE001
                pass
        vector_field = KeptHalfVectorField if self.halfvec else KeptVectorField
        siblings: dict[str, models.Field] = {
            "visual": vector_field(dimensions=vdim, null=True, blank=True, editable=False),
            "semantic": vector_field(dimensions=sdim, null=True, blank=True, editable=False),
            "encoder": KeptCharField(max_length=120, blank=True, default="", editable=False),
            "hash": KeptCharField(max_length=64, blank=True, default="", editable=False),
            "status": KeptCharField(
                max_length=16,
                choices=EmbeddingStatus.choices,
                default=EmbeddingStatus.PENDING,
                db_index=True,
                editable=False,
            ),
            "error": KeptTextField(blank=True, default="", editable=False),
            "updated_at": KeptDateTimeField(null=True, blank=True, editable=False),
            "labels": KeptJSONField(default=list, blank=True, editable=False),
            # The lease (docs/workers.md): who embeds the row now, and until when a queued task
            # or that worker answers for it; the sweep takes back rows whose lease ran out.
            "claimed_by": KeptCharField(max_length=255, blank=True, default="", editable=False),
            "lease_until": KeptDateTimeField(null=True, blank=True, editable=False),
            # The visual vector's length before normalising: with it, the CNN's output is known
            # again, and a text-side change re-embeds without the image (docs/encoders.md).
            "visual_norm": KeptFloatField(null=True, blank=True, editable=False),
        }
        for suffix, field in siblings.items():
            field.verbose_name = f"{name} {suffix.replace('_', ' ')}"
            cls.add_to_class(self.column(suffix), field)
        self._register(cls)
        if not cls._meta.abstract:
            self._add_indexes(cls)

    def _register(self, cls: type[models.Model]) -> None:
        """Make this field ``cls``'s own (its attribute and its entry in ``embedding_fields``)."""
        setattr(cls, self.name, self)
        registry = cls.__dict__.get("_semantic_image_fields")
        if registry is None:
            registry = {}
            setattr(cls, "_semantic_image_fields", registry)  # noqa: B010 - Model declares no such attribute
        registry[self.name] = self
        _fields_of.clear()  # a model (or a parent) gained a field: read the classes again

    def bind_to(self, cls: type[models.Model]) -> ImageEmbeddingField:
        """A copy of this field (declared on an abstract base) as concrete ``cls``'s own: its
        ``model``, and its HNSW indexes (Django copies the sibling columns, not the indexes)."""
        field = copy.copy(self)
        field.model = cls
        field._register(cls)
        field._add_indexes(cls)
        return field

    def _add_indexes(self, cls: type[models.Model]) -> None:
        """The HNSW indexes of both vector columns, in ``cls``'s Meta options."""
        if self.index and self.distance in DISTANCES:
            # Migrations read Meta options from original_attrs, so record the indexes there too.
            cls._meta.indexes = list(cls._meta.indexes)
            cls._meta.original_attrs["indexes"] = cls._meta.indexes
            m: int | None
            ef_construction: int | None
            try:
                m, ef_construction = self.hnsw_m, self.hnsw_ef_construction
            except ImproperlyConfigured:  # an unknown key, or no dict: the check E012 names it
                m = ef_construction = None
            for suffix in ("visual", "semantic"):
                cls._meta.indexes.append(
                    HnswIndex(
                        name=self.index_name(cls, suffix),
                        fields=[self.column(suffix)],
                        m=m,
                        ef_construction=ef_construction,
                        opclasses=[self.opclass],
                    )
                )

    @property
    def hnsw_m(self) -> int:
        return semantic_settings.HNSW_M if self.m is None else self.m

    @property
    def hnsw_ef_construction(self) -> int:
        return semantic_settings.HNSW_EF_CONSTRUCTION if self.ef_construction is None else self.ef_construction

    @property
    def opclass(self) -> str:
        """The indexes' operator class, e.g. ``vector_cosine_ops`` or ``halfvec_cosine_ops``."""
        return f"{'halfvec' if self.halfvec else 'vector'}_{DISTANCES[self.distance]}_ops"

    def index_name(self, cls: type[models.Model], suffix: str) -> str:
        digest = hashlib.sha1(f"{cls._meta.db_table}.{self.column(suffix)}".encode()).hexdigest()[:8]
        return f"{cls._meta.db_table[:12]}_{suffix[:3]}_{digest}"[:30]

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        assert self.model is not None
        errors: list[checks.CheckMessage] = []
        for attr in (self.image_field, *self.text_fields):
            is_image = attr == self.image_field
            problem = _path_problem(self.model, attr, allow_property=not is_image, file_only=is_image)
            if problem:
                errors.append(
                    checks.Error(
                        f"ImageEmbeddingField {self.name!r} refers to {attr!r}, {problem}",
                        obj=self.model,
                        id="semantic_images.E003",
                    )
                )
        errors.extend(self._check_index())
        return errors

    def _check_index(self) -> list[checks.CheckMessage]:
        """The HNSW arguments within pgvector's limits (else CREATE INDEX fails at migrate)."""
        assert self.model is not None
        problems = []
        if self.distance not in DISTANCES:
            problems.append(f"distance={self.distance!r} is not one of {', '.join(map(repr, DISTANCES))}")
        m, ef = self.hnsw_m, self.hnsw_ef_construction
        if not (isinstance(m, int) and 2 <= m <= 100):
            problems.append(f"m={m!r} is not an integer from 2 to 100")
        elif not (isinstance(ef, int) and max(4, 2 * m) <= ef <= 1000):
            problems.append(f"ef_construction={ef!r} is not an integer from max(4, 2 * m) = {max(4, 2 * m)} to 1000")
        return [
            checks.Error(
                f"ImageEmbeddingField {self.name!r} of {self.model._meta.label}: {problem}.",
                hint="See the field's options in docs/field.md.",
                obj=self.model,
                id="semantic_images.E005",
            )
            for problem in problems
        ]

    # -- instance access --------------------------------------------------------
    def __get__(self, instance: models.Model | None, owner: type) -> ImageEmbeddingField | EmbeddingInfo:
        if instance is None:
            return self
        return EmbeddingInfo(instance, self)

    def __set__(self, instance: models.Model, value: Any) -> None:
        raise AttributeError(f"{self.name!r} is computed by the pipeline and cannot be assigned.")

    def file(self, instance: models.Model) -> Any:
        """The image file of ``instance`` (followed through relations; None when missing)."""
        return follow(instance, self.image_field)

    def texts(self, instance: models.Model) -> list[str]:
        """The text field values of ``instance`` (``text_value``: a field with choices gives its
        label) as words (``words_of``: a rich text field's markup dropped), those that are not
        blank (``NOT_BLANK``: zero-width characters alone are blank too, as in search words; the
        model reads them as no text)."""
        from .encoders.text import NOT_BLANK

        values = (words_of(text_value(instance, f)) for f in self.text_fields)
        return [v for v in values if NOT_BLANK.search(v)]

    def related_paths(self) -> list[str]:
        """The forward relations that the image and text paths go through (for ``select_related``)."""
        paths = {path.rsplit(LOOKUP_SEP, 1)[0] for path in (self.image_field, *self.text_fields) if LOOKUP_SEP in path}
        return sorted(paths)


#: Where a text holds HTML markup: a tag, an end tag, a comment or a declaration begins.
MARKUP = re.compile(r"<[A-Za-z/!?]")
#: Tags that sit inside a word (``cat<b>s</b>``): every other one separates words.
INLINE_TAGS = frozenset({"a", "abbr", "b", "bdi", "bdo", "cite", "code", "em", "i", "mark", "q", "s", "small"})
INLINE_TAGS |= {"span", "strong", "sub", "sup", "u"}


class _Words(HTMLParser):
    """The text of an HTML fragment: its character data, entities read, a space for each tag that
    separates words, nothing of ``script`` or ``style``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        self.parts.append("" if tag in INLINE_TAGS else " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.hidden:
            self.hidden -= 1
        self.parts.append("" if tag in INLINE_TAGS else " ")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def words_of(text: str) -> str:
    """``text`` as the text model reads it, trimmed: the zero-width characters (and NUL) a space, as
    in search words (``INVISIBLE_RUN``: a tokenizer drops them and joins the words around them);
    holding HTML markup (a rich text field's), its words alone, one space between them (tags and
    ``<p data-block-key="...">`` are no words about the picture, and took most of what the words
    gave it); plain text otherwise as it is."""
    from .encoders.text import INVISIBLE_RUN

    text = INVISIBLE_RUN.sub(" ", text)
    if not MARKUP.search(text):
        return text.strip()
    parser = _Words()
    parser.feed(text)
    parser.close()
    return " ".join("".join(parser.parts).split())


def bind_inherited_fields(sender: type[models.Model], **kwargs: Any) -> None:
    """``class_prepared``: a concrete model's fields declared on an abstract base become its own
    (``ImageEmbeddingField.bind_to``), so each subclass has its indexes and searches its table."""
    for field in declared_fields(sender).values():  # not cached: every model class comes here
        if field.model is not None and field.model is not sender and field.model._meta.abstract:
            field.bind_to(sender)


class_prepared.connect(bind_inherited_fields, dispatch_uid="semantic_images:bind_inherited_fields")


def text_value(instance: models.Model, path: str) -> str:
    """The text at ``path`` of ``instance`` ("" where it is empty): a field with choices gives its
    label (``choice_labels``), not the key it stores."""
    value = follow(instance, path)
    if not value:
        return ""
    labels = choice_labels(type(instance), path)
    return labels.get(value, str(value)) if labels else str(value)


def final_field(model: type[models.Model], path: str) -> models.Field | None:
    """The model field that ``path`` ends on (None for a property, or a path that names no field)."""
    *relations, last = path.split(LOOKUP_SEP)
    current: Any = model
    try:
        for part in relations:
            current = current._meta.get_field(part).related_model
        return current._meta.get_field(last)
    except (AttributeError, FieldDoesNotExist):
        return None


def choice_labels(model: type[models.Model], path: str) -> dict[Any, str] | None:
    """The labels of the choices of the field at ``path`` by stored value (None without choices),
    untranslated: the same words in every process, whatever language a request had active."""
    field = final_field(model, path)
    choices = getattr(field, "flatchoices", None) if field is not None else None
    if not choices:
        return None
    with translation.override(None):
        return {key: str(label) for key, label in choices}


def is_column(model: type[models.Model], path: str) -> bool:
    """Whether ``path`` ends on a column that ``values_list`` reads as ``text_value`` does (not a
    property, and not a relation, whose text is its object's ``str()``)."""
    field = final_field(model, path)
    return field is not None and field.concrete and not field.is_relation


def follow(instance: Any, path: str) -> Any:
    """``instance``'s value at ``path`` (``"image__title"``); None where a relation is empty."""
    value = instance
    for part in path.split(LOOKUP_SEP):
        try:
            value = getattr(value, part, None)
        except ObjectDoesNotExist:
            return None
        if value is None:
            return None
    return value


def _path_problem(model: type[models.Model], path: str, *, allow_property: bool, file_only: bool = False) -> str:
    """Why ``path`` does not name a value of ``model`` ("" when it does); ``file_only``: a file field's."""
    *relations, last = path.split(LOOKUP_SEP)
    current = model
    for part in relations:
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            return f"but {part!r} is not a field of {current._meta.label}."
        if not (field.many_to_one or field.one_to_one) or field.related_model is None:
            return f"but {part!r} is not a foreign key or one-to-one field of {current._meta.label}."
        current = field.related_model
    try:
        field = current._meta.get_field(last)
    except FieldDoesNotExist:
        if allow_property and not relations and isinstance(getattr(model, last, None), property):
            return ""
        return f"which is not a field of {current._meta.label}."
    if file_only and not isinstance(field, models.FileField):
        return "which is not a FileField or ImageField (the pipeline reads the picture from its file)."
    if field.many_to_many or field.one_to_many:
        return (
            "which is a to-many relation: its rows are no text (it was embedded as its manager's name). "
            "Join their words in a property of the model and name that instead."
        )
    return ""


@dataclass
class EmbeddingInfo:
    """Read-only view of one row's embedding state: ``photo.embedding.status`` etc."""

    instance: models.Model
    field: ImageEmbeddingField

    def _get(self, suffix: str) -> Any:
        return getattr(self.instance, self.field.column(suffix))

    status = property(lambda self: self._get("status"))
    error = property(lambda self: self._get("error"))
    encoder = property(lambda self: self._get("encoder"))
    content_hash = property(lambda self: self._get("hash"))
    updated_at = property(lambda self: self._get("updated_at"))
    visual = property(lambda self: self._get("visual"))
    visual_norm = property(lambda self: self._get("visual_norm"))
    semantic = property(lambda self: self._get("semantic"))
    labels = property(lambda self: self._get("labels"))

    @property
    def is_embedded(self) -> bool:
        return self.status == EmbeddingStatus.EMBEDDED

    def __str__(self) -> str:
        return str(self.status)


# Each model's fields, read once: a search asks for them a few dozen times.
_fields_of: dict[type, tuple[ImageEmbeddingField, ...]] = {}


def embedding_fields(model: type[models.Model]) -> list[ImageEmbeddingField]:
    """The ImageEmbeddingFields declared on ``model`` (or its concrete parents)."""
    fields = _fields_of.get(model)
    if fields is None:
        fields = _fields_of[model] = tuple(declared_fields(model).values())
    return list(fields)


def declared_fields(model: type[models.Model]) -> dict[str, ImageEmbeddingField]:
    """The ImageEmbeddingFields of ``model`` and its parents by name, a subclass's over its parent's."""
    found: dict[str, ImageEmbeddingField] = {}
    for klass in reversed(model.__mro__):
        found.update(klass.__dict__.get("_semantic_image_fields", {}))
    return found


def get_embedding_field(model: type[models.Model], name: str | None = None) -> ImageEmbeddingField:
    """The model's embedding field (by name when it has several)."""
    fields = embedding_fields(model)
    if name is not None:
        for f in fields:
            if f.name == name:
                return f
        raise LookupError(f"{model.__name__} has no ImageEmbeddingField named {name!r}.")
    if not fields:
        raise LookupError(f"{model.__name__} has no ImageEmbeddingField.")
    return fields[0]


@dataclass(frozen=True)
class EmbeddingPath:
    """Where a model's vectors are: its own ImageEmbeddingField, or one on a model joined to it
    one-to-one (``prefix="semantic_vectors__"``: Wagtail's images keep theirs in a table beside)."""

    field: ImageEmbeddingField
    prefix: str = ""

    @property
    def name(self) -> str:
        """The path as a ``field=`` argument accepts it, e.g. ``"semantic_vectors__embedding"``."""
        return self.prefix + self.field.name

    def column(self, suffix: str) -> str:
        """A lookup of a sibling column from the queried model, e.g. ``"semantic_vectors__embedding_status"``."""
        return self.prefix + self.field.column(suffix)

    def value(self, instance: models.Model, suffix: str) -> Any:
        """That column's value for ``instance`` (None when it has no row of vectors)."""
        return follow(instance, self.column(suffix))


def embedding_path(model: type[models.Model], name: str | None = None) -> EmbeddingPath:
    """The embedding field that ranks ``model``'s rows: its own, one named by a relation path
    (``"semantic_vectors__embedding"``), or, when it has none, the one on the single model that
    holds a one-to-one relation to it (or that it holds one to)."""
    if name and LOOKUP_SEP in name:
        *relations, last = name.split(LOOKUP_SEP)
        current = model
        for part in relations:
            try:
                relation = current._meta.get_field(part)
            except FieldDoesNotExist:
                raise LookupError(f"{current.__name__} has no relation {part!r}.") from None
            if not relation.one_to_one or relation.related_model is None:
                raise LookupError(f"{current.__name__}.{part} is not a one-to-one relation.")
            current = relation.related_model
        return EmbeddingPath(get_embedding_field(current, last), LOOKUP_SEP.join(relations) + LOOKUP_SEP)
    if embedding_fields(model) or name is not None:
        return EmbeddingPath(get_embedding_field(model, name))
    # ``name`` is a relation's query name; for a reverse one-to-one it is also the attribute
    # (unless a related_query_name differs from the related_name).
    joined = [
        (str(f.name), f.related_model)
        for f in model._meta.get_fields()
        if f.one_to_one and isinstance(f.related_model, type) and embedding_fields(f.related_model)
    ]
    if len(joined) != 1:
        raise LookupError(f"{model.__name__} has no ImageEmbeddingField.")
    query_name, related_model = joined[0]
    return EmbeddingPath(get_embedding_field(related_model), query_name + LOOKUP_SEP)


def models_with_embeddings() -> list[type[models.Model]]:
    """Every installed model that holds an ImageEmbeddingField's columns: each table of vectors once
    (what the commands, the sweep and the checks go through). A proxy, or a subclass that inherits
    its parent's field, holds none: its rows are its parent's, embedded there."""
    return [m for m in apps.get_models() if own_embedding_fields(m)]


def own_embedding_fields(model: type[models.Model]) -> list[ImageEmbeddingField]:
    """The ImageEmbeddingFields whose columns ``model``'s own table holds: not those a multi-table
    subclass inherits (its parent's table holds them, and the parent is gone through for them)."""
    return [f for f in embedding_fields(model) if f.model is model]


def models_using_embeddings() -> list[type[models.Model]]:
    """Every installed model with an ImageEmbeddingField, its own or inherited (proxies and subclasses
    too): the models whose saves are watched, each sending its own save signals."""
    return [m for m in apps.get_models() if embedding_fields(m)]


def failed_without_vectors(field: ImageEmbeddingField) -> models.Q:
    """Rows whose file could not be read: failed, no vectors (a fault that may pass keeps them).
    They keep the identity of the encoder that tried, but hold nothing of it: never stale."""
    return models.Q(**{field.column("status"): EmbeddingStatus.FAILED, f"{field.visual_field}__isnull": True})
