"""The editors' admin in headless Chromium (Debian's chromium + chromedriver, driven by Selenium)
against the example site on Django's live server.

The screenshots go to a temporary folder; ``make screenshots`` sets ``SEMANTIC_IMAGES_SCREENSHOTS``
to ``docs/img`` to refresh the documentation's. A plain test run never writes under ``docs/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from PIL import Image, ImageOps
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from django_semantic_images.models import NotDuplicate
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from photos.models import Photo
from tests.conftest import duplicate_library, image_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parent.parent / "docs"
#: The folder for the screenshots; unset: a temporary one (``make screenshots`` sets ``docs/img``).
SCREENSHOTS_ENV = "SEMANTIC_IMAGES_SCREENSHOTS"


def screenshot_folder(default: Path) -> Path:
    """``$SEMANTIC_IMAGES_SCREENSHOTS`` when set, else ``default`` (a temporary folder)."""
    return Path(os.environ.get(SCREENSHOTS_ENV) or default)


def docs_state() -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in DOCS.rglob("*") if p.is_file()}


pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # the live server must see committed rows
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()), reason="needs chromium"),
]

TITLES = {
    "chelsea": "Chelsea",
    "cat-crop": "Chelsea, cropped",
    "coffee": "Morning coffee",
    "rocket": "Launch day",
    "astronaut": "Portrait",
    "motorcycle_left": "Motorbike",
    "china": "Summer palace",
    "flower": "Flower",
    "horse": "Horse",
    "coins": "Coins",
}


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """Where this run's screenshots go; without the variable, nothing under docs/ may change."""
    folder = screenshot_folder(tmp_path_factory.mktemp("screenshots"))
    before = docs_state()
    yield folder
    if not os.environ.get(SCREENSHOTS_ENV):
        assert docs_state() == before, "a plain test run changed files under docs/"


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def site(live_server, settings, sample_paths, browser):
    """Photos with titles, embedded; an editor; the example URLs plus media files."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    User.objects.create_superuser("editor", "editor@example.com", "pw")
    cat = Image.open(sample_paths["chelsea"]).convert("RGB")
    sources = {stem: (path.read_bytes(), path.name) for stem, path in sample_paths.items() if stem in TITLES}
    sources["cat-crop"] = (image_bytes(cat.crop((30, 10, 420, 290)), quality=80), "cat-crop.jpg")
    photos = {}
    with embedding_deferred():
        for stem, (data, name) in sources.items():
            photo = Photo(title=TITLES[stem])
            photo.image.save(name, ContentFile(data), save=False)
            photo.save()
            photos[stem] = photo
    assert not embed_instances(list(photos.values())).failed
    browser.delete_all_cookies()
    return live_server.url, photos


def log_in(browser, base: str, username: str, password: str = "pw") -> None:
    browser.get(f"{base}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "user-tools")))
    # A closed navigation sidebar leaves the screenshots room for the table.
    browser.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")


def row_titles(browser) -> list[str]:
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "changelist")))
    return [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody .field-__str__")]


def screenshot(browser, folder: Path, name: str) -> None:
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    )
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / name))


def test_an_editor_finds_photos_by_meaning_by_likeness_and_by_photo(browser, site, sample_paths, tmp_path, screenshots):
    base, photos = site
    log_in(browser, base, "editor")
    browser.get(f"{base}/admin/photos/photo/")
    search = browser.find_element(By.ID, "searchbar")
    search.send_keys("a cup of coffee")
    search.submit()
    WebDriverWait(browser, 60).until(ec.url_contains("q=a+cup+of+coffee"))
    titles = row_titles(browser)
    assert titles[0] == "Morning coffee"
    scores = [float(s.text) for s in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody .si-score")]
    assert scores == sorted(scores, reverse=True) and len(scores) == len(titles)
    assert browser.find_element(By.CSS_SELECTOR, "#result_list tbody tr img.si-thumb").get_attribute("naturalWidth")
    screenshot(browser, screenshots, "admin-changelist.png")

    # "Similar images" of the cat: its cropped copy comes first.
    browser.get(f"{base}/admin/photos/photo/")
    cat_row = browser.find_element(By.XPATH, "//tr[.//*[contains(@class,'field-__str__')]//a[text()='Chelsea']]")
    cat_row.find_element(By.CSS_SELECTOR, "a.si-similar").click()
    WebDriverWait(browser, 60).until(ec.url_contains(f"similar_to={photos['chelsea'].pk}"))
    assert row_titles(browser)[0] == "Chelsea, cropped"
    assert "Images most like “Chelsea”" in browser.find_element(By.ID, "semantic-ranking").text

    # Search by photo: a flipped, shrunk, recompressed copy of the rocket finds the rocket.
    query = ImageOps.mirror(Image.open(sample_paths["rocket"]).convert("RGB"))
    query = query.resize((query.width // 2, query.height // 2))
    query_path = tmp_path / "my-rocket.jpg"
    query.save(query_path, "JPEG", quality=60)
    browser.find_element(By.CSS_SELECTOR, "#photo-search input[type=file]").send_keys(str(query_path))
    browser.find_element(By.CSS_SELECTOR, "#photo-search input[type=submit]").click()
    WebDriverWait(browser, 60).until(ec.url_contains("photo="))
    assert row_titles(browser)[0] == "Launch day"
    assert "my-rocket.jpg" in browser.find_element(By.ID, "semantic-ranking").text
    screenshot(browser, screenshots, "admin-search-by-photo.png")


def test_a_suggested_label_fills_the_alt_text_only_in_the_browser(browser, site, screenshots):
    base, photos = site
    cat = photos["chelsea"]
    log_in(browser, base, "editor")
    browser.get(f"{base}/admin/photos/photo/{cat.pk}/change/")
    button = browser.find_element(By.CSS_SELECTOR, "button.si-suggestion")
    label = button.get_attribute("data-semantic-suggestion")
    assert label == Photo.objects.get(pk=cat.pk).embedding_labels[0]["label"]
    button.click()
    assert browser.find_element(By.ID, "id_alt_text").get_attribute("value") == label
    button.click()  # again (a double click): the label is in the field once
    alt_text = browser.find_element(By.ID, "id_alt_text")
    assert alt_text.get_attribute("value") == label
    # From the keyboard, focus stays on the suggestions: the next one is one Tab away.
    alt_text.clear()
    buttons = browser.find_elements(By.CSS_SELECTOR, "button.si-suggestion")
    assert len(buttons) >= 2
    buttons[0].send_keys(Keys.ENTER)
    assert browser.switch_to.active_element == buttons[0]
    ActionChains(browser).send_keys(Keys.TAB, Keys.SPACE).perform()
    second = buttons[1].get_attribute("data-semantic-suggestion")
    assert alt_text.get_attribute("value") == f"{label}, {second}"
    alt_text.clear()
    alt_text.send_keys(label)
    browser.execute_script("document.querySelector('.field-embedding_details').scrollIntoView({block: 'center'})")
    screenshot(browser, screenshots, "admin-change-form.png")
    assert Photo.objects.get(pk=cat.pk).alt_text == ""  # nothing written until the editor saves
    browser.find_element(By.CSS_SELECTOR, "input[name=_save]").click()
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "changelist")))
    assert Photo.objects.get(pk=cat.pk).alt_text == label


def test_a_user_without_view_permission_gets_no_results(browser, site):
    base, _photos = site
    User.objects.create_user("intern", password="pw", is_staff=True)
    log_in(browser, base, "intern")
    browser.get(f"{base}/admin/photos/photo/?q=a+cup+of+coffee")
    assert not browser.find_elements(By.ID, "result_list")
    assert "Morning coffee" not in browser.page_source
    assert "403" in browser.title or "Forbidden" in browser.page_source


def test_the_index_section_reads_right_to_left_in_a_right_to_left_language(browser, site, settings):
    """In Arabic (the admin's ``dir="rtl"``) the Search index table's headings were pushed to the
    left edge of their cells, away from their values, and padded on the wrong side."""
    base, photos = site
    settings.LANGUAGE_CODE = "ar"
    log_in(browser, base, "editor")
    browser.get(f"{base}/admin/photos/photo/{photos['chelsea'].pk}/change/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == "rtl"
    heading = browser.find_element(By.CSS_SELECTOR, "table.si-details th")
    cell = heading.find_element(By.XPATH, "following-sibling::td")
    style = browser.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.textAlign, s.paddingLeft, s.paddingRight];", heading
    )
    assert style[0] in ("start", "right") and style[1] == "12px", style  # its end side: the left
    # The heading's text starts at its cell's right edge, and the value sits to its left.
    assert cell.rect["x"] + cell.rect["width"] <= heading.rect["x"] + 1


@pytest.fixture
def duplicates_site(live_server, settings, sample_paths, browser):
    """The near-duplicates library (tests/conftest.py), an editor with every permission."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    User.objects.create_superuser("editor", "editor@example.com", "pw")
    photos = duplicate_library(sample_paths)
    browser.delete_all_cookies()
    return live_server.url, photos


def duplicate_groups(browser) -> list[set[str]]:
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "duplicates-threshold")))
    return [
        {cell.text for cell in group.find_elements(By.CSS_SELECTOR, "tr.si-member td:nth-child(2) a")}
        for group in browser.find_elements(By.CSS_SELECTOR, ".si-group")
    ]


