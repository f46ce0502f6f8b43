"""The app's logic without a browser or server: captioning, the explorer payload, which files
a client may open, errors, API payload and the model panel."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from captioner.decoding import Caption
from captioner.demo import (
    DISPLAY_MAX,
    DISPLAY_MIN,
    NO_IMAGE,
    Demo,
    Look,
    Result,
    api_payload,
    describe_score,
    explorer_payload,
    load_input,
    unpack_map,
)
from captioner.hub import BUNDLED_WEIGHTS
from captioner.model import WeightsError
from captioner.preprocess import NOT_AN_IMAGE, ImageError
from captioner.scenes import render_scene

MAX_LEN = 6  # random tiny models rarely stop by themselves: keep captions short and fast


@pytest.fixture
def demo(saved_model_dir, uploads) -> Demo:
    return Demo.load(str(saved_model_dir))


@pytest.fixture
def scene() -> Image.Image:
    return render_scene(np.random.default_rng(20261125)).image


@pytest.fixture
def result(demo, scene) -> Result:
    return demo.caption(scene, beam_size=2, max_len=MAX_LEN)


def test_caption_keeps_words_maps_and_the_display_size(result):
    t = len(result.tokens)
    assert 1 <= t <= MAX_LEN and result.attention.shape[0] == t
    assert result.text == " ".join(result.tokens)
    assert np.allclose(result.attention.sum(axis=(1, 2)), 1, atol=1e-4)
    assert DISPLAY_MIN <= max(result.size) <= DISPLAY_MAX  # 64 px scene enlarged
    assert result.score <= 0


def test_every_input_kind_gives_the_same_caption(demo, scene, uploads):
    path = uploads / "scene.png"
    scene.save(path)
    expected = demo.caption(scene, 1, MAX_LEN).tokens
    for source in (str(path), path, path.read_bytes(), {"path": str(path), "orig_name": "x.png"}):
        assert demo.caption(load_input(source), 1, MAX_LEN).tokens == expected
        assert demo.api(source, 1, MAX_LEN)["tokens"] == expected  # uploads may be opened


def test_large_images_are_downscaled_for_display(demo):
    big = Image.new("RGB", (3000, 1500), (120, 130, 140))
    result = demo.caption(big, 1, 3)
    assert result.size == (DISPLAY_MAX, DISPLAY_MAX // 2)


def test_explorer_payload_has_what_the_browser_draws_from(demo, result):
    payload = explorer_payload(result, demo.cell_centres)
    assert json.loads(json.dumps(payload)) == payload  # plain JSON
    grid = demo.model.config.grid_size
    assert payload["tokens"] == result.tokens and payload["grid"] == grid
    maps = np.asarray([unpack_map(m) for m in payload["attention"]])
    assert maps.shape == (len(result.tokens), grid * grid)
    # each word's map scaled to its own peak, kept to 1/255 in square-root space
    peaks = result.attention.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(np.sqrt(maps.reshape(-1, grid, grid)),
                               np.sqrt(result.attention / peaks), atol=0.5 / 255 + 1e-9)
    np.testing.assert_allclose(payload["centres"], demo.cell_centres, atol=1e-6)
    assert (payload["width"], payload["height"]) == result.size  # drawn at display size
    assert "image" not in payload  # the browser already shows the picture: never sent back


def test_view_returns_the_caption_and_the_explorer_payload(demo, scene, uploads):
    path = uploads / "s.png"
    scene.save(path)
    view = demo.view({"path": str(path), "orig_name": "s.png"}, 2, MAX_LEN)
    assert view.caption == " ".join(view.explorer["tokens"])
    assert "beam 2" in view.details
    assert len(view.explorer["attention"]) == len(view.explorer["tokens"])


def test_client_paths_outside_the_uploads_are_never_opened(demo, scene, tmp_path, uploads):
    """A client names a file: only gradio's uploads and the shipped examples may be opened.
    Elsewhere, an existing image, a text file and a missing file all get one message."""
    private = tmp_path / "private"
    for sub, content in (("image", None), ("text", b"secret"), ("missing", False)):
        (private / sub).mkdir(parents=True)
        if content is None:
            scene.save(private / sub / "secret.png")
        elif content:
            (private / sub / "secret.png").write_bytes(content)
    sneaky = str(uploads / ".." / "private" / "image" / "secret.png")  # climbs out
    link = uploads / "link.png"
    link.symlink_to(private / "image" / "secret.png")  # points out
    messages = set()
    for path in [private / s / "secret.png" for s in ("image", "text", "missing")] + [sneaky]:
        for payload in (str(path), {"path": str(path)}, {"path": str(path),
                                                        "meta": {"_type": "gradio.FileData"}}):
            for handler in (demo.api, demo.view):
                with pytest.raises(ImageError) as err:
                    handler(payload, 1, MAX_LEN)
                messages.add(str(err.value))
    assert messages == {f"secret.png: {NOT_AN_IMAGE}"}
    with pytest.raises(ImageError, match=f"link.png: {NOT_AN_IMAGE}"):
        demo.api({"path": str(link)}, 1, MAX_LEN)
    # an upload of a text file reads the same
    (uploads / "secret.png").write_bytes(b"secret")
    with pytest.raises(ImageError) as err:
        demo.api({"path": str(uploads / "secret.png")}, 1, MAX_LEN)
    assert str(err.value) in messages
    # shipped examples may be named
    example = private / "image" / "secret.png"
    demo.allow_files([example])
    assert demo.api({"path": str(example)}, 1, MAX_LEN)["tokens"]


@pytest.mark.parametrize("name,data,message", [
    ("notes.txt", b"this is not an image\n", "not an image"),
    ("cut.jpg", None, "corrupt or truncated"),
    ("empty.png", b"", "empty"),
])
def test_bad_files_give_readable_errors(demo, uploads, scene, name, data, message):
    if data is None:  # a JPEG cut in half
        buffer = io.BytesIO()
        scene.resize((256, 256)).save(buffer, format="JPEG")
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path = uploads / "upload" / name
    path.parent.mkdir()
    path.write_bytes(data)
    for source in (str(path), data, {"path": str(path), "orig_name": name}):
        with pytest.raises(ImageError, match=message) as err:
            demo.api(source, 1, MAX_LEN)
        assert str(uploads) not in str(err.value)  # never a server path in the message
        assert "Traceback" not in str(err.value)


def test_missing_image_and_bad_settings(demo, scene):
    with pytest.raises(ImageError, match="no image"):
        demo.view(None)
    assert "upload" in NO_IMAGE
    with pytest.raises(ValueError, match="beam size must be a whole number from 1 to 5"):
        demo.caption(scene, beam_size=0)
    with pytest.raises(ValueError, match="maximum length"):
        demo.caption(scene, max_len="many")


def test_decompression_bomb_is_refused(demo, uploads):
    path = uploads / "bomb.png"
    Image.new("1", (9000, 8000)).save(path)  # 72 megapixels, a few kB on disk
    with pytest.raises(ImageError, match="too large"):
        demo.view(str(path))


def test_api_payload_is_plain_json(demo, result):
    payload = api_payload(result, demo.cell_centres)
    assert json.loads(json.dumps(payload)) == payload
    t, grid = len(payload["tokens"]), demo.model.config.grid_size
    assert payload["caption"] == " ".join(payload["tokens"])
    assert isinstance(payload["score"], float)
    assert np.asarray(payload["attention"]).shape == (t, grid, grid)
    assert len(payload["cell_centres"]) == grid


def test_empty_caption_is_handled(demo, scene):
    empty = Result(Caption([], -1.0, np.zeros((0, 4, 4), np.float32)), scene.size)
    assert api_payload(empty)["attention"] == []
    assert explorer_payload(empty, demo.cell_centres)["attention"] == []


def test_model_panel_reports_weights_data_and_metrics(saved_model_dir):
    plain = Demo.load(str(saved_model_dir)).model_markdown()
    assert "local folder `model`" in plain and "resnet18" in plain
    assert str(saved_model_dir.parent) not in plain  # no server path on the page
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


def test_model_panel_names_bundled_weights_without_a_path():
    shown = Demo.load().model_markdown()
    assert "bundled weights" in shown
    assert str(BUNDLED_WEIGHTS) not in shown and str(BUNDLED_WEIGHTS.parent) not in shown


def test_missing_weights_raise_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="no such model folder"):
        Demo.load(str(tmp_path / "nowhere"))
    (tmp_path / "broken").mkdir()
    with pytest.raises(WeightsError, match="config.json"):
        Demo.load(str(tmp_path / "broken"))


# --- questioning the model (bundled weights: a trained scenes model) ---

@pytest.fixture(scope="module")
def bundled() -> Demo:
    return Demo.load(str(BUNDLED_WEIGHTS), device="cpu")


@pytest.fixture(scope="module")
def two_circles():
    """examples/scene-6-old-world.png: a small red circle left of a big green one."""
    return render_scene(np.random.default_rng(20261125), 256)


def centre_of(obj, side: int) -> tuple[float, float]:
    x0, y0, x1, y1 = obj.box
    return (x0 + x1) / 2 / side, (y0 + y1) / 2 / side


def test_payload_carries_alternatives_gate_and_beams(demo, scene):
    result = demo.caption(scene, 3, MAX_LEN)
    payload = explorer_payload(result, demo.cell_centres)
    assert json.loads(json.dumps(payload)) == payload
    t = len(payload["tokens"])
    assert len(payload["alternatives"]) == len(payload["gate"]) == t
    for ranked in payload["alternatives"]:
        probs = [r["prob"] for r in ranked]
        assert 1 <= len(ranked) <= 5 and probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs)
    assert all(0 <= g <= 1 for g in payload["gate"])
    assert payload["beams"] and payload["beams"][0]["caption"] == payload["caption"]
    assert payload["truncated"] == (payload["tokens"] and len(payload["tokens"]) == MAX_LEN
                                    and result.caption.truncated)
    assert payload["steered"] is False and payload["forced"] == 0


def test_a_picked_word_forces_the_start_and_the_own_caption_comes_back(bundled, two_circles):
    image = two_circles.image
    own = bundled.caption(image, 1, 20)
    again = bundled.caption(image, 1, 20, prefix=own.text)
    assert again.tokens == own.tokens and again.forced == len(own.tokens)
    np.testing.assert_allclose(again.attention, own.attention, atol=1e-6)
    colour = next(i for i, w in enumerate(own.tokens) if w in ("red", "green"))
    other = "red" if own.tokens[colour] == "green" else "green"
    picked = bundled.caption(image, 1, 20, prefix=" ".join(own.tokens[:colour] + [other]))
    assert picked.tokens[:colour + 1] == own.tokens[:colour] + [other]
    assert picked.tokens != own.tokens and explorer_payload(picked, bundled.cell_centres)[
        "steered"]
    with pytest.raises(ValueError, match="'zebra'"):
        bundled.caption(image, 1, 20, prefix="a zebra")


def test_look_here_on_the_other_object_changes_the_colour_word(bundled, two_circles):
    """At the colour word of one circle, make the model look at the other: it names the other
    circle's colour. Looking where it looked anyway changes nothing."""
    image = two_circles.image
    own = bundled.caption(image, 1, 20)
    colour = next(i for i, w in enumerate(own.tokens) if w in ("red", "green"))
    target = next(o for o in two_circles.objects if o.color != own.tokens[colour])
    where = Look(colour + 1, *centre_of(target, 256))
    looked = bundled.caption(image, 1, 20, look=where)  # the words before: the model's own
    assert looked.tokens[:colour] == own.tokens[:colour]
    assert looked.tokens[colour] == target.color
    assert explorer_payload(looked, bundled.cell_centres)["look"] == vars(where)
    same = next(o for o in two_circles.objects if o.color == own.tokens[colour])
    assert bundled.caption(image, 1, 20, look=Look(colour + 1, *centre_of(same, 256))
                           ).tokens[colour] == own.tokens[colour]
    with pytest.raises(ValueError, match="inside the image"):
        bundled.caption(image, 1, 20, look=Look(2, 1.5, 0.5))


