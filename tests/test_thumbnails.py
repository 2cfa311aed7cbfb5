"""The API's ``thumbnail_url`` and the admin's thumbnails: sorl-thumbnail's cached thumbnails of the
image file, served from storage; null (the API) or the image itself (the admin) without them."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image
from rest_framework.test import APIClient
from sorl.thumbnail import default as sorl
from sorl.thumbnail.images import ImageFile

from django_semantic_images.thumbnails import cache_key, thumbnail_geometry, thumbnail_url, thumbnails_enabled
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db

LIST = "/api/photos/"


@pytest.fixture
def api(settings) -> APIClient:
    """An anonymous API client on the URLs that also serve the media files."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    cache.clear()  # throttle history and sorl-thumbnail's cached keys
    return APIClient()


def results_by_id(client: APIClient, url: str = LIST, **params) -> dict[int, dict]:
    response = client.get(url, {"limit": 100, **params})
    assert response.status_code == 200, response.content
    return {row["id"]: row for row in response.json()["results"]}


def fetch_image(client: APIClient, url: str) -> Image.Image:
    """GET ``url`` through the test client (the media view) and decode it."""
    response = client.get(urlsplit(url).path)
    assert response.status_code == 200
    return Image.open(io.BytesIO(b"".join(response.streaming_content)))


def stored_path(url: str) -> Path:
    path = urlsplit(url).path
    assert path.startswith(django_settings.MEDIA_URL), url
    return Path(django_settings.MEDIA_ROOT) / path.removeprefix(django_settings.MEDIA_URL)


def test_thumbnail_url_serves_a_small_copy_that_keeps_the_proportions(api, make_photo, sample_paths):
    big = make_photo(sample_paths["hubble_deep_field"])  # 1000 x 872
    wide = make_photo(sample_paths["chelsea"])  # 451 x 300
    tiny = make_photo(Image.new("RGB", (120, 90), "red"))
    rows = results_by_id(api)
    for photo, expected in ((big, (400, 349)), (wide, (400, 266)), (tiny, (120, 90))):
        url = rows[photo.pk]["thumbnail_url"]
        assert url.startswith("http://testserver/media/cache/"), url
        assert url != rows[photo.pk]["image_url"]
        image = fetch_image(api, url)
        image.load()
        assert image.size == expected, (photo.image.name, image.size)  # fits in 400 px, never enlarged
    assert stored_path(rows[big.pk]["thumbnail_url"]).stat().st_size < big.image.size / 3


def test_a_thumbnail_is_made_once_then_served_from_storage(api, make_photo, sample_paths):
    photo = make_photo(sample_paths["coffee"])
    first = results_by_id(api)[photo.pk]["thumbnail_url"]
    made = stored_path(first).stat().st_mtime_ns
    cache.clear()  # what this process cached: the next request must find it in the database
    # sorl-thumbnail's store (its database table) knows it, so another process finds it too.
    assert sorl.kvstore.get(ImageFile(urlsplit(first).path.removeprefix(django_settings.MEDIA_URL))) is not None
    again = results_by_id(api)[photo.pk]["thumbnail_url"]
    assert again == first
    assert stored_path(first).stat().st_mtime_ns == made  # not written again


