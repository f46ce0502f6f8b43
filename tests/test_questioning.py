"""Questioning a trained model: steering accuracy, "look here", the scene lab and the
out-of-distribution check, on the bundled scenes model (small and fast) and hand-made cases."""

import numpy as np
import pytest
import torch
from PIL import Image

from captioner.decoding import (
    Caption,
    Guide,
    box_map,
    caption_images,
    decode,
    images_to_batch,
    point_map,
)
from captioner.evaluation import steered_words, steering_summary, steering_trials
from captioner.familiarity import familiarity, looks_like_scene, trained_on_scenes
from captioner.hub import BUNDLED_WEIGHTS, load_model, metrics_table
from captioner.lab import compose, new_scene
from captioner.scenes import COLORS, get_world, render_scene, scene_rng
from captioner.vocab import SPECIALS

RED_CIRCLE = {"shape": "circle", "color": "red", "size": "big", "position": (0.3, 0.3)}
BLUE_SQUARE = {"shape": "square", "color": "blue", "size": "small", "position": (0.75, 0.75)}


@pytest.fixture(scope="module")
def bundled():
    return load_model(BUNDLED_WEIGHTS)


def obj(shape, color, size, box):
    return {"shape": shape, "color": color, "size": size, "box": box}


def caption_of(text, grid=4):
    tokens = text.split()
    return Caption(tokens, -0.1, np.full((len(tokens), grid, grid), 1 / grid ** 2))


def test_steering_trials_on_hand_made_cases(tiny_model):
    red = obj("circle", "red", "big", [4, 4, 30, 30])
    blue = obj("square", "blue", "small", [40, 40, 56, 56])
    other_red = obj("square", "red", "small", [40, 40, 56, 56])
    captions = [caption_of("a big red circle to the left of a small blue square"),
                caption_of("a big red circle and a small red square"),  # one colour only
                caption_of("a small red circle"),  # one object
                caption_of("a big green circle and a small blue square")]  # A is not named
    objects = [[red, blue], [red, other_red], [obj("circle", "red", "small", [4, 4, 20, 20])],
               [red, blue]]
    trials = steering_trials(tiny_model, captions, objects, image_size=64)
    assert [t.image for t in trials] == [0, 3]
    first, second = trials
    assert first.position == 2 and first.expected == "blue"
    assert list(first.guide.prefix) == ["a", "big"]
    expected_map = box_map(tiny_model.encoder.cell_centres(), [40 / 64, 40 / 64, 56 / 64, 1.0])
    np.testing.assert_array_equal(first.guide.attention[2], expected_map)
    # caption 3 names a green circle (no such object): A is the blue square, B the red circle
    assert second.position == 7 and second.expected == "red"


def test_steering_summary():
    assert steering_summary([True, False, True, True]) == {
        "steering": 0.75, "steering_chance": round(1 / len(COLORS), 4), "steering_trials": 4}
    assert steering_summary([])["steering"] is None


def test_steering_accuracy_on_bundled_weights(bundled):
    world = get_world("scenes-v2")  # the bundled model's
    scenes = [world.render_scene(scene_rng(2026, "test", i), 128) for i in range(30)]
    images = [s.image for s in scenes]
    with torch.no_grad():
        features = bundled.encode(images_to_batch(bundled, images))
        captions = decode(bundled, features, beam_size=1, max_len=world.max_words)
    said = steered_words(bundled, features, captions,
                         [[o.to_dict() for o in s.objects] for s in scenes])
    summary = steering_summary(said, len(world.colors))
    assert summary["steering_trials"] > 5 and summary["steering_chance"] == 1 / 8
    assert summary["steering"] >= 0.5  # 0.74 on 1,000 scenes (README); chance 0.125


def test_look_here_changes_the_colour_word(bundled):
    """Look at the blue square while saying the red circle's colour: the model says blue."""
    scene = compose(bundled, [RED_CIRCLE, BLUE_SQUARE])
    tokens = scene.caption.tokens
    position = tokens.index("red")
    centres = bundled.encoder.cell_centres()
    blue_box = scene.objects[1]["box_fraction"]
    for heat in (box_map(centres, blue_box), point_map(centres, 0.75, 0.75)):
        (steered,) = caption_images(bundled, [scene.image], beam_size=1, guide=Guide(
            prefix=tokens[:position], attention={position: heat}))
        assert steered.tokens[position] == "blue", steered.text
    (own,) = caption_images(bundled, [scene.image], beam_size=1, guide=Guide(
        prefix=tokens[:position], attention={position: scene.caption.attention[position]}))
    assert own.tokens == tokens


@pytest.mark.parametrize("world", ["scenes-v2", "scenes-v1"])  # its own, and the old one
def test_new_scene_gives_truth_and_pointing_per_word(bundled, world):
    scene = new_scene(bundled, 3, world=world)
    assert scene.image.size == (128, 128) and len(scene.references) == 5  # the model's size
    assert scene.objects and all(0 <= v <= 1 for o in scene.objects for v in o["box_fraction"])
    assert isinstance(scene.objects_correct, bool)
    assert scene.words and all(isinstance(w["hit"], bool) for w in scene.words)
    for word in scene.words:  # a colour or shape (maybe plural) of its objects, or their count
        assert scene.caption.tokens[word["index"]] == word["word"]
        named = scene.objects[word["object"]]
        assert word["word"] in (named["color"], named["shape"], named["shape"] + "s") or (
            word["word"] in ("two", "three") and len(word["objects"]) > 1)
    assert new_scene(bundled, 3, world=world).summary() == scene.summary()  # same seed
    assert new_scene(bundled, 4, world=world).summary() != scene.summary()
    lab = np.asarray(scene.image)
    draw = get_world(world).render_scene
    for seed, split in ((0, "train"), (2026, "test")):  # never a training or evaluation scene
        assert not np.array_equal(lab, np.asarray(draw(scene_rng(seed, split, 3), 128).image))
    with pytest.raises(ValueError, match="seed"):
        new_scene(bundled, -1)


