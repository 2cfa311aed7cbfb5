"""Wagtail's admin in headless Chromium: the Images listing's search box, the image chooser in
the page editor and the similar images panel rank by meaning, and an editor never meets another
collection's images there.

Photos are titled by camera-style file names (``IMG_0000``...: no words of meaning), so only
their vectors can rank them. The screenshots go to a temporary folder; ``make screenshots`` sets
``SEMANTIC_IMAGES_SCREENSHOTS`` to ``docs/img`` to refresh the documentation's.
"""

# ruff: noqa: F811 (the browser and screenshots fixtures are imported from the admin's browser tests)

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from wagtail.models import GroupPagePermission, Page

from tests.test_browser_admin import (  # noqa: F401 (fixtures)
    CHROMEDRIVER,
    CHROMIUM,
    browser,
    screenshots,
)

from .pages.models import ImagePage
from .test_edit_page import mirrored

pytestmark = [
    pytest.mark.browser,
    # The live server must see committed rows; Wagtail's root collection and page come back after.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()), reason="needs chromium"),
]

WAIT = 60
DRAWN = "return Array.from(document.images).every(i => !i.getAttribute('src') || (i.complete && i.naturalWidth > 0))"

SCROLL = """const e = document.querySelector(arguments[0]); e.scrollIntoView({block: 'start'});
return e.getBoundingClientRect().top < window.innerHeight / 2;"""


def screenshot(browser, folder: Path, name: str, scroll_to: str = "") -> None:
    """Once every image with a source is drawn (an empty chooser's preview has none); with
    ``scroll_to``, that element at the top of the window."""
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(DRAWN))
    if scroll_to:  # again until it stays there (the page's own scripts may scroll back once)
        WebDriverWait(browser, 10).until(lambda b: b.execute_script(SCROLL, scroll_to))
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / name))


@pytest.fixture
def cms(live_server, browser):
    """The live server's URL, with a browser that is logged out."""
    browser.delete_all_cookies()
    return live_server.url


def log_in(browser, base: str, username: str, password: str) -> None:
    """Through Wagtail's own login form."""
    browser.get(f"{base}/cms/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda b: "/cms/login/" not in b.current_url)


def search_listing(browser, base: str, words: str) -> list[str]:
    """Type ``words`` into the Images listing's search box; Wagtail's script swaps in the
    results. The captions of the results, in order."""
    browser.get(f"{base}/cms/images/")
    box = WebDriverWait(browser, 30).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "form[data-search-form] input[name=q]"))
    )
    box.send_keys(words)
    # Wagtail writes the results, then reflects the query in the address.
    WebDriverWait(browser, WAIT).until(lambda b: urlencode({"q": words}) in b.current_url)
    WebDriverWait(browser, WAIT).until(
        lambda b: (
            "match" in b.find_element(By.ID, "listing-results").text
            or b.find_elements(By.CSS_SELECTOR, "#listing-results ul.listing.images figcaption")
        )
    )
    return [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#listing-results ul.listing.images figcaption")]


def open_chooser(browser, base: str, page: Page, words: str) -> list[str]:
    """Open the page's image chooser, type ``words`` into its search box; the titles of its
    results, in order."""
    browser.get(f"{base}/cms/pages/{page.pk}/edit/")
    WebDriverWait(browser, 30).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "#id_image-chooser .unchosen [data-chooser-action-choose]"))
    ).click()
    box = WebDriverWait(browser, WAIT).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, ".modal [data-chooser-modal-search] input[name=q]"))
    )
    box.send_keys(words)
    # The results' heading becomes "There are N matches" (or "Sorry, no matches") once searched.
    WebDriverWait(browser, WAIT).until(
        lambda b: "match" in b.find_element(By.CSS_SELECTOR, ".modal #search-results").text
    )
    return [h.text for h in browser.find_elements(By.CSS_SELECTOR, ".modal #search-results a.image-choice h3")]


def image_page() -> ImagePage:
    return Page.get_first_root_node().add_child(instance=ImagePage(title="Gallery", slug="gallery"))


