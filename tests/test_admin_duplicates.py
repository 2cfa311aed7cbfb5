"""The admin's "Duplicates" page with Django's test client: the groups, keep one (confirmation,
then a POST), "not duplicates", permissions, CSRF and the admin's own queryset (real
PostgreSQL, real models; the browser test is in test_browser_admin.py)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from django_semantic_images.duplicates import mark_not_duplicates
from django_semantic_images.models import NotDuplicate
from django_semantic_images.thumbnails import thumbnail_url
from photos.models import Photo

pytestmark = pytest.mark.django_db

PAGE = "admin:photos_photo_duplicates"


def staff_user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="photos", codename__in=codenames))
    return user


def groups_on(html: str) -> list[list[int]]:
    return [
        [int(pk) for pk in pks.split(",")]
        for pks in re.findall(r'class="module si-group"[^>]*data-pks="([^"]+)"', html)
    ]


def pks(photos, *names: str) -> list[int]:
    return sorted(photos[name].pk for name in names)


CAT = ("chelsea", "chelsea-jpeg", "chelsea-flip")
COFFEE = ("coffee", "coffee-crop")


def test_the_page_lists_groups_with_thumbnails_size_dimensions_and_date(admin_client, duplicate_photos):
    response = admin_client.get(reverse(PAGE))
    assert response.status_code == 200
    html = response.content.decode()
    assert groups_on(html) == [pks(duplicate_photos, *CAT), pks(duplicate_photos, *COFFEE)]
    cat = duplicate_photos["chelsea"]
    row = re.search(rf'<tr class="si-member" data-pk="{cat.pk}">(.*?)</tr>', html, re.S).group(1)
    # The same cached thumbnail as the changelist and the API (sorl-thumbnail), not the original file.
    assert f'src="{thumbnail_url(cat.image)}"' in row and "si-thumb" in row
    assert f"{cat.image.width} × {cat.image.height}" in row
    assert "KB" in row  # file size
    assert "Created at" in html  # the model's date field is the date column
    assert html.count("Keep this one, delete the others") == 5 and html.count('value="Not duplicates"') == 2


def test_a_page_loads_the_rows_of_its_own_groups_only(admin_client, duplicate_photos, monkeypatch):
    """Every group is found on each request; the rows (and their files' sizes and dimensions,
    read from the storage) only for the groups the page shows, not for every group."""
    from django.contrib import admin

    from django_semantic_images.admin import duplicates

    monkeypatch.setattr(type(admin.site._registry[Photo]), "duplicate_groups_per_page", 1)
    loaded = []
    real = duplicates.group_rows
    monkeypatch.setattr(
        duplicates, "group_rows", lambda rows, groups: loaded.append(list(groups)) or real(rows, groups)
    )
    first = admin_client.get(reverse(PAGE)).content.decode()
    second = admin_client.get(reverse(PAGE), {"p": 2}).content.decode()
    assert groups_on(first) == [pks(duplicate_photos, *CAT)] and groups_on(second) == [pks(duplicate_photos, *COFFEE)]
    assert [[list(group.pks) for group in page] for page in loaded] == [
        [pks(duplicate_photos, *CAT)],
        [pks(duplicate_photos, *COFFEE)],
    ]
    assert "2 groups of near-duplicates" in first and "Page 1 of 2" in first


def test_a_storage_error_on_one_file_leaves_its_size_blank_and_shows_the_page(
    admin_client, duplicate_photos, monkeypatch
):
    """A storage other than the filesystem raises its own kinds (botocore's ClientError on a 403,
    say), not an OSError: the page showed a 500 instead of the groups."""
    from django.core.files.storage import FileSystemStorage

    class StorageError(Exception):
        pass

    def refused(self, name):
        raise StorageError(f"403 Forbidden: {name}")

    monkeypatch.setattr(FileSystemStorage, "size", refused)
    monkeypatch.setattr(FileSystemStorage, "open", refused)  # the image header, for the dimensions
    response = admin_client.get(reverse(PAGE))
    assert response.status_code == 200
    assert groups_on(response.content.decode()) == [pks(duplicate_photos, *CAT), pks(duplicate_photos, *COFFEE)]


def test_dimensions_come_from_the_image_fields_width_and_height_fields_without_opening_the_file(
    admin_client, duplicate_photos, monkeypatch
):
    """``ImageFieldFile.width`` opens the file whatever the field stores: with ``width_field`` and
    ``height_field`` (as Wagtail's images have) each row's file was read from the storage for its
    header on every page view (a remote GET each), though the row holds them."""
    from django.core.files.storage import FileSystemStorage

    image = Photo._meta.get_field("image")
    monkeypatch.setattr(image, "width_field", "stored_width")
    monkeypatch.setattr(image, "height_field", "stored_height")
    monkeypatch.setattr(Photo, "stored_width", property(lambda photo: 640 + photo.pk), raising=False)
    monkeypatch.setattr(Photo, "stored_height", property(lambda photo: 480), raising=False)
    opened = []
    real_open = FileSystemStorage.open
    monkeypatch.setattr(
        FileSystemStorage, "open", lambda self, name, *a, **k: opened.append(name) or real_open(self, name, *a, **k)
    )
    admin_client.get(reverse(PAGE))  # the thumbnails made (from the files), then kept
    opened.clear()
    html = admin_client.get(reverse(PAGE)).content.decode()
    cat = duplicate_photos["chelsea"]
    row = re.search(rf'<tr class="si-member" data-pk="{cat.pk}">(.*?)</tr>', html, re.S).group(1)
    assert f"{640 + cat.pk} × 480" in row
    assert opened == []


def test_the_changelist_links_to_the_page(admin_client, duplicate_photos):
    html = admin_client.get(reverse("admin:photos_photo_changelist")).content.decode()
    assert f'href="{reverse(PAGE)}"' in html and ">Duplicates<" in html


def test_a_related_objects_lookup_popup_has_no_link_to_the_page(admin_client, duplicate_photos):
    """The changelist in a raw_id_fields lookup popup (?_popup=1) is for picking a row; its
    Duplicates link took the popup, out of popup mode, to a page that deletes images."""
    changelist = reverse("admin:photos_photo_changelist")
    html = admin_client.get(changelist, {"_popup": "1", "_to_field": "id"}).content.decode()
    assert "si-duplicates-link" not in html and f'href="{reverse(PAGE)}"' not in html
    assert 'id="photo-search"' in html  # the popup's own searches stay


def test_a_bad_threshold_is_a_400_naming_it(admin_client, duplicate_photos):
    for value in ("abc", "0", "1.5", "nan"):
        response = admin_client.get(reverse(PAGE), {"threshold": value})
        assert response.status_code == 400
        assert "threshold must be" in response.content.decode()
    response = admin_client.get(reverse(PAGE), {"threshold": "0.5"})
    assert response.status_code == 200 and groups_on(response.content.decode())


@pytest.mark.parametrize("given", [{}, {"threshold": "0.125"}, {"threshold": "0.005"}])
def test_the_threshold_box_holds_a_value_the_browser_lets_the_editor_submit(
    admin_client, duplicate_photos, settings, given
):
    """Any threshold in (0, 1] is taken; the box had step 0.01 from 0.01: a setting of 0.175, or a link's
    0.125 or 0.005, filled it with a value the browser refused to submit (not a step from its min)."""
    from decimal import Decimal

    settings.SEMANTIC_IMAGES = {"DUPLICATE_THRESHOLD": 0.175}
    html = admin_client.get(reverse(PAGE), given).content.decode()
    box = re.search(r'<input type="number" name="threshold"[^>]*>', html).group(0)
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', box))
    value = Decimal(attrs["value"])
    assert value == Decimal(given.get("threshold", "0.175"))
    assert Decimal(attrs.get("min", "0")) <= value <= Decimal(attrs.get("max", "1"))
    step = attrs.get("step", "1")
    assert step == "any" or (value - Decimal(attrs.get("min", "0"))) % Decimal(step) == 0, box


def test_keep_one_asks_first_then_deletes_the_others(admin_client, duplicate_photos):
    keep = duplicate_photos["chelsea"]
    group = ",".join(map(str, pks(duplicate_photos, *CAT)))
    others = pks(duplicate_photos, "chelsea-jpeg", "chelsea-flip")
    mark_not_duplicates(Photo, [duplicate_photos["chelsea-jpeg"].pk, duplicate_photos["horse"].pk])
    confirm = admin_client.get(reverse(PAGE), {"keep": keep.pk, "group": group})
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Are you sure?" in html and 'id="confirm-keep"' in html and 'name="csrfmiddlewaretoken"' in html
    assert sorted(int(pk) for pk in re.findall(r'<li data-pk="(\d+)"', html)) == others
    assert Photo.objects.filter(pk__in=others).count() == 2  # nothing deleted by looking
    response = admin_client.post(reverse(PAGE), {"action": "keep", "keep": keep.pk, "group": group}, follow=True)
    assert response.status_code == 200
    assert not Photo.objects.filter(pk__in=others).exists() and Photo.objects.filter(pk=keep.pk).exists()
    assert "Kept “<bdi>Chelsea</bdi>” and deleted 2 other images." in response.content.decode()
    assert groups_on(response.content.decode()) == [pks(duplicate_photos, *COFFEE)]
    assert not NotDuplicate.objects.exists()  # marks of deleted rows are dropped


def test_not_duplicates_is_remembered_and_the_group_is_not_shown_again(admin_client, duplicate_photos):
    group = ",".join(map(str, pks(duplicate_photos, *COFFEE)))
    response = admin_client.post(
        reverse(PAGE), {"action": "apart", "group": group, "kept": "threshold=0.2"}, follow=False
    )
    assert response.status_code == 302 and response["Location"] == reverse(PAGE) + "?threshold=0.2"
    assert NotDuplicate.objects.count() == 1
    assert groups_on(admin_client.get(reverse(PAGE)).content.decode()) == [pks(duplicate_photos, *CAT)]


def test_without_delete_permission_there_is_no_keep_and_no_deletion(client, duplicate_photos):
    client.force_login(staff_user("editor", "view_photo", "change_photo"))
    html = client.get(reverse(PAGE)).content.decode()
    assert groups_on(html) and "Keep this one" not in html and 'value="Not duplicates"' in html
    keep, group = duplicate_photos["chelsea"].pk, ",".join(map(str, pks(duplicate_photos, *CAT)))
    assert client.get(reverse(PAGE), {"keep": keep, "group": group}).status_code == 403
    assert client.post(reverse(PAGE), {"action": "keep", "keep": keep, "group": group}).status_code == 403
    assert Photo.objects.filter(pk__in=pks(duplicate_photos, *CAT)).count() == 3


def test_a_viewer_can_look_but_not_mark(client, duplicate_photos):
    client.force_login(staff_user("viewer", "view_photo"))
    html = client.get(reverse(PAGE)).content.decode()
    assert groups_on(html) and 'value="Not duplicates"' not in html
    group = ",".join(map(str, pks(duplicate_photos, *COFFEE)))
    assert client.post(reverse(PAGE), {"action": "apart", "group": group}).status_code == 403
    assert not NotDuplicate.objects.exists()


def test_without_view_permission_the_page_is_refused(client, duplicate_photos):
    client.force_login(staff_user("nobody"))
    assert client.get(reverse(PAGE)).status_code == 403


def test_a_post_without_the_csrf_token_is_refused(duplicate_photos):
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    keep, group = duplicate_photos["chelsea"].pk, ",".join(map(str, pks(duplicate_photos, *CAT)))
    assert client.post(reverse(PAGE), {"action": "keep", "keep": keep, "group": group}).status_code == 403
    assert Photo.objects.filter(pk__in=pks(duplicate_photos, *CAT)).count() == 3


@pytest.mark.urls("tests.admin_urls")
def test_only_the_admins_own_rows_are_grouped_kept_or_deleted(client, duplicate_photos):
    """tests/admin_urls.py: an admin whose get_queryset shows editors only their own photos."""
    owner = staff_user("owner", "view_photo", "change_photo", "delete_photo")
    mine = pks(duplicate_photos, "chelsea", "chelsea-jpeg", "coffee")
    Photo.objects.filter(pk__in=mine).update(owner=owner)
    client.force_login(owner)
    url = reverse("own:photos_photo_duplicates")
    assert groups_on(client.get(url).content.decode()) == [pks(duplicate_photos, "chelsea", "chelsea-jpeg")]
    # A forged POST naming someone else's copies deletes only the editor's own rows.
    everything = ",".join(map(str, pks(duplicate_photos, *CAT, *COFFEE)))
    client.post(url, {"action": "keep", "keep": duplicate_photos["chelsea"].pk, "group": everything})
    assert set(Photo.objects.filter(pk__in=pks(duplicate_photos, *CAT, *COFFEE)).values_list("pk", flat=True)) == {
        duplicate_photos[n].pk for n in ("chelsea", "chelsea-flip", "coffee-crop")
    }
    # Keeping a row the editor cannot see deletes nothing.
    hidden, own = duplicate_photos["chelsea-flip"].pk, duplicate_photos["chelsea"].pk
    response = client.post(url, {"action": "keep", "keep": hidden, "group": f"{hidden},{own}"})
    assert response.status_code == 302 and Photo.objects.filter(pk=own).exists()


@pytest.mark.urls("tests.admin_urls")
def test_not_duplicates_marks_only_rows_the_editor_may_change(client, duplicate_photos):
    """tests/admin_urls.py: every photo listed, each editor may change only their own (a per-object
    permission): a group of someone else's photos is not marked, nor is one of theirs beside them."""
    owner = staff_user("owner", "view_photo", "change_photo")
    Photo.objects.filter(pk=duplicate_photos["coffee"].pk).update(owner=owner)
    client.force_login(owner)
    url = reverse("change_own:photos_photo_duplicates")
    for names in (COFFEE, CAT, ("coffee", *CAT)):
        response = client.post(url, {"action": "apart", "group": ",".join(map(str, pks(duplicate_photos, *names)))})
        assert response.status_code == 302
        assert "you may not change" in [str(m) for m in get_messages(response.wsgi_request)][-1]
    assert not NotDuplicate.objects.exists()
    Photo.objects.filter(pk=duplicate_photos["coffee-crop"].pk).update(owner=owner)  # both theirs now
    client.post(url, {"action": "apart", "group": ",".join(map(str, pks(duplicate_photos, *COFFEE, "chelsea")))})
    assert NotDuplicate.objects.count() == 1  # the pair they may change, without the cat


@pytest.mark.urls("tests.admin_urls")
def test_keep_one_never_deletes_a_row_the_editor_may_not_delete(client, duplicate_photos):
    """tests/admin_urls.py: every photo listed, each editor may delete only their own (a per-object
    ``has_delete_permission(request, obj)``, which the admin's own delete view obeys): "keep this one"
    deleted someone else's copies all the same. Now the confirmation and the POST are a 403, as the
    admin's delete view answers, and nothing is deleted."""
    owner = staff_user("owner", "view_photo", "change_photo", "delete_photo")
    Photo.objects.filter(pk__in=pks(duplicate_photos, "chelsea", "chelsea-jpeg")).update(owner=owner)
    client.force_login(owner)
    url = reverse("delete_own:photos_photo_duplicates")
    keep, group = duplicate_photos["chelsea"].pk, ",".join(map(str, pks(duplicate_photos, *CAT)))
    assert client.get(url, {"keep": keep, "group": group}).status_code == 403
    assert client.post(url, {"action": "keep", "keep": keep, "group": group}).status_code == 403
    assert Photo.objects.filter(pk__in=pks(duplicate_photos, *CAT)).count() == 3
    # Their own copy alone: deleted as before.
    own_group = ",".join(map(str, pks(duplicate_photos, "chelsea", "chelsea-jpeg")))
    assert client.post(url, {"action": "keep", "keep": keep, "group": own_group}).status_code == 302
    assert not Photo.objects.filter(pk=duplicate_photos["chelsea-jpeg"].pk).exists()


@pytest.mark.urls("tests.admin_urls")
def test_keep_is_offered_only_where_the_editor_may_delete_every_other_copy(client, duplicate_photos):
    """tests/admin_urls.py: each editor may delete only their own photos. "Keep this one" was shown
    on every row, and answered 403 where an other copy was someone else's: now it is offered only
    where the editor may delete all the others, and a group without one says why."""
    owner = staff_user("owner", "view_photo", "change_photo", "delete_photo")
    Photo.objects.filter(pk__in=pks(duplicate_photos, "chelsea", "coffee")).update(owner=owner)
    client.force_login(owner)
    url = reverse("delete_own:photos_photo_duplicates")
    html = client.get(url).content.decode()
    assert groups_on(html) == [pks(duplicate_photos, *CAT), pks(duplicate_photos, *COFFEE)]

    def keep_links(name: str) -> list[str]:
        group = re.search(rf'id="group-{name}".*?</div>', html, re.S).group(0)
        return re.findall(r'class="button si-keep" href="([^"]+)"', group)

    # The cat: one copy is theirs, two are not; no row can be kept without deleting someone else's.
    assert keep_links("1") == [] and "you may not delete" in re.search(r'id="group-1".*?</div>', html, re.S).group(0)
    # The coffee: the crop is someone else's, so only keeping the crop (deleting their own) is offered.
    [link] = keep_links("2")
    assert f"keep={duplicate_photos['coffee-crop'].pk}&" in link.replace("&amp;", "&")
    assert client.get(url + link.replace("&amp;", "&")).status_code == 200
    # With every copy theirs, every row offers it again.
    Photo.objects.filter(pk__in=pks(duplicate_photos, *CAT, *COFFEE)).update(owner=owner)
    html = client.get(url).content.decode()
    assert len(keep_links("1")) == 3 and len(keep_links("2")) == 2 and "you may not delete" not in html


@pytest.mark.urls("tests.admin_urls")
def test_a_hidden_missing_or_malformed_id_in_a_forged_form_changes_nothing_and_answers_alike(client, duplicate_photos):
    """Keep, confirm and "not duplicates" naming, beside one of the editor's rows, a row they may
    not see, one that does not exist, or an id no row can have: the same redirect and message."""
    owner = staff_user("owner", "view_photo", "change_photo", "delete_photo")
    own, hidden = duplicate_photos["chelsea"].pk, duplicate_photos["chelsea-flip"].pk
    Photo.objects.filter(pk__in=pks(duplicate_photos, "chelsea", "chelsea-jpeg")).update(owner=owner)
    client.force_login(owner)
    url = reverse("own:photos_photo_duplicates")
    missing = Photo.objects.order_by("-pk").first().pk + 1000
    answers = {}
    for other in (hidden, missing, "99999999999999999999999", "-1", "550e8400-e29b-41d4-a716-446655440000", "x\x00"):
        group = f"{own},{other}"
        responses = (
            client.get(url, {"keep": own, "group": group}),
            client.get(url, {"keep": other, "group": group}),
            client.post(url, {"action": "keep", "keep": other, "group": group}),
            client.post(url, {"action": "apart", "group": group}),
        )
        answers[other] = [
            (r.status_code, r["Location"], [str(m) for m in get_messages(r.wsgi_request)][-1]) for r in responses
        ]
    assert all(answer == answers[missing] for answer in answers.values()), answers
    assert answers[missing][0][:2] == (302, url) and "not among the ones you can see" in answers[missing][0][2]
    assert Photo.objects.filter(pk__in=[own, hidden]).count() == 2 and not NotDuplicate.objects.exists()


def test_keep_one_goes_back_to_the_threshold_and_page_it_came_from(admin_client, duplicate_photos):
    keep = duplicate_photos["chelsea"]
    group = ",".join(map(str, pks(duplicate_photos, *CAT)))
    html = admin_client.get(reverse(PAGE), {"threshold": "0.3", "p": "1"}).content.decode()
    link = re.search(rf'href="([^"]*keep={keep.pk}&amp;[^"]*)"', html).group(1).replace("&amp;", "&")
    assert "threshold=0.3" in link and "p=1" in link
    confirm = admin_client.get(reverse(PAGE) + link).content.decode()
    back = reverse(PAGE) + "?threshold=0.3&amp;p=1"
    assert f'href="{back}" class="button cancel-link"' in confirm
    assert re.search(r'name="kept" value="threshold=0.3&amp;p=1"', confirm)
    response = admin_client.post(
        reverse(PAGE), {"action": "keep", "keep": keep.pk, "group": group, "kept": "threshold=0.3&p=1"}
    )
    assert response.status_code == 302 and response["Location"] == reverse(PAGE) + "?threshold=0.3&p=1"
