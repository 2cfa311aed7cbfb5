"""Serializers: the result a site shapes, the query parameters, the upload and the error body."""

from __future__ import annotations

import copy
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from django.db.models.manager import BaseManager
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import Field, empty
from rest_framework.relations import ManyRelatedField
from rest_framework.serializers import LIST_SERIALIZER_KWARGS, LIST_SERIALIZER_KWARGS_REMOVE

from .. import thumbnails
from ..conf import DEFAULTS, semantic_settings
from ..encoders.text import NOT_BLANK
from ..fields import embedding_path, follow
from ..words import search_words


class SemanticResultSerializer(serializers.ModelSerializer):
    """Base for a site's result serializer: its own ``Meta.fields`` plus ``score``,
    ``relevance``, ``image_url`` and ``thumbnail_url``.

    ``image_url`` is the file of the image field that the embedding field names
    (``ImageEmbeddingField(image_field=...)``); with several embedding fields, the one in
    ``Meta.embedding_field`` or else the view's ``embedding_field``.
    ``thumbnail_url`` is a cached thumbnail of that same file, made by sorl-thumbnail (the
    ``thumbnails`` extra, with ``sorl.thumbnail`` in ``INSTALLED_APPS``) to fit in
    ``THUMBNAIL_SIZE``; null without sorl-thumbnail, or when the file is missing or not an
    image. ``Meta.thumbnail_field`` names an image field (or a property returning a file)
    holding the site's own small rendition instead. Override ``get_thumbnail_url`` for
    another library.

    The fields are built from the model once per class, and each serializer gets copies
    (DRF builds them on every instance: a search serializes a page per request). A subclass
    that chooses or builds them itself (``get_field_names``, ``build_field`` ...: ``FIELD_HOOKS``)
    gets them built on every call; one whose fields depend on the request some other way sets
    ``cache_fields = False``.

    .. code-block:: python

        class PhotoResultSerializer(SemanticResultSerializer):
            class Meta:
                model = Photo
                fields = ["id", "title", "alt_text", "score", "relevance", "image_url", "thumbnail_url"]
    """

    score = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="1 - cosine distance, in [-1, 1]. Meaningful for ordering within one query only; "
        "null in the plain list, which is not ranked.",
    )
    relevance = serializers.FloatField(
        read_only=True,
        allow_null=True,
        help_text="The share of the collection's images this result scores higher than for the same query "
        "(estimated from a sample), in [0, 1]: comparable across queries, what min_relevance filters on. "
        "Null in the plain list, and when the collection is too small to estimate it.",
    )
    image_url = serializers.SerializerMethodField(help_text="Absolute URL of the image file.")
    thumbnail_url = serializers.SerializerMethodField(
        help_text="Absolute URL of a small copy of the image (it fits in THUMBNAIL_SIZE pixels), when the site "
        "makes thumbnails; null otherwise, or when the image file cannot be read."
    )

    cache_fields = True

    def get_fields(self) -> dict[str, Field]:
        """DRF's fields of this class, built once (``cache_fields``); each call gets copies. A class
        that builds them its own way (``builds_fields_itself``) builds them on every call: its way
        may depend on the request, and one caller's fields would be served to the next."""
        if not self.cache_fields or builds_fields_itself(type(self)):
            return super().get_fields()
        cls = type(self)
        built = _built_fields.get(cls)
        if built is None:
            built = _built_fields.setdefault(cls, super().get_fields())
        return {name: fresh_copy(field) for name, field in built.items()}

    def get_image_url(self, obj: Any) -> str | None:
        return self.file_url(self.image_file(obj))

    def image_file(self, obj: Any) -> Any:
        """The stored file of the image that the embedding field names, followed through the
        one-to-one to the vectors for a model without a field of its own (``embedding_path``)."""
        path = embedding_path(type(obj), self.embedding_field_name())
        return follow(obj, path.prefix + path.field.image_field)

    def embedding_field_name(self) -> str | None:
        """The ``ImageEmbeddingField`` whose image ``image_url`` shows: ``Meta.embedding_field``,
        else the view's ``embedding_field``, else the model's only (or first) one."""
        name = getattr(self.Meta, "embedding_field", None)
        if name is None:
            name = getattr(self.context.get("view"), "embedding_field", None)
        return name

    @classmethod
    def many_init(cls, *args: Any, **kwargs: Any) -> serializers.ListSerializer:
        """DRF's ``many_init``, with :class:`SemanticResultListSerializer` unless
        ``Meta.list_serializer_class`` names another."""
        list_kwargs: dict[str, Any] = {}
        for key in LIST_SERIALIZER_KWARGS_REMOVE:
            value = kwargs.pop(key, None)
            if value is not None:
                list_kwargs[key] = value
        list_kwargs["child"] = cls(*args, **kwargs)
        list_kwargs.update({key: value for key, value in kwargs.items() if key in LIST_SERIALIZER_KWARGS})
        list_class = getattr(getattr(cls, "Meta", None), "list_serializer_class", SemanticResultListSerializer)
        return list_class(*args, **list_kwargs)

    def get_thumbnail_url(self, obj: Any) -> str | None:
        name = getattr(self.Meta, "thumbnail_field", None)
        if name:
            return self.file_url(getattr(obj, name, None))
        page = self.__dict__.get("page_thumbnails")
        url = page[id(obj)] if page is not None and id(obj) in page else thumbnails.thumbnail_url(self.image_file(obj))
        return self.absolute_url(url)

    def read_page_thumbnails(self, rows: list[Any]) -> None:
        """Look up the thumbnails of a page of ``rows`` at once (``thumbnails.thumbnail_urls``):
        what ``get_thumbnail_url`` then reads, when the site keeps this class's own."""
        own = type(self).get_thumbnail_url is SemanticResultSerializer.get_thumbnail_url
        if not own or getattr(self.Meta, "thumbnail_field", None):
            self.page_thumbnails = None
            return
        urls = thumbnails.thumbnail_urls([self.image_file(row) for row in rows])
        self.page_thumbnails = {id(row): url for row, url in zip(rows, urls, strict=True)}

    def file_url(self, file: Any) -> str | None:
        """Absolute URL of a stored file, or None when there is none."""
        if not file:
            return None
        try:
            url = file.url
        except ValueError:
            return None
        return self.absolute_url(url)

    def absolute_url(self, url: str | None) -> str | None:
        """``url`` made absolute with the request's host, when there is a request."""
        if not url:
            return None
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url


