"""The familiarity check, one condition at a time: hand-made 64x64 images (the check's own size,
so no resampling blurs the counts) that fail exactly one condition, or sit exactly on a
threshold, and the reason the app shows for each."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from captioner.familiarity import (
    SCENE_WORDS,
    Familiarity,
    familiarity,
    looks_like_scene,
    trained_on_scenes,
    unfamiliar_warning,
)
from captioner.scenes import COLORS
from captioner.scenes.worlds import V1, V2

GREY = (128, 128, 128)
RED = COLORS["red"]
DARK = (10, 20, 5)  # neither a background tone nor near a palette colour
PASS = Familiarity(True, "plain background with flat coloured shapes, like the scenes the "
                         "model was trained on")


def picture(*parts: tuple[tuple[int, int, int], int]) -> Image.Image:
    """A 64x64 image made of `count` pixels of each colour, in order, the rest grey."""
    pixels = np.empty((64 * 64, 3), np.uint8)
    pixels[:] = GREY
    start = 0
    for color, count in parts:
        pixels[start:start + count] = color
        start += count
    return Image.fromarray(pixels.reshape(64, 64, 3))


def test_too_much_other_colour_is_reported_with_its_share():
    verdict = looks_like_scene(picture((RED, 300), (DARK, 451)))  # 451 / 4096 = 11 %
    assert verdict == Familiarity(False, "11% of the image is neither a plain background nor a "
                                         "flat shape colour: it does not look like a generated "
                                         "scene")
    assert looks_like_scene(picture((RED, 300), (DARK, 409))) == PASS  # 9.99 %


def test_too_little_background_is_reported_with_its_share():
    # 75 % red shape, no other colour: only the background condition fails
    verdict = looks_like_scene(picture((RED, 3072)))
    assert verdict == Familiarity(False, "only 25% of the image is plain grey background: "
                                         "generated scenes are mostly background")
    assert looks_like_scene(picture((RED, 2826))) == PASS  # 31 % background


def test_background_of_two_tones_is_not_one_plain_background():
    light, dark = (150, 150, 150), (100, 100, 100)  # std 25 > 15
    verdict = looks_like_scene(picture((RED, 200), (light, 1948), (dark, 1948)))
    assert verdict == Familiarity(False, "the background is not one plain tone, as in "
                                         "generated scenes")
    # luminance std exactly 15 (halves at 100 and 130) is still one tone
    assert looks_like_scene(picture((RED, 200), ((130,) * 3, 1948), ((100,) * 3, 1948))) == PASS


def test_plain_background_without_a_shape_is_reported():
    assert looks_like_scene(picture()) == Familiarity(
        False, "there is no shape in a scene colour on the background")
    assert looks_like_scene(picture((RED, 41))) == PASS  # 1.0 % shape is enough


@pytest.mark.parametrize("tone", [(70, 70, 70), (225, 225, 225), (113, 128, 143)],
                         ids=["darkest", "lightest", "most-tinted"])
def test_background_limits_are_inclusive(tone):
    # every pixel but the shape sits exactly on one background limit
    pixels = np.empty((4096, 3), np.uint8)
    pixels[:] = tone
    pixels[:200] = RED
    assert looks_like_scene(Image.fromarray(pixels.reshape(64, 64, 3))) == PASS


def test_palette_distance_limit_is_inclusive():
    edge = (RED[0], RED[1], RED[2] + 40)  # exactly 40 from red, saturated: a shape colour
    assert looks_like_scene(picture((edge, 200))) == PASS


def test_an_rgba_scene_is_judged_on_its_colours():
    rgba = picture((RED, 300)).convert("RGBA")
    assert looks_like_scene(rgba) == PASS


def test_bigger_images_are_box_averaged_to_the_check_size():
    # isolated shape pixels, upscaled 2x by repetition: a box filter gets the scene back
    # exactly; a smoother filter would blur the shape pixels into colours of neither kind
    pixels = np.full((64, 64, 3), 128, np.uint8)
    pixels[::4, ::4] = RED
    pixels[2::4, 2::4] = RED
    image = Image.fromarray(pixels).resize((128, 128), Image.Resampling.NEAREST)
    assert looks_like_scene(image) == PASS


def model_of(world: str, words=("a", "red", "circle")):
    """What the check reads of a model: its config's world and vocabulary."""
    return SimpleNamespace(config=SimpleNamespace(world=world, vocab=["<pad>", *words]),
                           vocab=["<pad>", *words])


ORANGE_SCENE = picture((V2.colors["orange"], 200))  # a colour scenes-v2 has and scenes-v1 lacks


def test_each_model_is_checked_against_its_own_worlds_palette():
    assert familiarity(ORANGE_SCENE, model_of("scenes-v2")) == PASS
    assert not familiarity(ORANGE_SCENE, model_of("scenes-v1")).familiar
    assert familiarity(ORANGE_SCENE, model_of("", words=("a", "dog"))) is None  # not a scene model


def test_the_warning_names_the_reason_and_only_for_an_unfamiliar_image():
    reason = looks_like_scene(ORANGE_SCENE, V1).reason
    assert unfamiliar_warning(ORANGE_SCENE, model_of("scenes-v1")) == (
        "This model was trained only on generated scenes of coloured shapes, and this image "
        f"does not look like one ({reason}): the caption is not meaningful.")
    assert unfamiliar_warning(ORANGE_SCENE, model_of("scenes-v2")) is None
    assert unfamiliar_warning(ORANGE_SCENE, model_of("", words=("a", "dog"))) is None


def test_a_vocabulary_of_every_scene_word_is_a_scenes_model():
    assert trained_on_scenes(SimpleNamespace(vocab=sorted(SCENE_WORDS)))
    assert not trained_on_scenes(SimpleNamespace(vocab=[*sorted(SCENE_WORDS), "dog"]))
