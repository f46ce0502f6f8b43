"""The app's logic without a browser or server: captioning, word stepping, errors, API payload."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from captioner.demo import (
    CURRENT,
    DISPLAY_MAX,
    DISPLAY_MIN,
    NO_IMAGE,
    Demo,
    Result,
    api_payload,
    highlighted,
    overlay_for,
    word_view,
)
from captioner.model import WeightsError
from captioner.preprocess import ImageError
from captioner.scenes import render_scene

MAX_LEN = 6  # random tiny models rarely stop by themselves: keep captions short and fast


@pytest.fixture
def demo(saved_model_dir) -> Demo:
    return Demo.load(str(saved_model_dir))


@pytest.fixture
def scene() -> Image.Image:
    return render_scene(np.random.default_rng(20261125)).image


@pytest.fixture
def result(demo, scene) -> Result:
    return demo.caption(scene, beam_size=2, max_len=MAX_LEN)


def test_caption_draws_one_overlay_per_word(result):
    t = len(result.tokens)
    assert 1 <= t <= MAX_LEN
    assert len(result.overlays) == t == result.attention.shape[0]
    assert result.text == " ".join(result.tokens)
    assert np.allclose(result.attention.sum(axis=(1, 2)), 1, atol=1e-4)
    assert DISPLAY_MIN <= max(result.image.size) <= DISPLAY_MAX  # 64 px scene enlarged
    assert all(o.size == result.image.size and o.mode == "RGB" for o in result.overlays)
    assert result.score <= 0


def test_every_input_kind_gives_the_same_caption(demo, scene, tmp_path):
    path = tmp_path / "scene.png"
    scene.save(path)
    expected = demo.caption(scene, 1, MAX_LEN).tokens
    for source in (str(path), path, path.read_bytes(), {"path": str(path), "orig_name": "x.png"}):
        assert demo.caption(source, 1, MAX_LEN).tokens == expected


def test_large_images_are_downscaled_for_display(demo):
    big = Image.new("RGB", (3000, 1500), (120, 130, 140))
    result = demo.caption(big, 1, 3)
    assert result.image.size == (DISPLAY_MAX, DISPLAY_MAX // 2)


def test_slider_steps_pick_precomputed_overlays_without_the_model(demo, result, monkeypatch):
    assert len(result.tokens) >= 2
    monkeypatch.setattr(demo.model, "forward", lambda *a, **k: pytest.fail("model called"))
    monkeypatch.setattr(demo.model, "step", lambda *a, **k: pytest.fail("model called"))
    for i in range(1, len(result.tokens) + 1):
        assert overlay_for(result, i) is result.overlays[i - 1]
    first, second = (np.asarray(overlay_for(result, i), dtype=np.int16) for i in (1, 2))
    assert np.abs(first - second).sum() > 0  # another word, another heatmap
    # out-of-range and odd slider values are clamped, not errors
    assert overlay_for(result, 0) is result.overlays[0]
    assert overlay_for(result, 99) is result.overlays[-1]
    assert overlay_for(result, "2") is result.overlays[1]
    assert overlay_for(result, None) is result.overlays[0]


def test_highlighted_marks_only_the_current_word():
    spans = highlighted(["a", "red", "circle"], 2)
    assert "".join(text for text, _ in spans) == "a red circle"
    assert [text for text, label in spans if label == CURRENT] == ["red"]
    assert [label for text, label in spans if text == "a"] == [None]
    assert highlighted([], 1) == []


def test_view_writes_files_for_gallery_heatmap_and_download(demo, scene):
    view = demo.view(scene, 2, MAX_LEN)
    assert view.count == len(view.gallery) >= 1
    assert [w for _, w in view.gallery] == view.caption.split()
    assert view.heatmap == view.gallery[0][0]
    for path, _ in view.gallery:
        with Image.open(path) as im:
            assert im.size[0] >= DISPLAY_MIN
    with Image.open(view.grid) as grid:
        assert grid.format == "PNG" and grid.width > 3 * 200
    assert [label for _, label in view.words if label] == [CURRENT]
    # the slider handler: picks the right file and moves the highlight
    assert view.count >= 2, "needs a caption of two words or more"
    heat, words = word_view(view.gallery, 2)
    assert heat == view.gallery[1][0]
    assert [t for t, label in words if label == CURRENT] == [view.gallery[1][1]]
    assert word_view(None, 3) == (None, [])


@pytest.mark.parametrize("name,data,message", [
    ("notes.txt", b"this is not an image\n", "not an image"),
    ("cut.jpg", None, "corrupt or truncated"),
    ("empty.png", b"", "empty"),
])
def test_bad_files_give_readable_errors(demo, tmp_path, scene, name, data, message):
    if data is None:  # a JPEG cut in half
        buffer = io.BytesIO()
        scene.resize((256, 256)).save(buffer, format="JPEG")
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path = tmp_path / "upload" / name
    path.parent.mkdir()
    path.write_bytes(data)
    for source in (str(path), data, {"path": str(path), "orig_name": name}):
        with pytest.raises(ImageError, match=message) as err:
            demo.caption(source, 1, MAX_LEN)
        assert str(tmp_path) not in str(err.value)  # never a server path in the message
        assert "Traceback" not in str(err.value)


def test_missing_image_and_bad_settings(demo, scene):
    with pytest.raises(ImageError, match="no image"):
        demo.caption(None)
    assert "upload" in NO_IMAGE
    with pytest.raises(ValueError, match="beam size must be a whole number from 1 to 5"):
        demo.caption(scene, beam_size=0)
    with pytest.raises(ValueError, match="maximum length"):
        demo.caption(scene, max_len="many")


def test_decompression_bomb_is_refused(demo, tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 8000)).save(path)  # 72 megapixels, a few kB on disk
    with pytest.raises(ImageError, match="too large"):
        demo.caption(str(path))


def test_api_payload_is_plain_json(demo, scene):
    payload = demo.api(scene, 2, MAX_LEN)
    assert json.loads(json.dumps(payload)) == payload
    t, grid = len(payload["tokens"]), demo.model.config.grid_size
    assert payload["caption"] == " ".join(payload["tokens"])
    assert isinstance(payload["score"], float)
    assert np.asarray(payload["attention"]).shape == (t, grid, grid)
    assert len(payload["cell_centres"]) == grid


def test_empty_caption_is_handled(demo, scene):
    empty = Result([], -1.0, np.zeros((0, 4, 4), np.float32), scene, [])
    assert overlay_for(empty, 1) is scene
    assert demo.grid_png(empty) is None
    assert api_payload(empty)["attention"] == []


def test_model_panel_reports_weights_data_and_metrics(saved_model_dir):
    plain = Demo.load(str(saved_model_dir)).model_markdown()
    assert str(saved_model_dir) in plain and "resnet18" in plain
    assert "none found" in plain
    assert "4×4 grid" in Demo.load(str(saved_model_dir)).explanation()
    metrics = {"dataset": "scenes", "split": "test", "images": 500, "selected_epoch": 7,
               "beam1": {"bleu4": 80.1, "pointing": 0.8, "pointing_chance": 0.1},
               "beam3": {"bleu4": 81.5, "pointing": 0.82, "pointing_chance": 0.1}}
    (saved_model_dir / "metrics.json").write_text(json.dumps(metrics))
    (saved_model_dir / "README.md").write_text(
        "---\nlicense: mit\n---\n\n# captioner: tiny test model\n\n## Training data\n\n"
        "Generated scenes of shapes.\n\n## Intended use and limits\n\nShapes only.\n")
    info = Demo.load(str(saved_model_dir)).model_markdown()
    for text in ("tiny test model", "Generated scenes of shapes", "| BLEU-4 | 80.1 | 81.5 |",
                 "| pointing accuracy | 80.0% | 82.0% |", "500 images", "82%", "10% by chance",
                 "Shapes only"):
        assert text in info


def test_missing_weights_raise_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="no such model folder"):
        Demo.load(str(tmp_path / "nowhere"))
    (tmp_path / "broken").mkdir()
    with pytest.raises(WeightsError, match="config.json"):
        Demo.load(str(tmp_path / "broken"))
