"""The change form: the vector columns hidden, a "Search index" section with the embedding's
details and suggested labels, and a message after a save that asked for embedding."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IS_POPUP_VAR
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import display, saving
from .columns import ListColumnsMixin

#: Names of the read-only change-form entries the mixin adds.
DETAILS = "embedding_details"
SUGGESTIONS = "embedding_suggestions"
#: Where ``render_change_form`` leaves, on the row, the id of the input the label buttons fill.
SUGGESTIONS_TARGET_ATTR = "_semantic_suggestions_target"


class ChangeFormMixin(ListColumnsMixin):
    """The change form's entries ``embedding_details`` and ``embedding_suggestions``, and ``save_model``.

    Built on the columns' mixin: the details end with the ``similar_images`` link.
    """

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Save; when the save asks for embedding, say after the commit what became of it (not in a
        related object's popup, where Django says nothing: the window closes, and the message would
        wait for the editor's next page)."""
        field = self.get_embedding_field()
        updated_before = getattr(obj, field.column("updated_at"))
        super().save_model(request, obj, form, change)
        if IS_POPUP_VAR not in request.POST and saving.embedding_requested(obj, field, updated_before):
            saving.report_after_commit(self, request, obj, field)

    def _own_entries(self, obj: Any) -> list[str]:
        return [DETAILS, SUGGESTIONS] if obj is not None else []

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        hidden = self._vector_columns()
        fields = [f for f in super().get_readonly_fields(request, obj) if f not in hidden]
        return [*fields, *(f for f in self._own_entries(obj) if f not in fields)]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        hidden = self._vector_columns()
        return [f for f in super().get_fields(request, obj) if f not in hidden]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        own = self._own_entries(obj)
        hidden = self._vector_columns() | set(own)
        fieldsets: list[Any] = []
        for name, options in super().get_fieldsets(request, obj):
            fields = [f for f in options.get("fields", ()) if isinstance(f, (list, tuple)) or f not in hidden]
            fieldsets.append((name, {**options, "fields": fields}))
        if own:
            fieldsets.append((_("Search index"), {"fields": own}))
        return fieldsets

    @admin.display(description=gettext_lazy("Embedding"))
    def embedding_details(self, obj: Any) -> str:
        details = display.details_html(obj, self.get_embedding_field())
        similar = self.similar_images(obj)
        return format_html("{}<p>{}</p>", details, similar) if similar != display.EMPTY else details

    @admin.display(description=gettext_lazy("Suggested labels"))
    def embedding_suggestions(self, obj: Any) -> str:
        field = self.get_embedding_field()
        labels = display.confident_labels(getattr(obj, field.column("labels")), self.suggestion_min_probability)
        target: str | None
        if hasattr(obj, SUGGESTIONS_TARGET_ATTR):  # set by render_change_form
            target = getattr(obj, SUGGESTIONS_TARGET_ATTR)
        else:  # not on the change form (a site's own use): by the model's fields
            names = {f.name for f in self.model._meta.get_fields()}
            target = f"id_{self.suggestions_field}" if self.suggestions_field in names else None
        return display.suggestions_html(labels, target)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        """Django's; the label buttons target the form's own input of ``suggestions_field``, and
        there are none (the labels as text) when the form has no such input (read-only, excluded)."""
        form = getattr(context.get("adminform"), "form", None)
        if obj is not None and form is not None:
            name = self.suggestions_field
            target = form[name].auto_id if name is not None and name in form.fields else None
            setattr(obj, SUGGESTIONS_TARGET_ATTR, target or None)
        return super().render_change_form(request, context, add, change, form_url, obj)