def test_a_missing_or_broken_file_has_no_thumbnail_and_no_error(api, make_photo, sample_paths):
    good = make_photo(sample_paths["coffee"])
    not_an_image = make_photo(b"not a picture", name="notes.jpg")
    data = image_bytes(Image.open(sample_paths["rocket"]))
    truncated = make_photo(data[: len(data) // 3], name="cut.jpg")
    gone = make_photo(sample_paths["chelsea"])
    gone.image.storage.delete(gone.image.name)
    rows = results_by_id(api)
    assert rows[good.pk]["thumbnail_url"]
    for photo in (not_an_image, truncated, gone):
        assert rows[photo.pk]["thumbnail_url"] is None, photo.image.name
        assert rows[photo.pk]["image_url"]  # the row is still listed, with its file's URL
    # The lost file comes back: not read again on every listing, but after RETRY_AFTER seconds.
    assert (
        gone.image.storage.save(gone.image.name, ContentFile(sample_paths["chelsea"].read_bytes())) == gone.image.name
    )
    assert results_by_id(api)[gone.pk]["thumbnail_url"] is None
    cache.delete(cache_key(gone.image, thumbnail_geometry()))  # as RETRY_AFTER seconds later
    assert results_by_id(api)[gone.pk]["thumbnail_url"].startswith("http://testserver/media/cache/")


def test_without_sorl_thumbnail_the_api_says_null_and_the_admin_shows_the_image(
    api, settings, make_photo, sample_paths, admin_client
):
    photo = make_photo(sample_paths["coffee"])
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "sorl.thumbnail"]
    assert not thumbnails_enabled()
    assert thumbnail_url(photo.image) is None
    assert results_by_id(api)[photo.pk]["thumbnail_url"] is None
    html = admin_client.get(reverse("admin:photos_photo_changelist")).content.decode()
    assert re.search(r'<img src="([^"]+)"[^>]*class="si-thumb"', html).group(1) == photo.image.url


def test_the_admin_shows_the_apis_thumbnail(api, make_photo, sample_paths, admin_client):
    photo = make_photo(sample_paths["astronaut"], title="Astronaut")
    thumbnail = urlsplit(results_by_id(api)[photo.pk]["thumbnail_url"]).path
    html = admin_client.get(reverse("admin:photos_photo_changelist")).content.decode()
    assert re.search(r'<img src="([^"]+)" alt="Astronaut" class="si-thumb"', html).group(1) == thumbnail


def test_with_sorl_thumbnail_a_file_that_gives_no_thumbnail_is_not_shown_whole_in_the_admin(
    api, make_photo, admin_client, settings
):
    """A file that gives no thumbnail (over MAX_IMAGE_PIXELS: a 150-megapixel panorama) was put in
    the changelist and the Duplicates page as the original file, which every page view then loaded
    whole into the editor's browser; docs/admin.md promises sorl-thumbnail's thumbnails there."""
    settings.SEMANTIC_IMAGES = {"MAX_IMAGE_PIXELS": 64 * 64}
    big = make_photo(image_bytes(Image.new("RGB", (65, 64)), "PNG"), name="panorama.png", title="Panorama")
    make_photo(image_bytes(Image.new("RGB", (64, 64)), "PNG"), name="fits.png", title="Fits")
    html = admin_client.get(reverse("admin:photos_photo_changelist")).content.decode()
    assert f'<img src="{big.image.url}"' not in html
    assert re.search(r'<img src="([^"]+)" alt="Fits" class="si-thumb"', html).group(1).startswith("/media/cache/")


def test_a_concurrent_request_making_the_same_thumbnail_is_not_remembered_as_no_thumbnail(
    api, make_photo, sample_paths, monkeypatch
):
    """sorl-thumbnail raises "Cannot add thumbnails for source ... that is not in kvstore" when two
    requests make one new thumbnail at once (seen under load, docs/performance.md): the thumbnail is
    asked for again, not cached as missing for RETRY_AFTER."""
    import sorl.thumbnail
    from sorl.thumbnail.helpers import ThumbnailError

    photo = make_photo(sample_paths["chelsea"])
    real = sorl.thumbnail.get_thumbnail
    calls = []

    def racing(file, geometry, **options):
        calls.append(file.name)
        if len(calls) == 1:  # what the request that lost the race gets from sorl-thumbnail
            raise ThumbnailError(f"Cannot add thumbnails for source: `{file.name}` that is not in kvstore.")
        return real(file, geometry, **options)

    monkeypatch.setattr(sorl.thumbnail, "get_thumbnail", racing)
    url = thumbnail_url(photo.image)
    assert url is not None and len(calls) == 2
    assert fetch_image(api, url).size == (400, 266)
    assert cache.get(cache_key(photo.image, thumbnail_geometry())) == url.removeprefix(django_settings.MEDIA_URL)


class StoredFile:
    """A stored file as a field gives it: a name in a storage."""

    def __init__(self, name: str, storage) -> None:
        self.name, self.storage = name, storage


def color_of(url: str) -> tuple[int, int, int]:
    with sorl.storage.open(url.removeprefix(django_settings.MEDIA_URL)) as stored:
        return Image.open(io.BytesIO(stored.read())).convert("RGB").getpixel((10, 10))


def test_files_of_one_name_in_different_storages_get_their_own_thumbnails(api, tmp_path):
    """A model's own storage (a private folder, say) holds ``photos/a.jpg`` as the default storage
    does: sorl-thumbnail knows a storage that is not an alias of STORAGES by its class alone, so
    both files got the thumbnail of whichever was asked first, the private picture included."""
    from django.core.files.storage import FileSystemStorage, InMemoryStorage, default_storage

    name = "photos/same-name.jpg"
    private = FileSystemStorage(location=tmp_path / "private", base_url="/private/")
    archive = FileSystemStorage(location=tmp_path / "archive", base_url="/archive/")
    stores = {"private": private, "default": default_storage, "archive": archive, "memory": InMemoryStorage()}
    colors = {"private": (0, 0, 255), "default": (255, 0, 0), "archive": (0, 128, 0), "memory": (255, 255, 0)}
    for label, storage in stores.items():
        assert storage.save(name, ContentFile(image_bytes(Image.new("RGB", (600, 400), colors[label])))) == name
    for fresh in (False, True):  # from sorl-thumbnail's store, then from Django's cache too
        urls = {}
        for label, storage in stores.items():  # the private file first
            if fresh:
                cache.clear()
            urls[label] = thumbnail_url(StoredFile(name, storage))
            assert max(abs(a - b) for a, b in zip(color_of(urls[label]), colors[label], strict=True)) < 8, label
        assert len(set(urls.values())) == len(stores)
    # The default storage's thumbnails keep the names they had (sorl-thumbnail's own).
    assert urls["default"] == thumbnail_url(StoredFile(name, default_storage))
    assert sorl.kvstore.get(ImageFile(urls["default"].removeprefix(django_settings.MEDIA_URL))) is not None


class CountingCache:
    """Django's cache, counting the reads of thumbnail names (a spy: every call reaches the cache)."""

    def __init__(self, real) -> None:
        self.real = real
        self.reads: list[int] = []  # how many keys each read asked for

    def get(self, key, *args, **kwargs):
        self.reads.append(1)
        return self.real.get(key, *args, **kwargs)

    def get_many(self, keys, *args, **kwargs):
        self.reads.append(len(keys))
        return self.real.get_many(keys, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_page_of_results_reads_the_thumbnails_from_the_cache_at_once(api, make_photo, sample_paths, monkeypatch):
    from django_semantic_images import thumbnails

    photos = [make_photo(sample_paths[stem]) for stem in ("coffee", "chelsea", "rocket")]
    first = results_by_id(api)  # makes the thumbnails and caches their names
    spy = CountingCache(thumbnails.cache)
    monkeypatch.setattr(thumbnails, "cache", spy)
    again = results_by_id(api)
    assert spy.reads == [3]  # one read of three names, not one read per row
    for photo in photos:
        assert again[photo.pk]["thumbnail_url"] == first[photo.pk]["thumbnail_url"]
        assert again[photo.pk]["thumbnail_url"].startswith("http://testserver/media/cache/")


def test_a_serializer_with_its_own_thumbnails_makes_none_with_sorl(make_photo, sample_paths, monkeypatch):
    from django_semantic_images import thumbnails
    from photos.api import PhotoResultSerializer

    class OwnThumbnails(PhotoResultSerializer):
        def get_thumbnail_url(self, obj):
            return f"/own/{obj.pk}.jpg"

    def never(*args, **kwargs):
        raise AssertionError("sorl-thumbnail was asked for a thumbnail the serializer does not show")

    photos = [make_photo(sample_paths[stem]) for stem in ("coffee", "chelsea")]
    monkeypatch.setattr(thumbnails, "thumbnail_urls", never)
    data = OwnThumbnails(photos, many=True).data
    assert [row["thumbnail_url"] for row in data] == [f"/own/{p.pk}.jpg" for p in photos]


def test_result_fields_are_built_once_per_class_and_each_serializer_binds_its_own(
    make_photo, sample_paths, monkeypatch, settings
):
    from rest_framework import serializers
    from rest_framework.test import APIRequestFactory

    from django_semantic_images.api.serializers import SemanticResultSerializer
    from photos.models import Photo

    class Owner(serializers.Serializer):
        page = serializers.SerializerMethodField()

        def get_page(self, obj):  # the nested serializer reads the request of its own parent
            return self.context["request"].build_absolute_uri(f"/owners/{obj.pk}/")

    class WithOwner(SemanticResultSerializer):
        owner = Owner(source="*", read_only=True)

        class Meta:
            model = Photo
            fields = ["id", "title", "image_url", "owner"]

    built = []
    original = serializers.ModelSerializer.get_fields
    monkeypatch.setattr(serializers.ModelSerializer, "get_fields", lambda self: built.append(1) or original(self))
    settings.ALLOWED_HOSTS = ["one.example", "two.example"]
    photo = make_photo(sample_paths["coffee"])
    factory = APIRequestFactory()
    one, two = (factory.get("/", HTTP_HOST=host) for host in ("one.example", "two.example"))
    first, second = WithOwner(photo, context={"request": one}), WithOwner(photo, context={"request": two})
    assert first.data["image_url"].startswith("http://one.example/")
    assert second.data["image_url"].startswith("http://two.example/")
    assert (first.data["owner"]["page"], second.data["owner"]["page"]) == (
        f"http://one.example/owners/{photo.pk}/",
        f"http://two.example/owners/{photo.pk}/",
    )
    assert len(built) == 1  # the second serializer copied the first one's fields
    assert not set(map(id, first.fields.values())) & set(map(id, second.fields.values()))

    class PerRequest(WithOwner):
        cache_fields = False

    hosts = [PerRequest(photo, context={"request": r}).data["image_url"].split("/")[2] for r in (one, two)]
    assert hosts == ["one.example", "two.example"]
    assert len(built) == 3


def test_a_serializer_that_chooses_its_fields_per_request_never_serves_one_callers_fields_to_another(
    make_photo, sample_paths
):
    """A ``get_field_names`` that shows staff more fields: the fields built for a staff caller
    were cached for the class and served to the next, anonymous, caller."""
    from django.contrib.auth.models import AnonymousUser, User
    from rest_framework.test import APIRequestFactory

    from django_semantic_images.api.serializers import SemanticResultSerializer
    from photos.models import Photo

    class StaffSeeAltText(SemanticResultSerializer):
        class Meta:
            model = Photo
            fields = ["id", "title", "alt_text"]

        def get_field_names(self, declared_fields, info):
            names = super().get_field_names(declared_fields, info)
            return names if self.context["request"].user.is_staff else [n for n in names if n != "alt_text"]

    photo = make_photo(sample_paths["coffee"], alt_text="a private note")
    staff, anonymous = APIRequestFactory().get("/"), APIRequestFactory().get("/")
    staff.user, anonymous.user = User(is_staff=True), AnonymousUser()
    assert StaffSeeAltText(photo, context={"request": staff}).data["alt_text"] == "a private note"
    assert "alt_text" not in StaffSeeAltText(photo, context={"request": anonymous}).data


def logo_bytes(fmt: str) -> bytes:
    """A red square on a transparent 600 x 400 background, as an editor's logo, in ``fmt``."""
    logo = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    logo.paste((255, 0, 0, 255), (200, 100, 400, 300))
    if fmt == "GIF":  # a palette and one transparent index, as GIFs keep it
        logo = logo.convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
        corner = logo.getpixel((0, 0))
        buf = io.BytesIO()
        logo.save(buf, fmt, transparency=corner)
        return buf.getvalue()
    buf = io.BytesIO()
    logo.save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF"])
def test_a_transparent_image_keeps_its_transparency_in_the_thumbnail(api, make_photo, fmt):
    """sorl-thumbnail wrote every thumbnail as JPEG: the transparent background became black."""
    photo = make_photo(logo_bytes(fmt), name=f"logo.{fmt.lower()}")
    url = results_by_id(api)[photo.pk]["thumbnail_url"]
    thumbnail = fetch_image(api, url).convert("RGBA")
    assert thumbnail.size == (400, 267)
    assert thumbnail.getpixel((5, 5))[3] == 0  # the background is still transparent
    red, green, blue, alpha = thumbnail.getpixel((200, 133))
    assert alpha == 255 and red > 230 and green < 30 and blue < 30  # the logo is still red
    # A photo keeps sorl-thumbnail's format (JPEG by default), which is small.
    jpeg = make_photo(Image.new("RGB", (600, 400), "green"), name="photo.jpg")
    assert urlsplit(results_by_id(api)[jpeg.pk]["thumbnail_url"]).path.endswith(".jpg")


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_a_transparent_image_whose_name_says_photo_gets_a_white_background_not_a_black_one(api, make_photo, fmt):
    """A transparent file under a photo's extension (a PNG saved as .jpg, an .apng, an .ico) keeps
    sorl-thumbnail's JPEG, which has no alpha: the transparent part came out black, while the
    pipeline composites it onto white."""
    photo = make_photo(logo_bytes(fmt), name="logo.jpg")
    url = results_by_id(api)[photo.pk]["thumbnail_url"]
    assert urlsplit(url).path.endswith(".jpg")
    thumbnail = fetch_image(api, url).convert("RGB")
    assert near(thumbnail.getpixel((5, 5)), (255, 255, 255)), thumbnail.getpixel((5, 5))
    assert near(thumbnail.getpixel((200, 133)), (255, 0, 0))


def test_a_16_bit_greyscale_image_gets_a_grey_thumbnail_that_follows_its_gradient(api, make_photo):
    """Pillow opens a 16-bit greyscale PNG as mode "I;16"; converted to RGB its values above 255
    were clipped, and the thumbnail was all white."""
    import numpy as np

    ramp = np.linspace(0, 65535, 600).round().astype(np.uint16)  # black on the left, white on the right
    source = Image.fromarray(np.tile(ramp, (100, 1)))
    assert source.mode == "I;16"
    buf = io.BytesIO()
    source.save(buf, "PNG")
    photo = make_photo(buf.getvalue(), name="scan.png")
    thumbnail = fetch_image(api, results_by_id(api)[photo.pk]["thumbnail_url"]).convert("L")
    assert thumbnail.size == (400, 67)
    row = [thumbnail.getpixel((x, 33)) for x in range(0, 400, 20)]
    assert row[0] < 20 and row[-1] > 225, row
    assert all(b >= a for a, b in zip(row, row[1:], strict=False)), row  # darker to lighter, as the source
    expected = [round(x / 399 * 255) for x in range(0, 400, 20)]
    assert max(abs(a - b) for a, b in zip(row, expected, strict=True)) < 12, row


@pytest.mark.parametrize(
    ("kind", "top"),
    [("float32", 1.0), ("int32", 255)],  # Pillow's modes "F" (0 to 1) and "I" holding 8-bit values
)
def test_a_float_or_32_bit_grey_tiff_gets_the_grey_thumbnail_the_pipeline_sees(api, make_photo, kind, top):
    """A float TIFF (0 to 1) was converted to RGB as it is, all black; an "I" image of 8-bit values
    was scaled as 16 bits, all black too. The pipeline (``imaging.to_8bit``) reads both as a ramp."""
    import numpy as np

    ramp = np.linspace(0, top, 600).astype(kind)
    source = Image.fromarray(np.tile(ramp, (100, 1)))
    assert source.mode == ("F" if kind == "float32" else "I")
    buf = io.BytesIO()
    source.save(buf, "TIFF")
    photo = make_photo(buf.getvalue(), name="scan.tif")
    thumbnail = fetch_image(api, results_by_id(api)[photo.pk]["thumbnail_url"]).convert("L")
    row = [thumbnail.getpixel((x, 33)) for x in range(0, 400, 20)]
    expected = [round(x / 399 * 255) for x in range(0, 400, 20)]
    assert max(abs(a - b) for a, b in zip(row, expected, strict=True)) < 12, row


@pytest.mark.parametrize("fmt", ["JPEG", "AVIF"])
def test_a_picture_turned_by_its_orientation_tag_gets_an_upright_thumbnail(api, make_photo, fmt):
    """sorl-thumbnail reads the orientation through ``_getexif()``, which Pillow's AVIF images lack
    (an AVIF's rotation, its ``irot``, comes as the EXIF tag): the thumbnail was on its side, while
    the pipeline and browsers show the picture upright."""
    from PIL import ExifTags, features

    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("Pillow without AVIF")
    sideways = Image.new("RGB", (600, 300), "blue")
    sideways.paste((255, 0, 0), (0, 0, 300, 300))  # red on the left: on top once turned upright
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # turn 90 degrees clockwise to show
    buf = io.BytesIO()
    sideways.save(buf, fmt, exif=exif.tobytes(), quality=90)
    photo = make_photo(buf.getvalue(), name=f"turned.{fmt.lower()}")
    thumbnail = fetch_image(api, results_by_id(api)[photo.pk]["thumbnail_url"]).convert("RGB")
    assert thumbnail.size == (200, 400)
    assert near(thumbnail.getpixel((100, 50)), (255, 0, 0)) and near(thumbnail.getpixel((100, 350)), (0, 0, 255))


def color_at(client: APIClient, url: str) -> tuple[int, int, int]:
    return fetch_image(client, url).convert("RGB").getpixel((10, 10))


def near(color: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(color, expected, strict=True)) < 12


def test_a_file_written_over_under_its_name_gets_a_new_thumbnail(api, make_photo, settings):
    """A storage that writes over a file of the same name (``allow_overwrite``, S3's
    ``file_overwrite``): the thumbnail's name was cached and known to sorl-thumbnail's store by the
    file's name, so the new picture kept showing the old one's thumbnail."""
    from django_semantic_images.signals import embedding_deferred

    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "tests.storages.OverwritingStorage"},
    }
    photo = make_photo(Image.new("RGB", (600, 400), "red"), name="swap.jpg")
    name = photo.image.name
    assert near(color_at(api, results_by_id(api)[photo.pk]["thumbnail_url"]), (255, 0, 0))
    photo.image = ContentFile(image_bytes(Image.new("RGB", (600, 400), "blue")), name="swap.jpg")
    with embedding_deferred():
        photo.save()
    assert photo.image.name == name  # written over, under the same name
    assert near(color_at(api, results_by_id(api)[photo.pk]["thumbnail_url"]), (0, 0, 255))
    cache.clear()  # another process: from sorl-thumbnail's store
    assert near(color_at(api, results_by_id(api)[photo.pk]["thumbnail_url"]), (0, 0, 255))
    # A save that stores no new file keeps the thumbnail (not made again).
    thumbnail = stored_path(results_by_id(api)[photo.pk]["thumbnail_url"])
    made = thumbnail.stat().st_mtime_ns
    photo.title = "Blue"
    photo.save()
    assert thumbnail.stat().st_mtime_ns == made
    assert cache.get(cache_key(photo.image, thumbnail_geometry())) == str(thumbnail.relative_to(settings.MEDIA_ROOT))


