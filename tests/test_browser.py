"""The page in headless Chromium, over an emulated real network (150 ms latency, 10/5 Mbit/s),
on a desktop (1280x800) and a phone (390x844, touch): upload, caption, then step through the
words. The attention is drawn in the browser over the picture: stepping sends no request, its
pixels change from word to word, match the server's own overlay and keep every object's colour.
The first screen, errors, the shared link, the photo warning and the settings are checked too.

Uses the bundled weights/ (so the screenshots show the real model); CAPTIONER_TEST_WEIGHTS
overrides them. Screenshots go to the test's tmp_path; the full page is also copied to
/tmp/captioner-screenshot.png.
"""

import base64
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.network import CHROMIUM, CHROMIUM_ARGS, Traffic
from captioner.demo import DEFAULT_MAX_LEN, Demo, unpack_map
from captioner.demo.why import hard_companion
from captioner.hub import BUNDLED_WEIGHTS
from captioner.scenes import render_scene
from captioner.scenes.captions import ALL_COLORS
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
    # with the bundled weights, the bundled hard model beside them (the attention switch)
    with running_app(tmp_path_factory.mktemp("browser-app"), weights(),
                     hard_companion(weights())) as (url, examples):
        yield url, examples


DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True,
         "device_scale_factor": 2}


def open_page(browser, url: str, device: dict = DESKTOP):
    """A fresh page on the emulated network, once the page's first caption (the first example,
    or what the address names) is painted. Returns (page, traffic)."""
    page = browser.new_context(**device).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    traffic = Traffic(page)
    page.goto(url)
    page.wait_for_function("Number(document.querySelector('#heatmap')?.dataset.painted) > 0")
    return page, traffic


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
    before = painted(page)
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    page.wait_for_function("n => Number(document.querySelector('#heatmap').dataset.painted) > n",
                           arg=before)
    return page.locator("#caption textarea").input_value().split()


def test_stepping_through_words_asks_the_server_nothing(browser, app, tmp_path):
    url, examples = app
    page, traffic = open_page(browser, url)
    words = caption_after_upload(page, examples[0])
    assert len(words) >= 3, words
    slider = page.locator("#word-slider input[type=range]")
    assert slider.get_attribute("max") == str(len(words))  # the slider spans the caption
    page.locator("#words [data-word='1']").click()
    wait_for_word(page, 1)
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

    # the marked word changes with the picture: no inherited transition delays it
    assert page.locator("#words .cx-current").evaluate(
        "n => getComputedStyle(n).transitionDuration") == "0s"
    # arrow keys step from the word that has the focus, not from the one shown
    page.locator("#words [data-word='3']").focus()
    page.keyboard.press("ArrowRight")
    wait_for_word(page, 4)
    assert page.evaluate("document.activeElement.dataset.word") == "4"
    page.context.close()


def test_browser_heatmap_matches_the_server_overlay(browser, app):
    """Same interpolation between true cell centres, same colour map, same blend: the canvas
    equals visualize.attention_overlay on the same display image to within rounding."""
    url, examples = app
    page, _ = open_page(browser, url)
    words = caption_after_upload(page, examples[0])
    model = Demo.load(weights())
    model.allow_files([examples[0]])
    payload = model.view(examples[0], 3, DEFAULT_MAX_LEN).explorer
    assert payload["tokens"] == words
    size = [payload["width"], payload["height"]]
    base = np.asarray(page.evaluate(  # the picture shown, at display size, as the explorer reads it
        """([w, h]) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
                         const x = c.getContext('2d'); x.imageSmoothingQuality = 'high';
                         x.drawImage(document.querySelector('#input-image img'), 0, 0, w, h);
                         return Array.from(x.getImageData(0, 0, w, h).data); }""", size),
        dtype=np.uint8).reshape(size[1], size[0], 4)[..., :3]
    shown = Image.fromarray(base)
    maps = np.asarray([unpack_map(m) for m in payload["attention"]]).reshape(
        len(words), payload["grid"], payload["grid"])
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
    page.context.close()


def test_photo_caption_downloads_little(browser, app):
    """One caption of the example photo, not counting the page: the preview of the upload that
    gradio shows, the maps and the caption; no overlay pictures, no second copy of the image."""
    url, examples = app
    page, traffic = open_page(browser, url)
    caption_after_upload(page, examples[0])  # first caption: loads the fonts it shows, etc.
    page.wait_for_load_state("networkidle")
    before = traffic.received
    caption_after_upload(page, PHOTO)
    page.wait_for_timeout(500)
    received_kb = (traffic.received - before) / 1024
    print(f"\nphoto caption: {received_kb:.0f} KB received")
    assert received_kb <= 150
    page.context.close()