def test_listing_search_and_the_similar_panel(
    cms, browser, django_user_model, sample_images, make_image, embed, sample_paths, screenshots
):
    cat = sample_images["chelsea"]
    other_cat = make_image(mirrored(sample_paths["chelsea"]), "IMG_0100")
    embed(other_cat)
    django_user_model.objects.create_superuser("editor", "editor@example.com", "pw")
    log_in(browser, cms, "editor", "pw")

    captions = search_listing(browser, cms, "a cat")
    assert set(captions[:2]) == {cat.title, other_cat.title}, captions  # the two cats, before the rest
    assert len(captions) == len(sample_images) + 1
    screenshot(browser, screenshots, "wagtail-listing.png")

    # The cat's edit page: its mirrored copy is the nearest, shown first, linking to its edit page.
    browser.find_element(By.CSS_SELECTOR, f"#listing-results a.image-choice[href^='/cms/images/{cat.pk}/']").click()
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-similar-images]")))
    similar = browser.find_elements(By.CSS_SELECTOR, "ul[data-similar-images] a.image-choice")
    assert [a.get_attribute("title") for a in similar][0] == other_cat.title
    assert cat.title not in [a.get_attribute("title") for a in similar]
    assert len(similar) == len(sample_images)  # every other image, nearest first
    first_thumbnail = similar[0].find_element(By.TAG_NAME, "img")
    WebDriverWait(browser, 30).until(lambda b: int(first_thumbnail.get_attribute("naturalWidth") or 0) > 0)
    screenshot(browser, screenshots, "wagtail-similar.png", scroll_to="#semantic-images")
    similar[0].click()
    WebDriverWait(browser, WAIT).until(ec.url_contains(f"/cms/images/{other_cat.pk}/"))
    assert browser.find_element(By.ID, "id_title").get_attribute("value") == other_cat.title


def test_chooser_search_in_the_page_editor(cms, browser, django_user_model, sample_images, screenshots):
    cat = sample_images["chelsea"]
    page = image_page()
    django_user_model.objects.create_superuser("editor", "editor@example.com", "pw")
    log_in(browser, cms, "editor", "pw")

    titles = open_chooser(browser, cms, page, "a cat")
    assert titles[0] == cat.title, titles
    assert len(titles) == len(sample_images)
    screenshot(browser, screenshots, "wagtail-chooser.png")

    # Choose it: the modal closes and the page's field shows the cat.
    browser.find_element(By.CSS_SELECTOR, ".modal #search-results a.image-choice").click()
    WebDriverWait(browser, WAIT).until(
        lambda b: "blank" not in b.find_element(By.ID, "id_image-chooser").get_attribute("class")
    )
    assert browser.find_element(By.CSS_SELECTOR, "#id_image-chooser [data-chooser-title]").text == cat.title
    assert browser.find_element(By.ID, "id_image").get_attribute("value") == str(cat.pk)
    # Saved as a draft, the page's revision holds the cat (and the editor leaves no unsaved changes).
    browser.find_element(By.CSS_SELECTOR, "button.action-save").click()
    # The save reloads the page: a message element read while it goes is stale, so read again.
    WebDriverWait(browser, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda b: "has been updated" in " ".join(m.text for m in b.find_elements(By.CSS_SELECTOR, ".messages"))
    )
    assert ImagePage.objects.get(pk=page.pk).get_latest_revision_as_object().image == cat


def test_an_editor_never_meets_another_collections_images(cms, browser, two_collections):
    cat, others = two_collections["cat"], two_collections["others"]
    page = image_page()
    editor = two_collections["products_editor"]
    GroupPagePermission.objects.create(
        group=editor.groups.get(), page=page, permission=Permission.objects.get(codename="change_page")
    )
    log_in(browser, cms, "products", "password")

    # The cat is the nearest to "a cat", but in a collection this editor may not see.
    captions = search_listing(browser, cms, "a cat")
    assert sorted(captions) == sorted(image.title for image in others)
    assert cat.title not in browser.find_element(By.ID, "listing-results").get_attribute("innerHTML")
    titles = open_chooser(browser, cms, page, "a cat")
    assert sorted(titles) == sorted(image.title for image in others)
    assert cat.title not in browser.find_element(By.CSS_SELECTOR, ".modal").get_attribute("innerHTML")