def test_a_scenes_model_warns_beside_the_caption_on_unlike_images(bundled, two_circles,
                                                                  uploads):
    photo = Image.open(BUNDLED_WEIGHTS.parent / "examples" / "photo-grace-hopper.jpg")
    warned = bundled.caption(photo.convert("RGB"), 1, 20)
    assert warned.warning and "not meaningful" in warned.warning
    view_details = describe_score(warned)
    assert view_details.startswith("**⚠") and "not meaningful" in view_details
    assert bundled.caption(two_circles.image, 1, 20).warning is None
    path = uploads / "photo.jpg"
    photo.save(path)
    assert "not meaningful" in bundled.api(str(path), 1, 20)["warning"]


def test_examples_for_a_scenes_model_leave_out_the_photo(bundled, make_model, tmp_path):
    examples = sorted(str(p) for p in (BUNDLED_WEIGHTS.parent / "examples").glob("*.*")
                      if p.suffix in (".png", ".jpg"))
    kept = bundled.suitable_examples(examples)
    assert kept and all("scene" in p for p in kept) and len(kept) == len(examples) - 1
    from captioner.vocab import SPECIALS

    photos = make_model(vocab=[*SPECIALS, "a", "dog", "runs", "on", "grass"])
    other = Demo.load(str(photos.save(tmp_path / "photos")))
    assert other.suitable_examples(examples) == examples  # not a scenes model: all of them


