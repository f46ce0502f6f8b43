"""The page in headless Chromium: upload, caption, move the word slider, the heatmap changes.

Uses the bundled weights/ when they exist (so the screenshots show the real model), else a tiny
random model; CAPTIONER_TEST_WEIGHTS overrides both. Screenshots go to the test's tmp_path and
the full page is also copied to /tmp/captioner-screenshot.png.
"""

import os
import shutil
from pathlib import Path

import pytest

from captioner.hub import BUNDLED_WEIGHTS

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword)")]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
SCREENSHOT = Path("/tmp/captioner-screenshot.png")
TIMEOUT_MS = 30_000

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")

from test_app import running_app  # noqa: E402  (after the skips: imports gradio)


def weights_for_screenshots() -> str | None:
    chosen = os.environ.get("CAPTIONER_TEST_WEIGHTS")
    if chosen:
        return chosen
    return str(BUNDLED_WEIGHTS) if (BUNDLED_WEIGHTS / "model.safetensors").is_file() else None


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def heatmap_src(page) -> str | None:
    img = page.locator("#heatmap img")
    return img.first.get_attribute("src") if img.count() else None


def current_word(page) -> str:
    """The word(s) HighlightedText marks (gradio gives them the class `highlighted`)."""
    return "|".join(t.strip() for t in
                    page.locator("#words .token.highlighted .text").all_inner_texts())


def test_upload_caption_and_step_through_words(browser, tmp_path):
    with running_app(tmp_path, weights_for_screenshots()) as (url, examples):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.locator("#input-image input[type=file]").set_input_files(examples[0])
        page.wait_for_function(
            "() => document.querySelector('#caption textarea')?.value.trim().length > 0")
        page.wait_for_function("() => document.querySelectorAll('#gallery img').length > 0")
        page.wait_for_function("() => document.querySelector('#heatmap img')")
        caption = page.locator("#caption textarea").input_value()
        words = caption.split()
        assert len(words) >= 2, caption
        slider = page.locator("#word-slider input[type=range]")
        page.wait_for_function(
            "n => document.querySelector('#word-slider input[type=range]').max == n",
            arg=str(len(words)))  # the slider spans exactly the caption's words
        first_src = heatmap_src(page)
        assert current_word(page) == words[0]
        page.locator("#heatmap").screenshot(path=str(tmp_path / "heatmap-word-1.png"))
        page.screenshot(path=str(tmp_path / "page-word-1.png"), full_page=True)

        # Keyboard on the range input: one step right = the second word.
        slider.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "src => document.querySelector('#heatmap img')?.getAttribute('src') !== src",
            arg=first_src)
        assert heatmap_src(page) != first_src
        assert page.locator("#word-slider input[type=number]").input_value() == "2"
        page.wait_for_timeout(300)
        assert current_word(page) == words[1]

        # Typing a number in the slider's box jumps straight to a word.
        last = len(words)
        box = page.locator("#word-slider input[type=number]")
        second_src = heatmap_src(page)
        box.fill(str(last))
        box.press("Enter")
        page.wait_for_function(
            "src => document.querySelector('#heatmap img')?.getAttribute('src') !== src",
            arg=second_src)
        page.wait_for_timeout(300)
        assert current_word(page) == words[-1]
        page.locator("#heatmap").screenshot(path=str(tmp_path / f"heatmap-word-{last}.png"))
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        shutil.copy(tmp_path / "page.png", SCREENSHOT)

        # An example click shows its (lazily cached) result and the slider still works.
        first_overlay = page.locator("#gallery img").first.get_attribute("src")
        page.locator("#examples button.gallery-item").nth(1).click()
        page.wait_for_function(  # the other image's overlays have arrived
            "s => document.querySelector('#gallery img')?.getAttribute('src') !== s",
            arg=first_overlay)
        example_words = page.locator("#caption textarea").input_value().split()
        page.wait_for_function(  # slider reset: spans the new words, back at word 1
            """n => { const r = document.querySelector('#word-slider input[type=range]');
                      return r.max == n && r.value == '1'; }""",
            arg=str(max(len(example_words), 2)))
        if len(example_words) >= 2:
            src = heatmap_src(page)
            slider.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "src => document.querySelector('#heatmap img')?.getAttribute('src') !== src",
                arg=src)
            page.wait_for_timeout(300)
            assert current_word(page) == example_words[1]
        page.screenshot(path=str(tmp_path / "page-example.png"), full_page=True)
        page.close()