# The unbound fields each result serializer class builds (SemanticResultSerializer.get_fields).
_built_fields: dict[type, dict[str, Field]] = {}

#: ``ModelSerializer``'s methods that choose and build its fields (besides ``get_fields`` itself,
#: whose override calls this class's, cached, and is free to read the request after).
FIELD_HOOKS = (
    *(name for name in vars(serializers.ModelSerializer) if name.startswith("build_")),
    "get_field_names",
    "get_default_field_names",
    "get_extra_kwargs",
    "include_extra_kwargs",
    "get_uniqueness_extra_kwargs",
)
_builds_itself: dict[type, bool] = {}


def builds_fields_itself(cls: type) -> bool:
    """Whether ``cls`` overrides one of ``FIELD_HOOKS`` (a ``get_field_names`` that reads
    ``self.context``, say): its fields are then never cached."""
    found = _builds_itself.get(cls)
    if found is None:
        found = _builds_itself[cls] = any(_site_defined(cls, name) for name in FIELD_HOOKS)
    return found


def _site_defined(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            return not (klass.__module__.startswith("rest_framework.") or klass.__module__ == __name__)
    return False


def fresh_copy(field: Field) -> Field:
    """An unbound copy of ``field`` to bind to one serializer: a shallow copy of a plain field;
    DRF's deep copy (a new instance from the same arguments) of a field that holds another
    field or serializer, which is bound to its holder."""
    if isinstance(field, (serializers.BaseSerializer, ManyRelatedField)) or hasattr(field, "child"):
        return copy.deepcopy(field)
    return copy.copy(field)


class SemanticResultListSerializer(serializers.ListSerializer):
    """A page of results: the thumbnails of all its rows are looked up together, one read of
    Django's cache per page (``SemanticResultSerializer.read_page_thumbnails``)."""

    def to_representation(self, data: Any) -> list[Any]:
        rows = list(data.all() if isinstance(data, BaseManager) else data)
        child = self.child
        read = getattr(child, "read_page_thumbnails", None)
        if read is None:
            return super().to_representation(rows)
        read(rows)
        try:
            return super().to_representation(rows)
        finally:
            child.page_thumbnails = None  # type: ignore[union-attr]


def _max_query_length() -> int:
    return int(semantic_settings.MAX_QUERY_LENGTH)


class SearchTextField(serializers.CharField):
    """The search words: not blank, at most ``MAX_QUERY_LENGTH`` characters as sent.

    Blank runs (whitespace, NUL, zero-width characters) become one space and the ends are
    trimmed after validation: NUL characters are harmless here (the text goes to the model,
    not to the database). The checks run on the text as sent, as the schema describes it.
    """

    def __init__(self, **kwargs: Any) -> None:
        if "max_length" not in kwargs:
            kwargs["max_length"] = _max_query_length()
        kwargs.setdefault(
            "error_messages",
            {
                "required": "Give the words to search for in the q parameter.",
                "blank": "The search text is empty.",
                "max_length": "The search text is longer than {max_length} characters.",
            },
        )
        kwargs.setdefault("validators", [RegexValidator(NOT_BLANK, "The search text is empty.")])
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]

    def run_validation(self, data: Any = empty) -> Any:
        value = super().run_validation(data)
        return search_words(value) if isinstance(value, str) else value