def test_an_editor_keeps_one_copy_and_marks_a_pair_not_duplicates(browser, duplicates_site, screenshots):
    base, photos = duplicates_site
    log_in(browser, base, "editor")
    browser.get(f"{base}/admin/photos/photo/")
    browser.find_element(By.ID, "duplicates-link").click()
    cat = {"Chelsea", "Chelsea, low quality", "Chelsea, mirrored"}
    assert duplicate_groups(browser) == [cat, {"Morning coffee", "Morning coffee, cropped"}]
    first = browser.find_element(By.CSS_SELECTOR, "#group-1 tr.si-member")
    assert first.find_element(By.CSS_SELECTOR, "img.si-thumb").get_attribute("naturalWidth") != "0"
    assert "×" in first.text and "KB" in first.text
    screenshot(browser, screenshots, "admin-duplicates.png")

    # "Not duplicates": remembered, the group is gone.
    browser.find_element(By.CSS_SELECTOR, "#group-2 .si-apart-button").click()
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist .success")))
    assert duplicate_groups(browser) == [cat]
    assert NotDuplicate.objects.count() == 1

    # Keep the original: a confirmation page first, nothing deleted until it is confirmed.
    row = browser.find_element(By.XPATH, "//tr[contains(@class,'si-member')][.//a[text()='Chelsea']]")
    row.find_element(By.CSS_SELECTOR, "a.si-keep").click()
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "confirm-keep")))
    assert browser.find_element(By.ID, "kept").text == "Chelsea"
    doomed = {photos["chelsea-jpeg"].pk, photos["chelsea-flip"].pk}
    listed = browser.find_elements(By.CSS_SELECTOR, "#to-delete li")
    assert {int(li.get_attribute("data-pk")) for li in listed} == doomed
    assert Photo.objects.filter(pk__in=doomed).count() == 2
    browser.find_element(By.CSS_SELECTOR, "#confirm-keep input[type=submit]").click()
    WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "no-duplicates")))
    assert "Kept “Chelsea” and deleted 2 other images." in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    assert not Photo.objects.filter(pk__in=doomed).exists()
    assert Photo.objects.filter(pk=photos["chelsea"].pk).exists()


def test_an_editor_without_delete_permission_is_offered_no_deletion(browser, duplicates_site):
    from django.contrib.auth.models import Permission

    base, photos = duplicates_site
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_photo", "change_photo"]))
    log_in(browser, base, "viewer")
    browser.get(f"{base}/admin/photos/photo/duplicates/")
    assert len(duplicate_groups(browser)) == 2
    assert not browser.find_elements(By.CSS_SELECTOR, "a.si-keep")
    browser.get(f"{base}/admin/photos/photo/duplicates/?keep={photos['chelsea'].pk}&group={photos['chelsea-flip'].pk}")
    assert "403" in browser.title or "Forbidden" in browser.page_source
    assert Photo.objects.filter(pk=photos["chelsea-flip"].pk).exists()