def test_scene_lab_shows_truth_boxes_and_pointing(bundled):
    picture, view, truth = bundled.new_scene(3, 1)
    assert min(picture.size) >= DISPLAY_MIN  # enlarged for the page
    sent = view.explorer["image"]  # and sent with the caption, a few KB
    assert sent.startswith("data:image/webp;base64,") and len(sent) < 8_000
    lab = view.explorer["lab"]
    assert lab["objects"] and all(0 <= v <= 1 for o in lab["objects"] for v in o["box"])
    assert "Ground truth:" in truth and "true captions" in truth
    assert ("content: right**" in truth) != ("content: wrong" in truth)
    assert lab["words"], "a trained model names at least one object"
    for w in lab["words"]:  # a colour or shape word of its object, or a count word
        token = view.explorer["tokens"][w["index"]]
        label = lab["objects"][w["object"]]["label"].split()
        assert token in label or token[:-1] in label or token in ("two", "three"), token
        assert w["object"] in w["objects"]
    assert len(json.dumps(view.explorer)) < 20_000  # the whole caption's payload
    # compose: the objects asked for, and a clear error for impossible ones
    specs = [{"shape": "square", "color": "blue", "size": "big", "position": (0.3, 0.3)},
             {"shape": "circle", "color": "yellow", "size": "small", "position": (0.7, 0.7)}]
    _, view, truth = bundled.compose(specs, 1)
    assert "big blue square" in truth and "small yellow circle" in truth
    assert sorted(o["label"] for o in view.explorer["lab"]["objects"]) == [
        "big blue square", "small yellow circle"]
    with pytest.raises(ValueError, match="unknown color"):
        bundled.compose([{"shape": "square", "color": "white", "size": "big",
                          "position": (0.5, 0.5)}])