def test_an_upload_under_a_deleted_rows_file_name_gets_its_own_thumbnail(api, make_photo):
    """A row and its file deleted (the site's cleanup), then a new upload takes the free name: the
    old picture's thumbnail, cached and in sorl-thumbnail's store under that name, was shown for it."""
    from django_semantic_images.signals import embedding_deferred
    from photos.models import Photo

    old = make_photo(Image.new("RGB", (600, 400), "red"), name="reused.jpg")
    name = old.image.name
    assert near(color_at(api, results_by_id(api)[old.pk]["thumbnail_url"]), (255, 0, 0))
    old.image.storage.delete(name)
    old.delete()
    new = Photo(title="new", image=ContentFile(image_bytes(Image.new("RGB", (600, 400), "blue")), name="reused.jpg"))
    with embedding_deferred():
        new.save()
    assert new.image.name == name  # the free name, taken again
    assert near(color_at(api, results_by_id(api)[new.pk]["thumbnail_url"]), (0, 0, 255))


def test_the_thumbnail_engine_never_opens_postscript():
    """Pillow draws EPS by running Ghostscript on the file: the engine refuses it, as the pipeline
    and the searches by photo do, and opens the rest as before."""
    from PIL import UnidentifiedImageError

    from django_semantic_images.thumbnail_engine import Engine

    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"
    with pytest.raises(UnidentifiedImageError):
        Engine().get_image(io.BytesIO(eps))
    assert Engine().get_image(io.BytesIO(image_bytes(Image.new("RGB", (8, 8)), "PNG"))).size == (8, 8)


