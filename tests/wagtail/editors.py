"""Editors of one collection, for the permission tests."""

from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from wagtail.models import Collection, GroupCollectionPermission


def group_of(collection, name: str, codenames) -> Group:
    """A new group with admin access that may do ``codenames`` (``change_image`` ...) in ``collection`` only."""
    group = Group.objects.create(name=name)
    group.permissions.add(Permission.objects.get(content_type__app_label="wagtailadmin", codename="access_admin"))
    for codename in codenames:
        GroupCollectionPermission.objects.create(
            group=group,
            collection=collection,
            permission=Permission.objects.get(content_type__app_label="wagtailimages", codename=codename),
        )
    return group


def editor_of(collection, django_user_model, username: str):
    """A user in a new group that may add, change and choose images in ``collection`` only."""
    group = group_of(collection, f"{collection.name} editors", ("add_image", "change_image", "choose_image"))
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "password")
    user.groups.add(group)
    return user


def chooser_of(collection, django_user_model, username: str):
    """A user who may only choose the images of ``collection``: sees them, may not change them."""
    group = group_of(collection, f"{collection.name} choosers", ("choose_image",))
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "password")
    user.groups.add(group)
    return user


def pets_editor_and_a_products_image(client, django_user_model, make_image, sample_paths):
    """The Pets and Products collections, a mug among the products, and ``client`` logged in as an
    editor of the pets only."""
    root = Collection.get_first_root_node()
    pets, products = root.add_child(name="Pets"), root.add_child(name="Products")
    mug = make_image(sample_paths["coffee"], "mug", collection=products)
    client.force_login(editor_of(pets, django_user_model, "pets"))
    return pets, products, mug


def assert_hidden_answers_like_missing(client, url_names, image) -> None:
    """Each page named answers for ``image`` (hidden from the client's user) as for a missing id."""
    for name in url_names:
        hidden = client.get(reverse(name, args=(image.pk,)))
        missing = client.get(reverse(name, args=(image.pk + 1000,)))
        assert hidden.status_code == missing.status_code == 404, name
        assert hidden.content == missing.content and hidden["Content-Type"] == missing["Content-Type"]