def test_compose_renders_the_objects_asked_for(bundled):
    scene = compose(bundled, [RED_CIRCLE, BLUE_SQUARE])
    assert [(o["shape"], o["color"], o["size"]) for o in scene.objects] == [
        ("circle", "red", "big"), ("square", "blue", "small")]
    pixels = np.asarray(scene.image)
    for spec, o in zip((RED_CIRCLE, BLUE_SQUARE), scene.objects):
        x0, y0, x1, y1 = o["box"]
        assert abs((x0 + x1) / 2 / scene.image.width - spec["position"][0]) < 0.02
        assert abs((y0 + y1) / 2 / scene.image.height - spec["position"][1]) < 0.02
        assert tuple(pixels[(y0 + y1) // 2, (x0 + x1) // 2]) == COLORS[spec["color"]]
    assert scene.objects_correct and scene.caption.text == scene.summary()["caption"]
    # every colour and shape word of a named object is checked, against that object's box
    assert sorted((w["word"], w["object"]) for w in scene.words) == [
        ("blue", 1), ("circle", 0), ("red", 0), ("square", 1)]


@pytest.mark.parametrize("world, specs, message", [
    ("scenes-v1", [{**RED_CIRCLE, "shape": "star"}], "unknown shape 'star'"),
    ("scenes-v1", [{**RED_CIRCLE, "color": "pink"}], "unknown color 'pink'"),
    ("scenes-v2", [{**RED_CIRCLE, "shape": "octagon"}], "unknown shape 'octagon'"),
    ("scenes-v2", [{**RED_CIRCLE, "size": "huge"}], "unknown size"),
    ("scenes-v2", [RED_CIRCLE, {**BLUE_SQUARE, "position": (0.4, 0.4)}], "overlaps object 1"),
    ("scenes-v1", [RED_CIRCLE, BLUE_SQUARE, {**BLUE_SQUARE, "color": "green",
                                             "position": (0.75, 0.2)},
                   {**BLUE_SQUARE, "color": "yellow", "position": (0.2, 0.8)}],
     "1 to 3 objects"),
    ("scenes-v2", [{**BLUE_SQUARE, "size": "tiny", "position": (x, y)}
                   for x, y in ((.2, .2), (.5, .2), (.8, .2), (.2, .8), (.5, .8), (.8, .8))],
     "1 to 5 objects"),
    ("scenes-v2", [], "1 to 5 objects"),
    ("scenes-v2", [{**RED_CIRCLE, "position": (0.02, 0.5)}], "does not fit"),
    ("scenes-v2", [{**RED_CIRCLE, "position": "middle"}], "position must be"),
    ("scenes-v1", [RED_CIRCLE, {**RED_CIRCLE, "position": (0.72, 0.72)}], "never repeat"),
])
def test_compose_rejects_impossible_scenes(bundled, world, specs, message):
    with pytest.raises(ValueError, match=message):
        compose(bundled, specs, world=world)


def test_fresh_scenes_look_like_scenes_at_any_size():
    for i in range(100):
        image = render_scene(scene_rng(2026, "test", i), 64).image
        assert looks_like_scene(image).familiar, i
        if i % 10 == 0:
            assert looks_like_scene(image.resize((320, 320), Image.Resampling.BICUBIC)).familiar
            assert looks_like_scene(image.resize((40, 40), Image.Resampling.BILINEAR)).familiar


def test_photos_and_blank_images_are_flagged(bundled):
    from matplotlib import cbook

    from captioner.preprocess import load_image

    root = BUNDLED_WEIGHTS.parent
    photos = [load_image(root / "examples/photo-grace-hopper.jpg"),
              load_image(cbook._get_data_path("sample_data/Minduka_Present_Blue_Pack.png")),
              load_image(cbook._get_data_path("sample_data/logo2.png"))]
    for photo in photos:
        verdict = familiarity(photo, bundled)
        assert not verdict.familiar and "scene" in verdict.reason
    blank = Image.new("RGB", (64, 64), (140, 140, 140))
    assert not looks_like_scene(blank).familiar
    assert familiarity(load_image(root / "examples/scene-6-old-world.png"), bundled).familiar


def test_only_scenes_models_are_checked(bundled, make_model):
    assert trained_on_scenes(bundled) and trained_on_scenes(bundled.config)
    photo_model = make_model(vocab=[*SPECIALS, "a", "dog", "runs", "on", "grass"])
    assert not trained_on_scenes(photo_model)
    assert familiarity(Image.new("RGB", (8, 8)), photo_model) is None


def test_model_card_table_shows_steering():
    table = metrics_table({"beam1": {"objects_correct": 0.9, "steering": 0.99,
                                     "steering_chance": 0.2}, "beam3": {"objects_correct": 0.95}})
    assert "steering (greedy) (%)" in table and "chance (steering) (%)" in table
    assert "| beam 1 | 90 | 99 | 20 |" in table  # one 0-100 scale: fractions as percentages
