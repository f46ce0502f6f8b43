""""Why this word?" (Demo.why) and the soft <-> hard switch, without a browser, on the bundled
models (the default soft one and weights/hard/) and a generated scene with a small red circle
left of a big green one, or a crowded scenes-v2 scene."""

import numpy as np
import pytest
import torch

from captioner.decoding import images_to_batch
from captioner.demo import Demo
from captioner.demo.link import open_link, parse_link
from captioner.demo.why import hard_companion
from captioner.faithfulness import (
    attended_cells,
    caption_ids,
    gradcam,
    image_channels,
    removed,
    scored_rows,
)
from captioner.hub import BUNDLED_WEIGHTS
from captioner.preprocess import ImageError
from captioner.scenes import render_scene, v2
from captioner.scenes.captions import ALL_COLORS

HARD = BUNDLED_WEIGHTS / "hard"
pytestmark = pytest.mark.skipif(not (HARD / "model.safetensors").is_file(),
                                reason="no bundled hard-attention model")


@pytest.fixture(scope="module")
def scene():
    return render_scene(np.random.default_rng(20261125), 256)


@pytest.fixture(scope="module")
def demo() -> Demo:
    soft = Demo.load(BUNDLED_WEIGHTS, device="cpu")
    soft.pair(Demo.load(HARD, device="cpu"))
    return soft


@pytest.fixture(scope="module")
def crowded():
    """Five objects, some of whose colour words the bundled model is unsure of (a sure word's
    Grad-CAM is blank, and removing any cells leaves its probability at 1)."""
    return v2.render_scene(np.random.default_rng(20261130), 128)


def test_why_gives_the_words_three_maps_and_the_drop_without_its_attended_cells(demo, crowded):
    scene = crowded
    result = demo.caption(scene.image, 3, 30)
    colours = [i + 1 for i, t in enumerate(result.tokens) if t in ALL_COLORS]
    word = min(colours, key=lambda i: demo.why(scene.image, i, 3, 30)["probability"])
    why = demo.why(scene.image, word, 3, 30)
    grid = demo.model.config.grid_size
    assert (why["word"], why["token"], why["model"]) == (word, result.tokens[word - 1], "soft")
    assert why["caption"] == result.text and why["grid"] == grid
    # the attention map is the caption's own for that word (not word+1, not word-1)
    attention = np.asarray(why["attention"])
    np.testing.assert_allclose(attention, result.attention[word - 1].ravel(), atol=1e-4)
    assert np.abs(attention - result.attention[word].ravel()).max() > 0.01

    # recomputed here from the faithfulness functions: Grad-CAM of this word, and p(word)
    # with exactly the attended cells (half the attention) replaced by the background
    model = demo.model
    features = model.encode(images_to_batch(model, [scene.image]))
    ids = caption_ids(model, [result.tokens], features.device)
    cam = gradcam(model, features, ids, torch.tensor([word - 1])).numpy().ravel()
    np.testing.assert_allclose(why["gradcam"], cam, atol=1e-4)
    assert np.abs(np.asarray(why["gradcam"]) - attention).max() > 1e-3  # not the attention
    background = features[0][:, image_channels(model)].mean(dim=0)
    attended = attended_cells(result.attention[word - 1].ravel())
    assert why["attended"] == attended.tolist() and 0 < attended.sum() < grid * grid

    def p_without(cells: np.ndarray) -> float:
        rows = removed(model, features, torch.from_numpy(cells).unsqueeze(0), background)
        return float(scored_rows(model, rows, ids)[0, word - 1].exp())

    assert why["probability_without_attended"] == pytest.approx(p_without(attended), abs=1e-5)
    # asymmetric: removing as many *other* cells gives another probability
    others = np.zeros_like(attended)
    others[np.flatnonzero(~attended)[:attended.sum()]] = True
    assert abs(p_without(others) - why["probability_without_attended"]) > 1e-4
    assert why["drop"] == pytest.approx(why["probability"] - why["probability_without_attended"],
                                        abs=1e-5)
    # occlusion: one value per cell, and the drop of log p(word) when that cell alone goes
    cell = int(np.argmax(np.abs(why["occlusion"])))
    one = np.zeros(grid * grid, dtype=bool)
    one[cell] = True
    expected = np.log(why["probability"]) - np.log(p_without(one))
    assert why["occlusion"][cell] == pytest.approx(expected, abs=1e-3)
    assert set(why["notes"]) == {"attention", "gradcam", "occlusion"}


