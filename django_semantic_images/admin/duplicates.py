"""The admin's "Duplicates" page: groups of near-identical images, "keep this one, delete the
others" (after a confirmation page) and "not duplicates" (remembered).

Every row comes from the admin's ``get_queryset(request)``: an editor sees, keeps, deletes
and marks only rows the changelist would show them. Deleting needs the delete permission,
marking the change permission; each is a POST with Django's CSRF check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.contrib.admin.utils import model_ngettext
from django.core.exceptions import PermissionDenied
from django.core.files.images import ImageFile
from django.core.paginator import Paginator
from django.db import models, router, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..bidi import name_in_sentence
from ..duplicates import (
    check_threshold,
    default_threshold,
    forget_rows,
    group_rows,
    mark_not_duplicates,
    near_duplicates,
)
from ..keys import well_formed_keys
from . import display

if TYPE_CHECKING:
    from .options import SemanticSearchAdminMixin

logger = logging.getLogger(__name__)

THRESHOLD_VAR = "threshold"
PAGE_VAR = "p"
KEEP_VAR = "keep"
GROUP_VAR = "group"


@dataclass
class Member:
    """One row of a group as the page shows it."""

    obj: Any
    thumbnail: str
    url: str
    size: int | None
    width: int | None
    height: int | None
    date: Any


def duplicates_url(model_admin: SemanticSearchAdminMixin) -> str:
    opts = model_admin.model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_duplicates", current_app=model_admin.admin_site.name)


def read_threshold(request: HttpRequest) -> tuple[float, str]:
    """The page's threshold (the default when absent) and what is wrong with the one given ("" if nothing)."""
    raw = (request.GET.get(THRESHOLD_VAR) or "").strip()
    if not raw:
        return default_threshold(), ""
    try:
        return check_threshold(float(raw)), ""
    except ValueError:
        text = _("threshold must be a number greater than 0 and at most 1, not “%(value)s”.")
        return default_threshold(), name_in_sentence(text, {"value": raw})


def date_field(model: type[models.Model], name: str | None, exclude: set[str]) -> str | None:
    """The field shown as each row's date: ``name``, else the model's first date or date-time field."""
    if name is not None:
        return name
    for field in model._meta.concrete_fields:
        if isinstance(field, (models.DateField, models.DateTimeField)) and field.name not in exclude:
            return field.name
    return None


def dimensions(file: Any) -> tuple[int | None, int | None]:
    """An image file's width and height: from its row's ``width_field`` and ``height_field`` when its
    ``ImageField`` has them, else read from the image header (``ImageFieldFile.width`` opens the file
    either way: a storage read per row)."""
    if not file or not isinstance(file, ImageFile):  # not hasattr(file, "width"): that opens the file
        return None, None
    field, instance = getattr(file, "field", None), getattr(file, "instance", None)
    width_name, height_name = getattr(field, "width_field", None), getattr(field, "height_field", None)
    if instance is not None and width_name and height_name:
        width, height = getattr(instance, width_name), getattr(instance, height_name)
        if width and height:
            return width, height
    return file.width, file.height


def member(model_admin: SemanticSearchAdminMixin, obj: Any, date_name: str | None) -> Member:
    file = model_admin.get_embedding_field().file(obj)
    size = width = height = None
    # A storage other than the filesystem raises its own errors for a lost or unreadable file
    # (botocore's ClientError, say): the page shows the rest, as it does for an OSError.
    try:
        size = file.size if file else None
    except Exception:  # noqa: BLE001
        logger.warning("No size for %s.", getattr(file, "name", file), exc_info=True)
    try:
        width, height = dimensions(file)
    except Exception:  # noqa: BLE001
        logger.warning("No dimensions for %s.", getattr(file, "name", file), exc_info=True)
    opts = model_admin.model._meta
    url = reverse(
        f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk], current_app=model_admin.admin_site.name
    )
    return Member(
        obj=obj,
        thumbnail=display.thumbnail_html(model_admin.thumbnail_url(obj), str(obj)),
        url=url,
        size=size,
        width=width,
        height=height,
        date=getattr(obj, date_name) if date_name else None,
    )


