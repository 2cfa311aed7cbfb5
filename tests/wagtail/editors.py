"""Editors of one collection, for the permission tests."""

from django.contrib.auth.models import Group, Permission
from wagtail.models import GroupCollectionPermission


def editor_of(collection, django_user_model, username: str):
    """A user in a new group that may add, change and choose images in ``collection`` only."""
    group = Group.objects.create(name=f"{collection.name} editors")
    group.permissions.add(Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"))
    for codename in ("add_image", "change_image", "choose_image"):
        GroupCollectionPermission.objects.create(
            group=group,
            collection=collection,
            permission=Permission.objects.get(content_type__app_label="wagtailimages", codename=codename),
        )
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "password")
    user.groups.add(group)
    return user