def test_phone_touch_and_no_sideways_scrolling(browser, app, tmp_path):
    url, examples = app
    page, _ = open_page(browser, url, PHONE)
    words = caption_after_upload(page, examples[0])
    page.locator("#gallery [data-word='3']").tap()
    wait_for_word(page, 3)
    slider = page.locator("#word-slider input[type=range]")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)  # the end
    wait_for_word(page, len(words))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    page.context.close()


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
    page, _ = open_page(browser, url)
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
    assert shown_word(page) == size  # the answer opens on the word the visitor changed
    assert page.locator("#words [data-word].cx-forced").count() == size
    page.locator(f"#words [data-word='{size + 2}']").click()
    wait_for_word(page, size + 2)
    assert np.abs(canvas_pixels(page) - before).mean() > 1  # it now looks at the other one
    page.screenshot(path=str(tmp_path / "picked.png"), full_page=True)

    page.locator(".cx-reset").click()
    assert caption_changes(page, " ".join(picked)) == own
    assert shown_word(page) == size + 2

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
    assert shown_word(page) == colour
    page.screenshot(path=str(tmp_path / "looked.png"), full_page=True)

    # the scene lab: a fresh scene with its truth
    page.locator("#new-scene").click()
    caption_changes(page, " ".join(looked))
    truth = page.locator("#ground-truth").inner_text()
    assert "Ground truth:" in truth and "true captions" in truth
    page.screenshot(path=str(tmp_path / "lab.png"), full_page=True)
    page.context.close()


def boxes(page, *selectors) -> dict:
    return {s: page.locator(s).first.bounding_box() for s in selectors}


@pytest.mark.parametrize("device, size", [(DESKTOP, (1280, 800)), (PHONE, (390, 844))])
def test_the_first_screen_shows_the_caption_the_slider_and_the_whole_picture(
        browser, app, device, size, tmp_path):
    """Without scrolling: on a desktop the caption, the words, the slider and the whole
    picture with its attention; on a phone the caption, the picture and the slider."""
    url, _ = app
    page, _ = open_page(browser, url, device)
    wanted = ["#caption textarea", "#heatmap canvas", "#word-slider input[type=range]"]
    if device is DESKTOP:
        wanted.append("#words")
    for selector, box in boxes(page, *wanted).items():
        assert box and box["x"] >= 0 and box["y"] >= 0, selector
        assert box["x"] + box["width"] <= size[0] and box["y"] + box["height"] <= size[1], (
            selector, box)
    assert page.locator("#heatmap canvas").bounding_box()["height"] >= 0.3 * size[1]
    assert page.evaluate("document.documentElement.scrollWidth") <= size[0]
    assert page.locator("#input-image img").count() == 1  # the picture captioned
    page.screenshot(path=str(tmp_path / "first-screen.png"))
    page.context.close()


def object_colours(page, objects, side: int) -> list[np.ndarray]:
    """Mean RGB of the middle of each object's box (given at `side` pixels) on the canvas."""
    pixels = canvas_pixels(page).astype(float)
    scale = pixels.shape[1] / side
    means = []
    for obj in objects:
        x0, y0, x1, y1 = (v * scale for v in obj.box)
        cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 6
        means.append(pixels[int(cy - r):int(cy + r), int(cx - r):int(cx + r)].reshape(-1, 3)
                     .mean(axis=0))
    return means