def test_an_image_over_max_image_pixels_gets_no_thumbnail(api, make_photo, settings):
    """The pipeline never decodes an image over MAX_IMAGE_PIXELS; the thumbnail engine decoded it
    whole, in the request that listed it. It is still listed, with its file's URL."""
    settings.SEMANTIC_IMAGES = {"MAX_IMAGE_PIXELS": 64 * 64}
    big = make_photo(image_bytes(Image.new("RGB", (65, 64)), "PNG"), name="big.png")
    fits = make_photo(image_bytes(Image.new("RGB", (64, 64)), "PNG"), name="fits.png")
    rows = results_by_id(api)
    assert rows[big.pk]["thumbnail_url"] is None and rows[big.pk]["image_url"]
    assert rows[fits.pk]["thumbnail_url"]


def test_a_file_over_max_file_bytes_gets_no_thumbnail_and_is_not_read(api, make_photo, settings, monkeypatch):
    """The pipeline reads no stored file over MAX_FILE_BYTES; the thumbnail engine read any file whole
    into the web process that listed it (a multi-page scan of a gigabyte, every RETRY_AFTER)."""
    from django.core.files.storage import FileSystemStorage

    padded = image_bytes(Image.new("RGB", (64, 64)), "PNG") + b"\0" * 5000  # few pixels, many bytes
    big = make_photo(padded, name="padded.png")
    fits = make_photo(image_bytes(Image.new("RGB", (64, 64)), "PNG"), name="fits.png")
    settings.SEMANTIC_IMAGES = {"MAX_FILE_BYTES": 4000}
    opened = []
    real_open = FileSystemStorage.open
    monkeypatch.setattr(
        FileSystemStorage, "open", lambda self, name, *a, **k: opened.append(name) or real_open(self, name, *a, **k)
    )
    rows = results_by_id(api)
    assert rows[big.pk]["thumbnail_url"] is None and rows[big.pk]["image_url"]
    assert big.image.name not in opened
    assert rows[fits.pk]["thumbnail_url"]