def visible_rows(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> models.QuerySet:
    """The admin's rows for this editor, without loading their vectors."""
    field = model_admin.get_embedding_field()
    return model_admin.get_queryset(request).defer(field.visual_field, field.semantic_field)


def duplicates_view(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponse:
    """GET: the groups; with ``?keep=&group=``, the confirmation page; POST: keep one or mark apart."""
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    if request.method == "POST":
        if request.POST.get("action") == "keep":
            return keep_one(model_admin, request)
        if request.POST.get("action") == "apart":
            return mark_apart(model_admin, request)
        messages.error(request, _("Unknown action."))
        return HttpResponseRedirect(duplicates_url(model_admin))
    if KEEP_VAR in request.GET:
        return confirm_keep(model_admin, request)
    return list_groups(model_admin, request)


def list_groups(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponse:
    field = model_admin.get_embedding_field()
    threshold, problem = read_threshold(request)
    groups: list[Any] = []
    rows = visible_rows(model_admin, request)
    if not problem:
        groups = near_duplicates(rows, threshold, field=field.name)
    paginator = Paginator(groups, model_admin.duplicate_groups_per_page)
    page = paginator.get_page(request.GET.get(PAGE_VAR))
    # Only this page's rows are loaded (and their files read for size and dimensions).
    page_groups = group_rows(rows, page.object_list) if page.object_list else []
    date_name = date_field(
        model_admin.model,
        model_admin.duplicate_date_field,
        {field.column("updated_at"), field.column("lease_until")},
    )
    can_delete = model_admin.has_delete_permission(request)
    shown = [
        {
            "number": page.start_index() + index,
            "distance": group.distance,
            "pks": ",".join(str(pk) for pk in group.pks),
            "members": [member(model_admin, obj, date_name) for obj in members],
            "keepable": keepable(model_admin, request, members) if can_delete else set(),
        }
        for index, (group, members) in enumerate(page_groups)
    ]
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": _("Near-duplicate %(name)s") % {"name": opts.verbose_name_plural},
        "groups": shown,
        "page": page,
        "paginator": paginator,
        "threshold": threshold,
        "threshold_problem": problem,
        "threshold_value": request.GET.get(THRESHOLD_VAR, ""),
        "kept_params": kept_query(request.GET.urlencode()).lstrip("?"),
        "date_label": model_admin.model._meta.get_field(date_name).verbose_name if date_name else None,
        "can_delete": can_delete,
        "can_mark": model_admin.has_change_permission(request),
        "changelist_url": model_admin.changelist_url(),
        "keep_var": KEEP_VAR,
        "group_var": GROUP_VAR,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, model_admin.duplicates_template, context, status=400 if problem else 200)


def keepable(model_admin: SemanticSearchAdminMixin, request: HttpRequest, members: list[Any]) -> set[Any]:
    """The primary keys of the rows "keep this one" may be offered for: those whose group's other rows
    the editor may all delete (``has_delete_permission(request, obj)``, as ``check_may_delete`` asks)."""
    refused = [obj.pk for obj in members if not model_admin.has_delete_permission(request, obj)]
    if len(refused) > 1:
        return set()
    return set(refused) or {obj.pk for obj in members}


def kept_query(raw: str) -> str:
    """``?threshold=&p=`` of the page a form was on (nothing else), to go back to it."""
    given = QueryDict(raw)
    params = QueryDict(mutable=True)
    for name in (THRESHOLD_VAR, PAGE_VAR):
        if given.get(name):
            params[name] = given[name]
    return "?" + params.urlencode() if params else ""


def pks_of(model_admin: SemanticSearchAdminMixin, raw: str) -> list[Any]:
    """Primary keys from a comma-separated list; a malformed one is left out."""
    return well_formed_keys(model_admin.model, [part.strip() for part in raw.split(",")])


def keep_and_others(model_admin: SemanticSearchAdminMixin, request: HttpRequest, data: QueryDict) -> tuple[Any, Any]:
    """The row to keep and the queryset of the others, both among the editor's rows; or a 404-like None."""
    rows = visible_rows(model_admin, request)
    keep_pks = pks_of(model_admin, data.get(KEEP_VAR, ""))
    group = [pk for pk in pks_of(model_admin, data.get(GROUP_VAR, "")) if pk not in keep_pks]
    keep = rows.filter(pk=keep_pks[0]).first() if len(keep_pks) == 1 else None
    return keep, rows.filter(pk__in=group)


def check_may_delete(model_admin: SemanticSearchAdminMixin, request: HttpRequest, others: models.QuerySet) -> None:
    """PermissionDenied unless the editor may delete each of ``others`` (``has_delete_permission(request,
    obj)``, which the admin's own delete view asks too)."""
    if not all(model_admin.has_delete_permission(request, obj) for obj in others):
        raise PermissionDenied


def confirm_keep(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponse:
    """The confirmation page of "keep this one, delete the others": what would be deleted, and a POST form."""
    if not model_admin.has_delete_permission(request):
        raise PermissionDenied
    keep, others = keep_and_others(model_admin, request, request.GET)
    kept = kept_query(request.GET.urlencode())
    back = duplicates_url(model_admin) + kept
    if keep is None or not others.exists():
        messages.error(request, _("Nothing to delete: those images are not among the ones you can see."))
        return HttpResponseRedirect(back)
    check_may_delete(model_admin, request, others)
    deletable, model_count, perms_needed, protected = model_admin.get_deleted_objects(others, request)
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": _("Are you sure?")
        if not (perms_needed or protected)
        else _("Cannot delete %(name)s") % {"name": model_ngettext(opts, others.count())},
        "keep": member(model_admin, keep, None),
        "others": [member(model_admin, obj, None) for obj in others.order_by("pk")],
        "deleted_objects": deletable,
        "model_count": dict(model_count).items(),
        "perms_lacking": perms_needed,
        "protected": protected,
        "keep_pk": keep.pk,
        "group_pks": ",".join(str(obj.pk) for obj in others.order_by("pk")),
        "duplicates_url": back,
        "kept_params": kept.lstrip("?"),
        "changelist_url": model_admin.changelist_url(),
        "keep_var": KEEP_VAR,
        "group_var": GROUP_VAR,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, model_admin.duplicates_confirm_template, context)


def keep_one(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponse:
    """POST from the confirmation page: delete the others (as the admin's own delete does), keep one,
    and go back to the threshold and page the editor came from."""
    if not model_admin.has_delete_permission(request):
        raise PermissionDenied
    keep, others = keep_and_others(model_admin, request, request.POST)
    back = HttpResponseRedirect(duplicates_url(model_admin) + kept_query(request.POST.get("kept", "")))
    if keep is None or not others.exists():
        messages.error(request, _("Nothing to delete: those images are not among the ones you can see."))
        return back
    check_may_delete(model_admin, request, others)
    _deletable, _count, perms_needed, protected = model_admin.get_deleted_objects(others, request)
    if perms_needed or protected:
        raise PermissionDenied
    doomed = list(others)
    with transaction.atomic(using=router.db_for_write(model_admin.model)):
        log_deletions = getattr(model_admin, "log_deletions", None)
        if log_deletions is not None:  # Django 5.1+
            log_deletions(request, others)
        else:
            for obj in doomed:
                model_admin.log_deletion(request, obj, str(obj))  # type: ignore[attr-defined]  # Django < 5.1
        model_admin.delete_queryset(request, others)
        forget_rows(model_admin.model, [obj.pk for obj in doomed])
    text = ngettext(
        "Kept “%(keep)s” and deleted %(n)d other image.", "Kept “%(keep)s” and deleted %(n)d other images.", len(doomed)
    )
    messages.success(request, name_in_sentence(text, {"keep": keep}, {"n": len(doomed)}))
    return back


def mark_apart(model_admin: SemanticSearchAdminMixin, request: HttpRequest) -> HttpResponse:
    """POST "not duplicates": remember that the group's visible rows that the editor may change
    (``has_change_permission(request, obj)``, as the re-embed action asks) are different pictures."""
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    rows = visible_rows(model_admin, request).filter(pk__in=pks_of(model_admin, request.POST.get(GROUP_VAR, "")))
    back = HttpResponseRedirect(duplicates_url(model_admin) + kept_query(request.POST.get("kept", "")))
    visible = list(rows)
    if len(visible) < 2:
        messages.error(request, _("Nothing to mark: those images are not among the ones you can see."))
        return back
    pks = [obj.pk for obj in visible if model_admin.has_change_permission(request, obj)]
    if len(pks) < 2:
        messages.error(request, _("Nothing to mark: you may not change those images."))
        return back
    mark_not_duplicates(model_admin.model, pks)
    messages.success(
        request,
        ngettext(
            "Marked %(n)d image as not duplicates; they will not be grouped again.",
            "Marked %(n)d images as not duplicates; they will not be grouped again.",
            len(pks),
        )
        % {"n": len(pks)},
    )
    return back