def test_every_object_keeps_its_colour_at_every_word(browser, app):
    """The attention dims the picture, it never tints it: at every word each object's pixels
    point the same way in RGB as the object's own colour, nearer to it than to any other
    colour of the scenes, and no darker than the overlay's floor."""
    from captioner.scenes import COLORS
    from captioner.visualize import OVERLAY_FLOOR

    url, examples = app
    scene = render_scene(np.random.default_rng(20261125), 256)  # examples[0]
    page, _ = open_page(browser, url)
    words = caption_after_upload(page, examples[0])
    palette = {name: np.asarray(rgb, float) / np.linalg.norm(rgb) for name, rgb in COLORS.items()}
    slider = page.locator("#word-slider input[type=range]")
    brightness = []
    for word in range(1, len(words) + 1):
        slider.evaluate("(s, w) => { s.value = String(w); "
                        "s.dispatchEvent(new Event('input', {bubbles: true})); }", word)
        wait_for_word(page, word)
        for obj, mean in zip(scene.objects, object_colours(page, scene.objects, 256)):
            own = np.asarray(COLORS[obj.color], float)
            direction = mean / np.linalg.norm(mean)
            assert direction @ (own / np.linalg.norm(own)) > 0.995, (word, obj.color, mean)
            assert max(palette, key=lambda name: direction @ palette[name]) == obj.color
            brightness.append(np.linalg.norm(mean) / np.linalg.norm(own))
    assert min(brightness) >= OVERLAY_FLOOR * 0.9
    assert max(brightness) - min(brightness) > 0.3  # and the attention does show
    page.context.close()


def test_no_special_token_appears_anywhere(browser, app):
    url, _ = app
    page, _ = open_page(browser, url)
    count = page.locator("#words [data-word]").count()
    texts = []
    for word in range(1, count + 1):
        page.locator(f"#words [data-word='{word}']").click()
        wait_for_word(page, word)
        texts += page.locator("#alternatives [data-alt]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.alt + ' ' + n.textContent)")
    texts += [page.locator(s).inner_text() for s in ("#words", "#beams", "#caption")]
    assert texts and not [t for t in texts if re.search(r"<(end|start|pad|unk)>|^end ", t)]
    page.context.close()


def toasts(page) -> list[str]:
    return page.locator(".toast-body").all_inner_texts()


def test_the_composers_defaults_make_a_scene(browser, app):
    url, _ = app
    page, _ = open_page(browser, url)
    before = page.locator("#caption textarea").input_value()
    page.locator("#compose").click()
    caption_changes(page, before)
    assert "Ground truth:" in page.locator("#ground-truth").inner_text()
    assert toasts(page) == []  # no warning
    page.context.close()


def test_errors_clear_the_status_and_what_is_stale(browser, app, tmp_path):
    """A question the server refuses ends "writing the rest…" with the reason and keeps the
    caption; a broken upload or a removed picture clears the caption and the explorer. No
    "Error" is left over the outputs."""
    url, _ = app
    page, _ = open_page(browser, url)
    own = page.locator("#caption textarea").input_value()
    page.locator("#words [data-word='2']").click()
    wait_for_word(page, 2)
    # a word the model does not know (a client could send anything)
    page.locator("#alternatives [data-alt]:not(.cx-chosen)").first.evaluate(
        "b => { b.dataset.alt = 'zebra'; b.click(); }")
    page.wait_for_function("() => document.querySelector('.cx-status').textContent"
                           ".includes('zebra')")
    assert page.locator("#caption textarea").input_value() == own
    assert page.locator("#words [data-word]").count() == len(own.split())

    broken = tmp_path / "broken.png"
    broken.write_text("not a picture")
    page.locator("#input-image input[type=file]").set_input_files(str(broken))
    page.wait_for_function("() => document.querySelector('#caption textarea').value === ''")
    assert page.locator(".cx-empty").is_visible()
    assert "⚠" in page.locator(".cx-empty").inner_text()
    assert page.locator("#words [data-word]").count() == 0
    assert page.locator(".cx-status").inner_text() == ""
    assert page.get_by_text("Error", exact=True).count() == 0

    page.locator("#examples button.gallery-item").first.click()  # back to a picture
    page.wait_for_function("() => document.querySelector('#caption textarea').value !== ''")
    page.locator("#input-image button[aria-label='Remove Image']").click()  # removed
    page.wait_for_function("() => document.querySelector('#caption textarea').value === ''")
    assert page.locator("#words [data-word]").count() == 0
    assert page.locator("#heatmap canvas").is_hidden()
    page.context.close()


