"""The example site's public search page (``/``) in headless Chromium: no login, words, "more like
this", a photo chosen or dropped, paging; it shows what the REST API shows an anonymous caller.

The screenshot goes to a temporary folder; ``make screenshots`` sets ``SEMANTIC_IMAGES_SCREENSHOTS``
to ``docs/img`` to refresh the README's.
"""

# ruff: noqa: F811 (the browser and screenshots fixtures are imported from the admin's browser tests)

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.base import ContentFile
from PIL import Image, ImageOps
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from django_semantic_images.conf import semantic_settings
from django_semantic_images.pipeline import embed_instances
from django_semantic_images.signals import embedding_deferred
from photos.models import Photo
from photos.samples import sample_text
from photos.views import PAGE_SIZE
from tests.conftest import image_bytes
from tests.test_browser_admin import (  # noqa: F401 (fixtures)
    CHROMEDRIVER,
    CHROMIUM,
    browser,
    log_in,
    screenshots,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # the live server must see committed rows
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()), reason="needs chromium"),
]

WAIT = 60
MAX_UPLOAD_BYTES = int(semantic_settings.MAX_UPLOAD_BYTES)
#: Every image with a source is drawn (the photo search's preview has none until a photo is given).
DRAWN = "return Array.from(document.images).every(i => !i.getAttribute('src') || (i.complete && i.naturalWidth > 0))"


