"""The page in headless Chromium, over an emulated real network (150 ms latency, 10/5 Mbit/s):
upload, caption, then step through the words. The heatmap is drawn in the browser: stepping
sends no request, its pixels change from word to word and match the server's own overlay.

Uses the bundled weights/ (so the screenshots show the real model); CAPTIONER_TEST_WEIGHTS
overrides them. Screenshots go to the test's tmp_path; the full page is also copied to
/tmp/captioner-screenshot.png.
"""

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.network import CHROMIUM, CHROMIUM_ARGS, Traffic
from captioner.demo import Demo
from captioner.hub import BUNDLED_WEIGHTS
from captioner.scenes import render_scene
from captioner.visualize import attention_overlay, upsample_attention

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword)")]

SCREENSHOT = Path("/tmp/captioner-screenshot.png")
TIMEOUT_MS = 60_000
ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "photo-grace-hopper.jpg"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")

from test_app import running_app  # noqa: E402  (after the skips: imports gradio)


def weights() -> str:
    return os.environ.get("CAPTIONER_TEST_WEIGHTS") or str(BUNDLED_WEIGHTS)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("browser-app"), weights()) as (url, examples):
        yield url, examples


def painted(page) -> int:
    return int(page.evaluate("document.querySelector('#heatmap').dataset.painted || 0"))


def shown_word(page) -> int:
    return int(page.evaluate("document.querySelector('#heatmap').dataset.word || 0"))


def wait_for_word(page, word: int) -> None:
    page.wait_for_function("w => document.querySelector('#heatmap').dataset.word == w", arg=word)


def canvas_pixels(page) -> np.ndarray:
    """The heatmap canvas as an RGB array (read losslessly as PNG)."""
    url = page.evaluate("document.querySelector('#heatmap canvas').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def caption_after_upload(page, path: str | Path) -> list[str]:
    page.wait_for_selector("#heatmap", state="attached")
    before = painted(page)
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("n => Number(document.querySelector('#heatmap').dataset.painted) > n",
                           arg=before)
    return page.locator("#caption textarea").input_value().split()


def test_stepping_through_words_asks_the_server_nothing(browser, app, tmp_path):
    url, examples = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    traffic = Traffic(page)
    page.goto(url)
    words = caption_after_upload(page, examples[0])
    assert len(words) >= 3, words
    slider = page.locator("#word-slider input[type=range]")
    assert slider.get_attribute("max") == str(len(words))  # the slider spans the caption
    assert page.locator("#words [data-word].cx-current").inner_text() == words[0]
    first = canvas_pixels(page)
    page.screenshot(path=str(tmp_path / "page-word-1.png"), full_page=True)

    sent = len(traffic.requests)
    slider.focus()
    for word in range(2, len(words) + 1):  # keyboard: one step right = the next word
        page.keyboard.press("ArrowRight")
        wait_for_word(page, word)
        assert page.locator("#words [data-word].cx-current").inner_text() == words[word - 1]
    second_to_last = canvas_pixels(page)
    page.locator("#gallery [data-word='2']").click()  # a thumbnail
    wait_for_word(page, 2)
    second = canvas_pixels(page)
    page.locator("#words [data-word='1']").click()  # a word
    wait_for_word(page, 1)
    assert np.array_equal(canvas_pixels(page), first)  # back to word 1: the same picture
    page.wait_for_timeout(500)  # anything late would be counted too
    assert traffic.requests[sent:] == []  # no request while stepping

    for other in (second, second_to_last):  # another word, other pixels
        assert np.abs(other - first).mean() > 2
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    shutil.copy(tmp_path / "page.png", SCREENSHOT)

    # An example click shows its (lazily cached) result and the words follow it.
    page.locator("#examples button.gallery-item").nth(1).click()
    page.wait_for_function(
        "w => document.querySelector('#caption textarea').value !== w", arg=" ".join(words))
    wait_for_word(page, 1)
    example_words = page.locator("#caption textarea").input_value().split()
    assert page.locator("#words [data-word]").all_inner_texts() == example_words
    page.close()


def test_browser_heatmap_matches_the_server_overlay(browser, app):
    """Same interpolation between true cell centres, same colour map, same blend: the canvas
    equals visualize.attention_overlay on the same display image to within rounding."""
    url, examples = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    words = caption_after_upload(page, examples[0])
    model = Demo.load(weights())
    model.allow_files([examples[0]])
    payload = model.view(examples[0], 3, 20).explorer
    assert payload["tokens"] == words
    size = [payload["width"], payload["height"]]
    base = np.asarray(page.evaluate(  # the picture shown, at display size, as the explorer reads it
        """([w, h]) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
                         const x = c.getContext('2d'); x.imageSmoothingQuality = 'high';
                         x.drawImage(document.querySelector('#input-image img'), 0, 0, w, h);
                         return Array.from(x.getImageData(0, 0, w, h).data); }""", size),
        dtype=np.uint8).reshape(size[1], size[0], 4)[..., :3]
    shown = Image.fromarray(base)
    maps = np.asarray(payload["attention"]).reshape(len(words), payload["grid"], payload["grid"])
    for word in (1, 2, len(words)):
        page.locator(f"#words [data-word='{word}']").click()
        wait_for_word(page, word)
        expected = np.asarray(attention_overlay(shown, maps[word - 1], payload["centres"]),
                              dtype=np.int16)
        difference = np.abs(canvas_pixels(page) - expected)
        assert difference.mean() < 0.5 and difference.max() <= 2, word

    # and the interpolation itself, number for number
    heat = np.asarray(page.evaluate(
        """([a, g, w, h, c]) => Array.from(CaptionerExplorer.heatmap(a, g, w, h, c))""",
        [maps[1].ravel().tolist(), payload["grid"], 37, 23, payload["centres"]]))
    reference = upsample_attention(maps[1], 37, 23, np.asarray(payload["centres"]))
    np.testing.assert_allclose(heat.reshape(23, 37), reference / reference.max(), atol=1e-12)
    page.close()


def test_photo_caption_downloads_little(browser, app):
    """One caption of the example photo, not counting the page: the preview of the upload that
    gradio shows, the maps and the caption; no overlay pictures, no second copy of the image."""
    url, examples = app
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    traffic = Traffic(page)
    page.goto(url)
    caption_after_upload(page, examples[0])  # first caption: loads the fonts it shows, etc.
    page.wait_for_load_state("networkidle")
    before = traffic.received
    caption_after_upload(page, PHOTO)
    page.wait_for_timeout(500)
    received_kb = (traffic.received - before) / 1024
    print(f"\nphoto caption: {received_kb:.0f} KB received")
    assert received_kb <= 150
    page.close()


def test_phone_touch_and_no_sideways_scrolling(browser, app, tmp_path):
    url, examples = app
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True,
                                  is_mobile=True, device_scale_factor=2)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    words = caption_after_upload(page, examples[0])
    page.locator("#gallery [data-word='3']").tap()
    wait_for_word(page, 3)
    slider = page.locator("#word-slider input[type=range]")
    box = slider.bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)  # the end
    wait_for_word(page, len(words))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    context.close()