class TextQuerySerializer(serializers.Serializer):
    """``GET ?q=words``."""

    # max_length: the default here, read from the settings per request (below); a bad setting must not
    # fail the import, which comes before the system checks that name it (E012).
    q = SearchTextField(
        help_text="What to look for, in words (e.g. 'a red bicycle').", max_length=DEFAULTS["MAX_QUERY_LENGTH"]
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The limit is a setting: read it per request, not at import.
        self.fields["q"] = SearchTextField(help_text=self.fields["q"].help_text)


@extend_schema_field(OpenApiTypes.BINARY)
class UploadField(serializers.FileField):
    """A file upload, described as binary in the OpenAPI schema."""


class ImageQuerySerializer(serializers.Serializer):
    """The query image, sent as multipart/form-data."""

    image = UploadField(
        help_text="The query image (JPEG, PNG, WebP, GIF ...), within the site's size and pixel limits.",
        error_messages={
            "required": "Upload the query image in the image field.",
            "invalid": "Upload the query image as a file in a multipart/form-data body.",
            "empty": "The uploaded file is empty.",
            "no_name": "The uploaded file has no name.",
        },
        allow_empty_file=False,
    )


@extend_schema_field(
    {"type": "number", "format": "double", "minimum": 0, "exclusiveMinimum": True, "maximum": 1, "example": 0.2}
)
class ThresholdField(serializers.FloatField):
    """A cosine distance in (0, 1]; the schema says so exactly (0 itself is refused)."""


class DuplicatesQuerySerializer(serializers.Serializer):
    """``GET duplicates/?threshold=``: the query parameter, as the schema shows it."""

    threshold = ThresholdField(
        required=False,
        help_text="Largest cosine distance between the visual vectors of two copies, in (0, 1]; "
        'default SEMANTIC_IMAGES["DUPLICATE_THRESHOLD"]. Higher finds more edited copies, and more '
        "different pictures by mistake.",
    )


_group_serializers: dict[type, type[serializers.Serializer]] = {}


def duplicate_group_serializer(result_class: type[serializers.BaseSerializer]) -> type[serializers.Serializer]:
    """The serializer of one group of near-duplicates whose images ``result_class`` shapes
    (one class per result serializer, so the schema names it once)."""
    found = _group_serializers.get(result_class)
    if found is None:
        name = result_class.__name__.removesuffix("Serializer") + "DuplicateGroupSerializer"
        attrs = {
            "__module__": result_class.__module__,
            "__doc__": "Images that look like copies of one picture, smallest id first.",
            "distance": serializers.FloatField(
                read_only=True,
                help_text="The largest cosine distance among the pairs that joined the group: each image "
                "is within it of another one of the group.",
            ),
            "images": result_class(many=True, read_only=True),
        }
        found = _group_serializers.setdefault(result_class, type(name, (serializers.Serializer,), attrs))
    return found


class ErrorSerializer(serializers.Serializer):
    """An error: {"detail": "message"}, or {"parameter": ["message"]} naming a bad parameter."""

    detail = serializers.CharField(required=False, help_text="What went wrong, in words.")
