"""The clinician page in a real headless Chromium (Debian's ``chromium``, driven by Playwright): upload a photo, read
the rendered answer, check it against the API, see errors shown, and save screenshots under tests/artifacts/serve/.
"""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serve_helpers import ARTIFACTS, serving

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)


sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def open_page(browser, live_server):
    """``open_page(**context_options)`` -> (page, requested URLs), the page at ``/`` with its footer loaded."""
    contexts = []

    def open_(**options):
        context = browser.new_context(**options)
        contexts.append(context)
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(live_server + "/")
        expect(page.locator("#model-info")).to_contain_text("Model: ")  # the page has talked to the API
        return page, requested

    yield open_
    for context in contexts:
        context.close()


def _only_local(urls: list[str], base: str) -> list[str]:
    return [u for u in urls if not (u.startswith(base) or u.startswith("data:") or u.startswith("blob:"))]


def percent(p: float) -> str:
    return "<1%" if 0 < p < 0.01 else f"{round(100 * p)}%"


def test_upload_shows_triage_probabilities_and_overlay(open_page, live_server, jpeg_file):
    expected = httpx.post(
        live_server + "/api/v1/predict", files={"image": ("lesion.jpg", jpeg_file.read_bytes(), "image/jpeg")}
    ).json()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page, requested = open_page(viewport={"width": 1280, "height": 900})

    assert page.locator("#disclaimer").is_visible()
    assert "Research tool, not a diagnosis" in page.locator("#disclaimer").inner_text()
    assert page.locator("#camera").get_attribute("capture") == "environment"
    assert page.locator("#camera").get_attribute("accept") == "image/*"

    page.set_input_files("#file", str(jpeg_file))
    page.wait_for_selector("#result:not([hidden])")

    call = page.locator("#triage-call").inner_text()
    assert call == ("Refer" if expected["triage"] == "refer" else "No referral suggested")
    assert page.locator("#triage").get_attribute("data-triage") == expected["triage"]
    assert page.locator("#triage-text").inner_text() == expected["triage_summary"]
    op_text = page.locator("#operating-point").inner_text()
    assert "sensitivity" in op_text and "specificity" in op_text

    three = page.locator("#three-way li")
    nine = page.locator("#nine-way li")
    top5 = page.locator("#top5 li")
    assert three.count() == 3 and nine.count() == 9 and top5.count() == 5
    for i, row in enumerate(expected["three_way"]):
        item = three.nth(i)
        assert item.locator(".label").inner_text() == row["name"]
        assert item.locator(".value").inner_text() == percent(row["probability"])
    for i, row in enumerate(expected["top5"]):
        assert top5.nth(i).locator(".label").inner_text() == expected["names"][row["node"]]
        assert top5.nth(i).locator(".value").inner_text() == percent(row["probability"])
    # The bar widths are the probabilities; the operating node's bar carries the threshold mark.
    top = max(range(3), key=lambda i: expected["three_way"][i]["probability"])
    width = page.evaluate(
        "(i) => { const li = document.querySelectorAll('#three-way li')[i]; const w = (s) => "
        "li.querySelector(s).getBoundingClientRect().width; return w('.fill') / w('.track'); }", top
    )
    assert width == pytest.approx(expected["three_way"][top]["probability"], abs=0.02)
    assert page.locator("#three-way li.operating-node .threshold").count() == 1

    overlay = page.locator("#view")
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    expect(overlay).to_have_js_property("naturalWidth", expected["saliency"]["width"])  # the overlay PNG loaded
    page.screenshot(path=str(ARTIFACTS / "page-desktop.png"), full_page=True)

    page.click("#show-photo")
    assert overlay.get_attribute("src").startswith("blob:")
    expect(overlay).to_have_js_property("naturalWidth", 320)  # the photo as taken
    assert _only_local(requested, live_server) == []  # no CDN, no tracker: everything from the app


def test_errors_are_shown_on_the_page(open_page, tmp_path):
    page, _ = open_page(viewport={"width": 1280, "height": 800})
    letter = tmp_path / "referral-letter.txt"
    letter.write_text("Dear colleague, please see this patient.")
    page.set_input_files("#file", str(letter))
    error = page.locator("#error")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert "HTTP 415" in text and "referral-letter.txt" in text and "not a picture" in text
    assert page.locator("#result").is_hidden()

    truncated = tmp_path / "half.jpg"
    truncated.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # a JPEG that stops after its first marker
    page.set_input_files("#file", str(truncated))
    expect(error).to_contain_text("HTTP 422")
    assert "half.jpg" in error.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-error.png"), full_page=True)


def test_photo_over_the_size_limit_is_refused_on_the_page(browser, serve_predictor, jpeg_file):
    from dermlens.serve import create_app

    with serving(create_app(predictor=serve_predictor, max_upload_bytes=5_000)) as url:
        page = browser.new_page()
        posted: list[str] = []
        page.on("request", lambda request: posted.append(request.url) if request.method == "POST" else None)
        page.goto(url + "/")
        expect(page.locator("#model-info")).to_contain_text("Model: ")  # the page now knows the server's limit
        page.set_input_files("#file", str(jpeg_file))
        expect(page.locator("#error")).to_contain_text("more than the limit of 5 kB")
        assert posted == []  # refused before uploading
        page.close()


def test_phone_layout_fits_the_screen(open_page, jpeg_file):
    page, _ = open_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    page.set_input_files("#camera", str(jpeg_file))  # the camera input takes the photo on a phone
    page.wait_for_selector("#result:not([hidden])")
    assert page.locator("#nine-way li").count() == 9
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-phone.png"), full_page=True)


def test_swagger_docs_render_from_local_assets(browser, live_server):
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(live_server + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert "/api/v1/predict" in page.locator(".swagger-ui").inner_text()
    assert _only_local(requested, live_server) == []
    context.close()