def test_a_shared_link_restores_the_caption_and_the_word(browser, app):
    """Example 2 at beam 2 with a word picked, at another word: the address records it, and
    opening that address elsewhere shows the same caption, forced words and word."""
    url, _ = app
    page, _ = open_page(browser, url)
    set_setting(page, "#beam", 2)
    page.locator("#examples button.gallery-item").nth(1).click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('example') === '1'")
    wait_for_beam(page, 2)
    page.locator("#words [data-word='2']").click()
    wait_for_word(page, 2)
    own = page.locator("#caption textarea").input_value()
    page.locator("#alternatives [data-alt]:not(.cx-chosen)").first.click()
    picked = caption_changes(page, own)
    page.locator("#words [data-word='3']").click()
    wait_for_word(page, 3)
    link = page.url
    assert "prefix=" in link and "beam=2" in link and "word=3" in link
    other, _ = open_page(browser, link, PHONE)
    assert other.locator("#caption textarea").input_value().split() == picked
    assert shown_word(other) == 3
    assert other.locator("#words [data-word].cx-forced").count() == 2
    assert other.locator("#beam input[type=number]").input_value() == "2"
    other.context.close()

    page.locator("#new-scene").click()  # a lab scene is shared by its number
    caption_changes(page, " ".join(picked))
    page.wait_for_function("() => new URL(location.href).searchParams.has('scene')")
    scene_caption = page.locator("#caption textarea").input_value()
    truth = page.locator("#ground-truth").inner_text()
    other, _ = open_page(browser, page.url)
    assert other.locator("#caption textarea").input_value() == scene_caption
    assert other.locator("#ground-truth").inner_text() == truth
    other.context.close()
    page.context.close()