def caption_changes(page, before: str) -> list[str]:
    page.wait_for_function("c => document.querySelector('#caption textarea').value !== c",
                           arg=before)
    page.wait_for_function("() => document.querySelector('.cx-status').textContent === ''")
    return page.locator("#caption textarea").input_value().split()


def test_questioning_the_model_in_the_browser(browser, app, tmp_path):
    """Pick another word from the alternatives, go back, make the model look at the other
    object, and open a lab scene with its ground truth: all from the page."""
    url, examples = app  # examples[0]: a small red circle left of a big green one
    scene = render_scene(np.random.default_rng(20261125), 256)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    own = caption_after_upload(page, examples[0])
    colour = next(i for i, w in enumerate(own) if w in ("red", "green")) + 1  # 1-based
    other = next(o for o in scene.objects if o.color != own[colour - 1])

    # pick the other size at the size word: the model then writes about the other circle, and
    # the attention of the words after it (attention at word t follows words up to t - 2) moves
    size = next(i for i, w in enumerate(own) if w in ("small", "big")) + 1
    switched = "small" if own[size - 1] == "big" else "big"
    page.locator(f"#words [data-word='{size + 2}']").click()
    wait_for_word(page, size + 2)
    before = canvas_pixels(page)
    page.locator(f"#words [data-word='{size}']").click()
    wait_for_word(page, size)
    page.locator(f"#alternatives [data-alt='{switched}']").click()
    picked = caption_changes(page, " ".join(own))
    assert picked[:size] == own[:size - 1] + [switched]
    assert page.locator("#words [data-word].cx-forced").count() == size
    page.locator(f"#words [data-word='{size + 2}']").click()
    wait_for_word(page, size + 2)
    assert np.abs(canvas_pixels(page) - before).mean() > 1  # it now looks at the other one
    page.screenshot(path=str(tmp_path / "picked.png"), full_page=True)

    page.locator(".cx-reset").click()
    assert caption_changes(page, " ".join(picked)) == own

    # look here: at the colour word, click the centre of the other circle
    page.locator(f"#words [data-word='{colour}']").click()
    wait_for_word(page, colour)
    page.locator(".cx-look").click()
    canvas = page.locator("#heatmap canvas")
    canvas.scroll_into_view_if_needed()
    box, (x0, y0, x1, y1) = canvas.bounding_box(), other.box
    canvas.click(position={"x": box["width"] * (x0 + x1) / 512,
                           "y": box["height"] * (y0 + y1) / 512})
    looked = caption_changes(page, " ".join(own))
    assert looked[:colour - 1] == own[:colour - 1] and looked[colour - 1] == other.color
    page.screenshot(path=str(tmp_path / "looked.png"), full_page=True)

    # the scene lab: a fresh scene with its truth
    page.locator("#new-scene").click()
    caption_changes(page, " ".join(looked))
    truth = page.locator("#ground-truth").inner_text()
    assert "Ground truth:" in truth and "true captions" in truth
    page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
    page.close()