@pytest.fixture
def site(live_server, settings, sample_paths, browser):
    """The sample photos with their titles and alt texts and two more, embedded; a hidden
    (unpublished) copy of the coffee, as good a match as the coffee; the example URLs plus media."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    cache.clear()  # throttle history
    photos = {}
    with embedding_deferred():
        for stem, path in sample_paths.items():
            title, alt_text = sample_text(path)
            photo = Photo(title=title, alt_text=alt_text)
            photo.image.save(path.name, ContentFile(path.read_bytes()), save=False)
            photo.save()
            photos[stem] = photo
        # Two more, so that the published photos fill more than a page.
        cat = Image.open(sample_paths["chelsea"]).convert("RGB")
        extras = {
            "cat-crop": ("Chelsea, up close", cat.crop((60, 20, 400, 280))),
            "horse-left": ("Horse facing left", ImageOps.mirror(Image.open(sample_paths["horse"]).convert("RGB"))),
        }
        for stem, (title, picture) in extras.items():
            photo = Photo(title=title)
            photo.image.save(f"{stem}.jpg", ContentFile(image_bytes(picture)), save=False)
            photo.save()
            photos[stem] = photo
        hidden = Photo(title="Espresso, my draft", alt_text="A cup of coffee", published=False)
        hidden.image.save("draft.png", ContentFile(sample_paths["coffee"].read_bytes()), save=False)
        hidden.save()
        photos["hidden"] = hidden
    assert not embed_instances(list(photos.values())).failed
    browser.delete_all_cookies()
    return live_server.url, photos


def cards(browser) -> list:
    """The result cards, once the page has drawn its answer."""
    WebDriverWait(browser, WAIT).until(lambda b: b.find_element(By.ID, "search-app").get_attribute("aria-busy") is None)
    return browser.find_elements(By.CSS_SELECTOR, "#results .card")


def titles(browser) -> list[str]:
    return [card.find_element(By.CSS_SELECTOR, ".card-title").text for card in cards(browser)]


def screenshot(browser, folder: Path, name: str) -> None:
    WebDriverWait(browser, 30).until(lambda b: b.execute_script(DRAWN))
    folder.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(folder / name))


def status_text(browser) -> str:
    """The live status line (role=status, aria-live), once the page has drawn its answer."""
    cards(browser)
    return browser.find_element(By.ID, "search-status").text


def heading_html(browser) -> str:
    return browser.find_element(By.ID, "results-heading").get_attribute("innerHTML")


def wait_for_heading(browser, text: str) -> None:
    WebDriverWait(browser, WAIT).until(ec.text_to_be_present_in_element((By.ID, "results-heading"), text))


def test_a_visitor_searches_by_words_likeness_and_photo_and_pages(browser, site, sample_paths, tmp_path, screenshots):
    base, photos = site
    browser.set_window_size(1280, 1200)  # the screenshot shows the first page whole
    browser.get(f"{base}/")
    assert "/admin/" not in browser.current_url  # no login, no redirect
    wait_for_heading(browser, "All photos, newest first")
    shown = cards(browser)
    assert len(shown) == PAGE_SIZE  # a full first page of the 14 published photos
    assert {card.get_attribute("data-id") for card in shown} <= {str(p.pk) for p in photos.values() if p.published}

    # Words: the espresso first, with its cached thumbnail and alt text; the hidden copy never.
    search = browser.find_element(By.ID, "search-q")
    search.send_keys("a cup of coffee")
    search.submit()
    wait_for_heading(browser, "Photos matching “a cup of coffee”")
    assert heading_html(browser) == "Photos matching “<bdi>a cup of coffee</bdi>”"
    WebDriverWait(browser, WAIT).until(ec.url_contains("q=a+cup+of+coffee"))
    assert titles(browser)[0] == "Espresso"
    assert "Espresso, my draft" not in titles(browser)
    # The live status line tells a screen reader's user what came back, not silence.
    assert status_text(browser) == f"{len(titles(browser))} photos found on page 1; more on the next page."
    first = cards(browser)[0]
    image = first.find_element(By.CSS_SELECTOR, "img")
    assert "/media/cache/" in image.get_attribute("src")  # the API's thumbnail, not the full image
    assert image.get_attribute("alt") == photos["coffee"].alt_text
    WebDriverWait(browser, WAIT).until(lambda b: int(image.get_attribute("naturalWidth") or 0) > 0)
    assert int(image.get_attribute("naturalWidth")) <= 400
    scores = [float(c.find_element(By.CSS_SELECTOR, ".card-score").text) for c in cards(browser)]
    assert scores == sorted(scores, reverse=True)
    screenshot(browser, screenshots, "public-search.png")

    # Paging: 14 published photos, 12 a page: the next page has the last two, then back again.
    assert browser.find_element(By.ID, "next-page").is_enabled()
    first_page = titles(browser)
    browser.find_element(By.ID, "next-page").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains(f"offset={PAGE_SIZE}"))
    second_page = titles(browser)
    assert len(second_page) == 2 and not set(second_page) & set(first_page)
    assert not browser.find_element(By.ID, "next-page").is_enabled()
    assert browser.find_element(By.ID, "page-number").text == "Page 2"
    assert status_text(browser) == f"{len(second_page)} photos found on page 2."
    browser.back()
    WebDriverWait(browser, WAIT).until(lambda b: "offset" not in b.current_url)
    assert titles(browser) == first_page

    # More like this: the cat's close-up first, without the cat itself.
    cat = next(c for c in cards(browser) if c.find_element(By.CSS_SELECTOR, ".card-title").text == "Chelsea the cat")
    cat.find_element(By.CSS_SELECTOR, ".more-like-this").click()
    WebDriverWait(browser, WAIT).until(ec.url_contains(f"similar={photos['chelsea'].pk}"))
    wait_for_heading(browser, "More like “Chelsea the cat”")
    # The title is isolated for bidirectional text: a right-to-left one keeps the quotes in place.
    assert heading_html(browser) == "More like “<bdi>Chelsea the cat</bdi>”"
    assert titles(browser)[0] == "Chelsea, up close"
    assert "Chelsea the cat" not in titles(browser) and len(titles(browser)) == PAGE_SIZE
    # The clicked button went with the old results: the keyboard focus is on the new ones' heading.
    assert browser.switch_to.active_element == browser.find_element(By.ID, "results-heading")

    # A photo chosen from disk: a flipped, shrunk, recompressed copy of the rocket finds the rocket.
    query = ImageOps.mirror(Image.open(sample_paths["rocket"]).convert("RGB"))
    query = query.resize((query.width // 2, query.height // 2))
    query_path = tmp_path / "my-rocket.jpg"
    query.save(query_path, "JPEG", quality=60)
    browser.find_element(By.ID, "photo-file").send_keys(str(query_path))
    wait_for_heading(browser, "Photos like my-rocket.jpg")
    assert heading_html(browser) == "Photos like <bdi>my-rocket.jpg</bdi>"
    assert titles(browser)[0] == "Falcon 9 on the launch pad"
    assert browser.find_element(By.ID, "query-preview").is_displayed()

    # A photo dropped on the page: the same search, started by the drop.
    drop(browser, image_bytes(ImageOps.mirror(Image.open(sample_paths["chelsea"]))), "cat.jpg")
    wait_for_heading(browser, "Photos like cat.jpg")
    assert titles(browser)[0] == "Chelsea the cat"


DROP = """
const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
const data = new DataTransfer();
const parts = arguments[3] ? [bytes, new Uint8Array(arguments[3])] : [bytes];
data.items.add(new File(parts, arguments[1], {type: arguments[2]}));
for (const type of ["dragover", "drop"]) {
  document.body.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
}
"""


def drop(browser, data: bytes, name: str, content_type: str = "image/jpeg", padding: int = 0) -> None:
    """Drop a file on the page, as a drag from the desktop does (Selenium cannot drag files); ``padding``
    zero bytes are added after ``data``."""
    browser.execute_script(DROP, base64.b64encode(data).decode(), name, content_type, padding)


def test_a_hidden_photo_answers_like_a_missing_one_and_bad_input_says_why(browser, site):
    base, photos = site
    messages = []
    for pk in (photos["hidden"].pk, 10**9):
        browser.get(f"{base}/?similar={pk}")
        cards(browser)
        messages.append(browser.find_element(By.ID, "search-status").text)
    assert messages[0] == messages[1] == "No Photo matches the given query."
    drop(browser, b"not a picture", "notes.jpg")
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.ID, "search-status"), "The file is not an image in a format we can read.")
    )
    assert cards(browser) == []
    # The page's own refusals put the file's name in a <bdi>: a right-to-left one keeps the sentence in order.
    status = browser.find_element(By.ID, "search-status")
    drop(browser, b"a shopping list", "ملاحظات.txt", "text/plain")
    WebDriverWait(browser, WAIT).until(ec.text_to_be_present_in_element((By.ID, "search-status"), "is not an image."))
    assert status.get_attribute("innerHTML") == "<bdi>ملاحظات.txt</bdi> is not an image."
    drop(browser, b"", "צילום.jpg", padding=MAX_UPLOAD_BYTES + 1)
    WebDriverWait(browser, WAIT).until(ec.text_to_be_present_in_element((By.ID, "search-status"), "MB the site"))
    megabytes = round(MAX_UPLOAD_BYTES / 1048576)
    assert (
        status.get_attribute("innerHTML") == f"<bdi>צילום.jpg</bdi> is larger than the {megabytes} MB the site accepts."
    )


def test_a_signed_in_owner_finds_their_unpublished_photo_and_can_search_by_photo(browser, site, sample_paths):
    """Signed in, the API's session authentication checks the CSRF token of the photo upload. The
    page was opened before signing in (in another tab), which changed the token: the upload sends
    the current one, not the one the page was drawn with."""
    base, photos = site
    owner = User.objects.create_superuser("owner", "owner@example.com", "pw")
    Photo.objects.filter(pk=photos["hidden"].pk).update(owner=owner)
    browser.get(f"{base}/")
    wait_for_heading(browser, "All photos")
    page = browser.current_window_handle
    browser.switch_to.new_window("tab")
    log_in(browser, base, "owner")
    browser.close()
    browser.switch_to.window(page)
    search = browser.find_element(By.ID, "search-q")
    search.send_keys("a cup of coffee")
    search.submit()
    wait_for_heading(browser, "Photos matching")
    assert "Espresso, my draft" in titles(browser)[:2]
    drop(browser, sample_paths["coffee"].read_bytes(), "coffee.png")
    wait_for_heading(browser, "Photos like coffee.png")
    assert set(titles(browser)[:2]) == {"Espresso", "Espresso, my draft"}


def test_a_similar_id_that_is_no_number_is_refused_without_a_request(browser, live_server, settings):
    """The page put ?similar= in the API's path unchecked: `..` climbed out of /api/photos/{id}/similar/
    (to /api/similar/) and the answer was Django's HTML 404 ("The search failed (404)"). An id that is
    not a number now answers like a missing photo, and nothing is fetched."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    cache.clear()  # throttle history
    browser.delete_all_cookies()
    for raw in ("..", "3..", "1%2F..%2F.."):
        browser.get(f"{live_server.url}/?similar={raw}")
        assert status_text(browser) == "No Photo matches the given query.", raw
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert not [url for url in fetched if "/api/" in url], (raw, fetched)


