"""The browser explorer's own logic, in headless Chromium on a static page (no server): which map
each word shows, which way up the grid is drawn, and what a click or a pick sends back. The
maps are one-hot on cells that tell row from column and word from word."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.network import CHROMIUM, CHROMIUM_ARGS
from captioner.demo import pack_map, unpack_map

pytestmark = pytest.mark.browser

WEB = Path(__file__).resolve().parent.parent / "captioner" / "demo" / "web"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) not installed")

WIDTH, HEIGHT, GRID = 160, 80, 4  # a wide picture: x and y scale differently
CENTRES = [0.125, 0.375, 0.625, 0.875]
CELLS = {1: (1, 2), 2: (2, 1), 3: (1, 1)}  # word -> (row, column): inner cells, peaks unique
TOKENS = ["a", "red", "circle"]


def one_hot(row, column):
    heat = np.zeros((GRID, GRID))
    heat[row, column] = 1
    return heat.reshape(-1).tolist()


PAYLOAD = {
    "tokens": TOKENS, "caption": " ".join(TOKENS), "grid": GRID, "centres": CENTRES,
    "width": WIDTH, "height": HEIGHT,
    "attention": [pack_map(np.asarray(one_hot(*CELLS[w]))) for w in (1, 2, 3)],
    "alternatives": [[{"word": "a", "prob": 0.9}],
                     [{"word": "red", "prob": 0.6}, {"word": "blue", "prob": 0.3}],
                     [{"word": "circle", "prob": 0.8}]],
}


def grey_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (128, 128, 128)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        # the canvas is shown at 2.5x its pixel size, so a click must be scaled by the
        # displayed box, not by the canvas's own width and height
        page.set_content(f"""<style>#heatmap canvas {{ width: 400px; height: 200px; }}</style>
            <img id="picture" src="{grey_png()}"><div id="root">
            {(WEB / "explorer.html").read_text()}</div>""")
        page.add_script_tag(content=(WEB / "explorer.js").read_text())
        page.evaluate("""([payload]) => {
            window.events = [];
            const props = {value: null, floor: 0.1, image_selector: "#picture"};
            window.props = props;
            CaptionerExplorer.mount(document.querySelector("#root"), props,
                                    (name, f) => { window.reload = f; },
                                    (event, details) => window.events.push([event, details]));
            props.value = payload; window.reload();
        }""", [PAYLOAD])
        page.wait_for_function("document.querySelector('#heatmap').dataset.painted >= 1")
        yield page
        browser.close()


def hottest_pixel(page) -> tuple[int, int]:
    """(x, y) in canvas pixels where the drawn attention is strongest: the explorer keeps the
    picture bright where the model looked and dims it elsewhere, so the brightest pixel of
    the grey picture."""
    data = page.evaluate("""() => {
        const c = document.querySelector('#heatmap canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    bright = np.asarray(data).reshape(HEIGHT, WIDTH, 4)[:, :, :3].sum(axis=2)
    y, x = np.unravel_index(bright.argmax(), bright.shape)
    return int(x), int(y)


@pytest.mark.parametrize("word", [2, 3, 1])
def test_each_word_shows_its_own_map_the_right_way_up(page, word):
    page.click(f'#words [data-word="{word}"]')
    assert page.evaluate("document.querySelector('#heatmap').dataset.word") == str(word)
    row, column = CELLS[word]
    x, y = hottest_pixel(page)
    # the peak sits at the cell centre: column -> x over the width, row -> y over the height
    assert abs(x + 0.5 - CENTRES[column] * WIDTH) <= 1
    assert abs(y + 0.5 - CENTRES[row] * HEIGHT) <= 1


def test_look_here_click_sends_the_point_as_fractions_of_the_picture(page):
    page.click('#words [data-word="2"]')
    page.click(".cx-look")
    box = page.locator("#heatmap canvas").bounding_box()
    assert round(box["width"]) == 400  # displayed larger than its 160 pixels
    page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.75 * box["height"])
    event, details = page.evaluate("window.events.at(-1)")
    assert event == "look" and details["word"] == 2 and details["prefix"] == "a"
    assert details["x"] == pytest.approx(0.25, abs=0.01)
    assert details["y"] == pytest.approx(0.75, abs=0.01)


def test_picking_an_alternative_sends_the_words_before_it_and_the_pick(page):
    page.click('#words [data-word="2"]')
    page.click('#alternatives [data-alt="blue"]')
    event, details = page.evaluate("window.events.at(-1)")
    assert (event, details) == ("pick", {"prefix": "a blue"})
    count = page.evaluate("window.events.length")
    page.click('#alternatives [data-alt="red"]')  # the word already there asks nothing
    assert page.evaluate("window.events.length") == count
    assert json.dumps(details)  # plain data, as gradio sends it


def outlined(pixels: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """Whether the explorer drew a box's outline: its white line runs along the left edge
    (dashed for a miss, so along at least 40 % of it)."""
    x0, y0, x1, y1 = (round(v * size) for v, size in zip(box, (WIDTH, HEIGHT, WIDTH, HEIGHT)))
    white = pixels[y0 + 4:y1 - 4, x0 - 2:x0 + 2].min(axis=2) > 240  # rows x 4 columns
    return bool(white.any(axis=1).mean() > 0.4)


def test_a_count_word_outlines_every_object_it_counts_and_only_those(page):
    """"two red circles": the count word and its colour and shape words name objects 0 and 2,
    so the lab's boxes are drawn around both (object 1, between them, stays unmarked); a
    single object's word outlines just its own box."""
    boxes = [(0.1, 0.2, 0.3, 0.7), (0.4, 0.2, 0.6, 0.7), (0.7, 0.2, 0.9, 0.7)]
    lab = {"objects": [{"box": b, "label": f"object {k}"} for k, b in enumerate(boxes)],
           "words": [{"index": 0, "object": 0, "objects": [0, 2], "hit": True},
                     {"index": 2, "object": 1, "objects": [1], "hit": False}]}
    try:
        page.evaluate("([p]) => { window.props.value = p; window.reload(); }",
                      [{**PAYLOAD, "lab": lab}])
        drawn = {}
        for word in (1, 3, 2):
            page.click(f'#words [data-word="{word}"]')
            page.wait_for_function(f"document.querySelector('#heatmap').dataset.word == {word}")
            data = page.evaluate("""() => {
                const c = document.querySelector('#heatmap canvas');
                return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
            }""")
            pixels = np.asarray(data).reshape(HEIGHT, WIDTH, 4)[:, :, :3]
            drawn[word] = [outlined(pixels, b) for b in boxes]
        assert drawn == {1: [True, False, True], 3: [False, True, False],
                         2: [False, False, False]}
    finally:
        page.evaluate("([p]) => { window.props.value = p; window.reload(); }", [PAYLOAD])


def test_the_browser_unpacks_a_map_as_python_does(page):
    """An asymmetric, unnormalised map with a cell at zero: the browser's copy is the map
    scaled to its peak, cell for cell in order, exactly as `unpack_map` reads it."""
    heat = np.arange(16, dtype=float).reshape(4, 4) ** 1.5 / 7
    packed = pack_map(heat)
    browser = page.evaluate("(t) => Array.from(CaptionerExplorer.unpackMap(t))", packed)
    np.testing.assert_allclose(browser, unpack_map(packed), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.sqrt(browser), np.sqrt(heat.ravel() / heat.max()),
                               atol=0.5 / 255 + 1e-12)


def test_every_words_thumbnail_is_drawn_with_its_own_map(page):
    """The gallery under the heatmap: thumbnail n is word n's map over the picture (brightest
    at its own cell), drawn soon after the caption arrives."""
    page.wait_for_function("""() => [...document.querySelectorAll('#gallery canvas')].every(
        c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v > 0))""")
    for word, (row, column) in CELLS.items():
        size, data = page.evaluate(f"""() => {{
            const c = document.querySelectorAll('#gallery canvas')[{word - 1}];
            return [[c.width, c.height],
                    Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)];
        }}""")
        width, height = size
        bright = np.asarray(data).reshape(height, width, 4)[:, :, :3].sum(axis=2)
        y, x = np.unravel_index(bright.argmax(), bright.shape)
        assert abs((x + 0.5) / width - CENTRES[column]) < 0.1, word
        assert abs((y + 0.5) / height - CENTRES[row]) < 0.1, word