def test_why_follows_the_forced_words(demo, scene):
    """With a prefix the caption explained is the steered one, made again on the server."""
    forced = demo.caption(scene.image, 1, 30, prefix="a small green").tokens
    why = demo.why(scene.image, 3, 1, 30, prefix="a small green")
    assert why["caption"] == " ".join(forced) and why["token"] == "green"


@pytest.mark.parametrize("word", [0, 40, "2; rm", 2.5, None])
def test_a_bad_word_number_is_one_clear_message(demo, scene, word):
    words = len(demo.caption(scene.image, 3, 30).tokens)
    with pytest.raises(ValueError, match=f"^word must be a whole number from 1 to {words}, "):
        demo.why(scene.image, word, 3, 30)


def test_why_opens_no_file_the_client_names(demo, tmp_path):
    secret = tmp_path / "secret.png"
    render_scene(np.random.default_rng(1), 64).image.save(secret)
    with pytest.raises(ImageError, match="secret.png"):
        demo.why({"path": str(secret)}, 1, 3, 30)


def test_why_view_opens_at_the_word_with_its_explanation(demo, scene):
    view = demo.why_view(scene.image, 2, 3, 30)
    assert view.explorer["word"] == 2 and view.explorer["why"]["word"] == 2
    assert view.explorer["why"]["caption"] == view.caption


def test_the_hard_model_is_the_other_attention_kind(demo, scene):
    soft = demo.api(scene.image, 3, 30)
    hard = demo.using("hard").api(scene.image, 3, 30)
    assert (soft["attention_kind"], hard["attention_kind"]) == ("soft", "hard")
    assert demo.kinds == ["soft", "hard"] and demo.using("") is demo
    maps = np.asarray(soft["attention"][:2]), np.asarray(hard["attention"][:2])
    # another model's maps (the bundled pair: another world and grid, 16 x 16 and 8 x 8)
    assert maps[0].shape != maps[1].shape or not np.allclose(*maps)
    why = demo.using("hard").why(scene.image, 1, 3, 30)
    assert why["model"] == "hard" and why["caption"] == hard["caption"]
    with pytest.raises(ValueError, match="^attention must be one of soft, hard, got 'gumbel'"):
        demo.using("gumbel")
    with pytest.raises(ValueError, match="both models have soft attention"):
        demo.pair(demo)


def test_a_link_to_the_hard_model_keeps_its_settings_and_word(demo, scene, tmp_path):
    example = tmp_path / "scene.png"
    scene.image.save(example)
    demo.use_examples([str(example)])
    link = parse_link({"example": "0", "model": "hard", "beam": "2", "len": "12", "word": "3"})
    assert link["model"] == "hard"
    view = open_link(demo, [str(example)], link).view
    expected = demo.using("hard").view(str(example), 2, 12)
    assert view.explorer["attention_kind"] == "hard" and view.caption == expected.caption
    assert (view.explorer["beam_size"], view.explorer["max_len"], view.explorer["word"]) == (
        2, 12, 3)
    assert view.explorer["kinds"] == ["soft", "hard"]
    with pytest.raises(ValueError, match="attention must be one of"):
        open_link(demo, [str(example)], parse_link({"model": "gumbel"}))


def test_a_lab_scene_switches_with_its_truth(demo):
    """The switch rebuilds a lab scene from its number: the same scene, the hard model's
    caption, and the lab's verdict on that caption."""
    soft = open_link(demo, [], parse_link({"scene": "7", "beam": "1"}))
    hard = open_link(demo, [], parse_link({"scene": "7", "beam": "1", "model": "hard"}))
    assert hard.view.explorer["attention_kind"] == "hard"
    assert hard.view.explorer["lab"]["objects"] == soft.view.explorer["lab"]["objects"]
    _, expected, truth = demo.using("hard").new_scene(7, 1)
    assert hard.view.caption == expected.caption and hard.truth == truth
    assert "Ground truth:" in truth


def test_the_hard_companion_is_offered_with_the_bundled_weights_only(tmp_path):
    assert hard_companion(BUNDLED_WEIGHTS) == HARD
    assert hard_companion(str(BUNDLED_WEIGHTS) + "/") == HARD
    assert hard_companion(tmp_path) is None
    assert hard_companion("owner/repo") is None
