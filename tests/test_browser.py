"""The search page at /, driven in headless Chromium (Debian's package) through Playwright.

Every figure the page shows is checked against an independent answer: the Python API for
results, and a brute-force Hamming count over the stored codes for the neighbourhood chart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import LoopbackServer, brute_force_distances

from retrieval import Index
from retrieval.codes import unpack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "search-page.png"
KEY = "s3cret"
# The flags of a browser on a closed network: no background connections, no first-run work.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here: apt-get install chromium chromium-driver"
)


@pytest.fixture
def page(index_copy):
    from playwright.sync_api import sync_playwright

    server = LoopbackServer(index_copy, api_key=KEY)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.set_default_timeout(30_000)
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        tab.goto(server.url + "/")
        tab.server_url, tab.index_path = server.url, index_copy
        yield tab
        browser.close()
    server.stop()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _api(page, method: str, path: str, **kwargs):
    headers = {"X-API-Key": KEY}
    return httpx.request(method, page.server_url + path, headers=headers, timeout=60, **kwargs)


def _search(page, query: str) -> list[str]:
    page.fill("#query", query)
    page.click("#search-form button[type=submit]")
    page.wait_for_function("q => document.querySelector('#results').dataset.query === q", arg=query)
    return page.eval_on_selector_all("#results .hit", "items => items.map(li => li.dataset.id)")


def _unlock(page) -> None:
    page.wait_for_selector("#key-form", state="visible")
    assert "API key" in page.inner_text("#error")
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.wait_for_function("document.querySelector('#filters select') !== null")


def test_search_page(page):
    # The key is asked for, and nothing shows without it.
    _unlock(page)
    assert page.inner_text("#overview-line").startswith("160 documents · 64 bits")

    # Results are the API's, in its order, with distances, scores, snippets and metadata.
    query = "planets in the solar system"
    shown = _search(page, query)
    expected = _api(page, "POST", "/search", json={"texts": [query], "k": 10}).json()
    assert shown == [hit["id"] for hit in expected["results"][0]]
    first = page.locator("#results .hit").first
    assert f"d = {expected['results'][0][0]['distance']}" in first.inner_text()
    assert "topic: astronomy" in first.inner_text()
    assert page.locator("#results mark").count() > 0  # query words highlighted

    # The neighbourhood chart counts what a brute-force scan of the stored codes counts.
    with Index.open(page.index_path) as index:
        query_code = index.encode_embeddings(index.embed([query]))
        distances = brute_force_distances(query_code, np.asarray(index.hamming.codes))[0]
    bars = page.eval_on_selector_all(
        "#neighbourhood-chart rect", "bars => bars.map(b => Number(b.dataset.count))"
    )
    assert bars == np.bincount(distances, minlength=65)[: len(bars)].tolist()
    assert len(bars) - 1 == expected["results"][0][-1]["distance"]  # up to the k-th hit

    # The query's code is drawn bit by bit; a click on a result outlines the bits that differ.
    cells = page.eval_on_selector_all("#query-code .bit", "c => c.map(x => x.className)")
    assert ["one" in c for c in cells] == [bool(b) for b in unpack(query_code, 64)[0]]
    page.locator("#results .hit").nth(1).click()
    differing = page.locator("#query-code .bit.differs").count()
    assert differing == expected["results"][0][1]["distance"]
    assert f"{differing} bits differ from {shown[1]}" in page.inner_text("#diff-caption")

    # The overview: one balance cell per bit, buckets that add up to the documents.
    assert page.locator("#bit-balance .bit").count() == 64
    buckets = page.eval_on_selector_all(
        "#bucket-chart rect", "bars => bars.map(b => Number(b.dataset.count))"
    )
    assert sum(buckets) == 160
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # A filter on a metadata field keeps to it.
    page.select_option("select[data-key=topic]", label="cooking")
    shown = _search(page, "something to eat")
    assert len(shown) == 10 and all(doc.startswith("cooking-") for doc in shown)
    page.select_option("select[data-key=topic]", label="any")

    # A document added from the page is found at once, at distance 0 from its own text...
    text = "Saturn's rings are made of ice and rock circling the gas giant."
    page.fill("#add-id", "browser-added")
    page.fill("#add-text", text)
    page.fill("#add-metadata", '{"topic": "astronomy"}')
    page.click("#add-form button")
    # The status is written once the page has refreshed its overview and results.
    page.wait_for_function("document.querySelector('#add-status').textContent.includes('Added')")
    assert page.inner_text("#overview-line").startswith("161 documents")
    assert _search(page, text)[0] == "browser-added"
    assert "d = 0" in page.locator("#results .hit").first.inner_text()

    # ...and a delete from the page removes it from the results and from the index.
    page.click("#results .hit[data-id=browser-added] .delete")
    page.wait_for_function("document.querySelector('#add-status').textContent.includes('Deleted')")
    page.wait_for_function("!document.querySelector('#results .hit[data-id=browser-added]')")
    assert page.inner_text("#overview-line").startswith("160 documents")
    assert _api(page, "GET", "/documents/browser-added").status_code == 404


def test_bad_input_shows_an_error(page):
    _unlock(page)
    page.fill("#add-id", "broken")
    page.fill("#add-text", "some text")
    page.fill("#add-metadata", "{not json")
    page.click("#add-form button")
    page.wait_for_selector("#error", state="visible")
    assert "metadata must be a JSON object" in page.inner_text("#error")
    page.fill("#radius", "999")
    page.fill("#query", "anything")
    page.click("#search-form button[type=submit]")
    page.wait_for_function("document.querySelector('#error').textContent.includes('radius')")