def set_setting(page, selector: str, value: int) -> None:
    box = page.locator(f"{selector} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def wait_for_beam(page, beam: int) -> None:
    page.wait_for_function("b => document.querySelector('#details').innerText"
                           ".includes('beam ' + b + ' ')", arg=beam)


def test_an_example_click_keeps_the_settings(browser, app):
    url, _ = app
    page, _ = open_page(browser, url)
    set_setting(page, "#beam", 1)
    set_setting(page, "#max-len", 12)
    page.locator("#examples button.gallery-item").nth(1).click()
    wait_for_beam(page, 1)
    assert page.locator("#beam input[type=number]").input_value() == "1"
    assert page.locator("#max-len input[type=number]").input_value() == "12"
    page.wait_for_function("() => location.search.includes('example=1')")  # once painted
    assert "beam=1" in page.url and "len=12" in page.url
    page.context.close()


def test_a_photo_gets_an_alert_carried_onto_the_downloaded_grid(browser, app):
    url, _ = app
    page, _ = open_page(browser, url)
    caption_after_upload(page, PHOTO)
    alert = page.locator("[role=alert]")
    assert alert.is_visible() and "not meaningful" in alert.inner_text()
    assert "cx-unsure" in page.locator("#caption").get_attribute("class")  # faded
    share = page.locator(".cx-share")  # not shareable, and the page says so
    assert share.is_disabled() and "uploads" in share.inner_text() and "?" not in page.url
    with page.expect_download() as download:
        page.locator(".cx-download").click()
    grid = np.asarray(Image.open(download.value.path()).convert("RGB"), dtype=int)
    band = grid[44:70]  # the warning's line, under the caption
    amber = (np.abs(band - [180, 83, 9]).sum(axis=2) < 60).sum()
    assert amber > 100, amber
    caption_after_upload(page, app[1][0])  # a scene: no alert any more
    assert alert.is_hidden() and "cx-unsure" not in page.locator("#caption").get_attribute("class")
    page.context.close()


def why_pixels(page, name: str) -> np.ndarray:
    url = page.evaluate("n => document.querySelector(`#why [data-map=${n}] canvas`)"
                        ".toDataURL('image/png')", name)
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def joins(traffic) -> list[str]:
    """The page's questions to the server (one gradio queue join per event)."""
    return [u for u in traffic.requests if "/queue/join" in u]


@pytest.mark.parametrize("device, name", [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_why_this_word_draws_three_maps_with_one_request(browser, app, tmp_path, device, name):
    """At example 2's least certain colour word (a certain word's Grad-CAM and occlusion maps
    are both blank): one request brings back the same caption with three maps, drawn side
    by side like the heatmap; the attention one is the heatmap itself, the other two differ.
    Another word hides them (they explain one word), coming back shows them again."""
    url, examples = app
    page, traffic = open_page(browser, url, device)
    page.locator("#examples button.gallery-item").nth(1).click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('example') === '1'")
    model = Demo.load(weights())
    model.allow_files([examples[1]])
    words = model.view(examples[1], 3, DEFAULT_MAX_LEN).caption.split()
    page.wait_for_function("c => document.querySelector('#caption textarea').value === c",
                           arg=" ".join(words))
    colours = [i + 1 for i, w in enumerate(words) if w in ALL_COLORS]
    word = min(colours, key=lambda i: model.why(examples[1], i)["probability"])
    page.locator(f"#words [data-word='{word}']").click()
    wait_for_word(page, word)
    heat = canvas_pixels(page)
    asked = len(joins(traffic))
    page.locator(".cx-why").click()
    page.wait_for_function("() => Number(document.querySelector('#why').dataset.drawn) > 0")
    page.wait_for_timeout(500)  # anything late would be counted too
    assert len(joins(traffic)) == asked + 1
    assert page.locator("#why").is_visible() and shown_word(page) == word
    assert page.locator("#caption textarea").input_value().split() == words
    maps = {m: why_pixels(page, m) for m in ("attention", "gradcam", "occlusion")}
    assert np.array_equal(maps["attention"], canvas_pixels(page))  # the same drawing
    assert np.array_equal(maps["attention"], heat)
    for a, b in (("attention", "gradcam"), ("attention", "occlusion"), ("gradcam", "occlusion")):
        assert np.abs(maps[a] - maps[b]).mean() > 1, (a, b)
    title = page.locator(".cx-why-title").inner_text()
    assert f"word {word}" in title and words[word - 1] in title and "p(word)" in title
    shown = [page.locator(f"#why [data-map={m}] canvas").bounding_box()
             for m in ("attention", "gradcam", "occlusion")]
    assert shown[0]["x"] < shown[1]["x"] < shown[2]["x"]  # side by side
    assert shown[0]["y"] == shown[1]["y"] == shown[2]["y"]
    assert page.evaluate("document.documentElement.scrollWidth") <= device["viewport"]["width"]
    page.locator("#why").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / f"why-{name}.png"))
    page.screenshot(path=str(tmp_path / f"why-{name}-full.png"), full_page=True)
    shutil.copy(tmp_path / f"why-{name}.png", f"/tmp/captioner-why-{name}.png")
    page.locator(f"#words [data-word='{word + 1}']").click()
    wait_for_word(page, word + 1)
    assert page.locator("#why").is_hidden()
    page.locator(f"#words [data-word='{word}']").click()
    wait_for_word(page, word)
    assert page.locator("#why").is_visible()
    page.context.close()


def test_the_attention_switch_recaptions_and_keeps_the_word(browser, app, tmp_path):
    """Example 2 greedy (where the two bundled models say different captions), a word selected:
    "hard" gives the hard model's caption of the same picture at the same settings and word,
    the link records it, and "soft" comes back."""
    url, examples = app
    page, _ = open_page(browser, url)
    set_setting(page, "#beam", 1)
    page.locator("#examples button.gallery-item").nth(1).click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('example') === '1'")
    wait_for_beam(page, 1)
    soft = page.locator("#caption textarea").input_value()
    soft_card = page.locator("#model-info").inner_text()
    word = 2  # within both captions
    page.locator(f"#words [data-word='{word}']").click()
    wait_for_word(page, word)
    page.locator("#attention-kind label", has_text="hard").click()
    page.wait_for_function("() => new URL(location.href).searchParams.get('model') === 'hard'")
    page.wait_for_function("() => document.querySelector('.cx-status').textContent === ''")
    model = Demo.load(hard_companion(weights()))
    model.allow_files([examples[1]])
    hard = model.view(examples[1], 1, DEFAULT_MAX_LEN).caption
    assert hard != soft  # else this test could not tell the models apart
    assert page.locator("#caption textarea").input_value() == hard
    assert shown_word(page) == word and "beam 1 " in page.locator("#details").inner_text()
    assert "example=1" in page.url and f"word={word}" in page.url
    card = page.locator("#model-info").inner_text()  # the hard model's own card
    assert card != soft_card and re.search(r"Weights:.*\bhard\b", card), card
    page.screenshot(path=str(tmp_path / "hard.png"), full_page=True)
    other, _ = open_page(browser, page.url, PHONE)  # the link opens the hard model
    assert other.locator("#caption textarea").input_value() == hard
    assert other.locator("#attention-kind input[value=hard]").is_checked()
    assert shown_word(other) == word
    other.screenshot(path=str(tmp_path / "hard-phone.png"), full_page=True)
    other.context.close()
    page.locator("#attention-kind label", has_text="soft").click()
    page.wait_for_function("c => document.querySelector('#caption textarea').value === c",
                           arg=soft)
    wait_for_word(page, word)
    assert page.locator("#model-info").inner_text() == soft_card
    page.context.close()