def test_an_answer_that_is_not_json_or_breaks_off_says_so_and_is_not_left_searching(browser, live_server, settings):
    """A 200 whose body is no JSON (a proxy's or captive portal's page) or whose body breaks off (the
    connection dropped after the headers): the page stayed at "Searching…", busy, for good (the
    rejected response.json() was not caught); it now says the answer could not be read."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    cache.clear()  # throttle history
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/")
    status_text(browser)
    broken = {
        "html": "return new Response('<html>Sign in to the Wi-Fi</html>', {status: 200})",
        "cut": "return new Response(new ReadableStream({start(c) { c.error(new TypeError('network error')); }}))",
    }
    for name, answer in broken.items():
        browser.execute_script(f"window.fetch = async () => {{ {answer}; }};")
        search = browser.find_element(By.ID, "search-q")
        search.clear()
        search.send_keys(f"a cup of coffee {name}")
        search.submit()
        assert status_text(browser) == "The site's answer could not be read; try again.", name
        assert cards(browser) == []


def test_an_older_searchs_error_does_not_replace_the_newer_answer(browser, live_server, settings):
    """A search whose error answer's body came slowly (a 400, a 429), overtaken by a newer search: its
    message replaced the newer search's answer once read (the check for the newest request was made
    before its body was read, not after)."""
    settings.ROOT_URLCONF = "tests.browser_urls"
    cache.clear()  # throttle history
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/")
    status_text(browser)
    browser.execute_script(
        """
        const realFetch = window.fetch;
        let calls = 0;
        window.fetch = async (...args) => {
          if (++calls > 1) return realFetch(...args);
          const slow = new ReadableStream({start(c) { setTimeout(() => {
            c.enqueue(new TextEncoder().encode('{"detail": "The older search failed."}')); c.close(); }, 1500); }});
          return new Response(slow, {status: 400, headers: {"Content-Type": "application/json"}});
        };
        """
    )
    search = browser.find_element(By.ID, "search-q")
    search.send_keys("older")
    search.submit()
    search.clear()
    search.send_keys("newer")
    search.submit()
    assert status_text(browser) == "No photos found."
    time.sleep(2.5)  # the older answer's body has come
    assert browser.find_element(By.ID, "search-status").text == "No photos found."
