"""Search by photo in headless Chromium: dropping a photo on the Images listing's upload field
(the drag-and-drop script) ranks the listing by likeness to it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.test_browser_admin import CHROMEDRIVER, CHROMIUM, browser  # noqa: F401 (a fixture)

from .test_listing_tools import resized_copy

pytestmark = [
    pytest.mark.browser,
    # The live server must see committed rows; Wagtail's root collection and page come back after.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()), reason="needs chromium"),
]

DROP = """
const [data, name, done] = arguments;
const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
const zone = document.querySelector("[data-semantic-photo-drop]");
zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
done();
"""


def test_dropping_a_photo_on_the_listing_ranks_by_likeness(
    live_server,
    browser,  # noqa: F811 (the fixture imported above)
    django_user_model,
    make_image,
    embed,
    sample_paths,
):
    titles = {"coffee": "Morning coffee", "chelsea": "Chelsea", "rocket": "Launch day", "horse": "Horse"}
    images = {stem: make_image(sample_paths[stem], title) for stem, title in titles.items()}
    embed(*images.values())
    django_user_model.objects.create_superuser("editor", "editor@example.com", "pw")
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/cms/login/")
    browser.find_element(By.ID, "id_username").send_keys("editor")
    browser.find_element(By.ID, "id_password").send_keys("pw")
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda b: "/cms/login/" not in b.current_url)
    browser.get(f"{live_server.url}/cms/images/")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-semantic-photo-drop]")))
    data = base64.b64encode(resized_copy(sample_paths["rocket"])).decode("ascii")
    browser.execute_async_script(DROP, data, "launch.jpg")
    WebDriverWait(browser, 60).until(lambda b: "photo=" in b.current_url)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-semantic-photo-query]")))
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#listing-results ul.listing.images figcaption")]
    assert captions[0] == "Launch day" and set(captions) == set(titles.values())
    assert "launch.jpg" in browser.find_element(By.CSS_SELECTOR, "[data-semantic-photo-query]").text
    # The hidden field keeps the photo when the sort order changes (Wagtail's own AJAX refresh).
    assert browser.find_element(By.CSS_SELECTOR, "form[data-search-form] input[name=photo]").get_attribute("value")
    # A sort order chosen after the page loaded (Wagtail refreshes the results and the address,
    # not the photo form) is kept by the next photo search.
    Select(browser.find_element(By.ID, "order_images_by")).select_by_value("title")
    WebDriverWait(browser, 30).until(lambda b: "ordering=title" in b.current_url)
    first = browser.current_url
    browser.execute_async_script(DROP, data, "launch again.jpg")
    WebDriverWait(browser, 60).until(lambda b: b.current_url != first and "photo=" in b.current_url)
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, "[data-semantic-photo-query]")))
    assert "ordering=title" in browser.current_url
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#listing-results ul.listing.images figcaption")]
    assert captions == sorted(titles.values())
