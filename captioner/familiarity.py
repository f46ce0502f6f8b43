"""Is this image like the ones a scenes model was trained on? A scenes model describes any
image as coloured shapes, so the app must say when an image is not a generated scene.

Generated scenes (captioner.scenes) are a desaturated, low-contrast background (a gentle
gradient; in scenes-v2 also blotchy noise or faint stripes) and flat shapes in the world's
palette colours; only the shapes' antialiased edges are neither. The check counts, on a
small copy of the image, the pixels that are neither background-like nor a palette colour:
photos, drawings and logos are mostly such pixels. Colour statistics on a downscaled copy do
not depend on the image size, so an upscaled or re-saved scene still passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from captioner.scenes.worlds import ALL_WORDS, V1, World, world_of
from captioner.vocab import SPECIALS

# Every word the captions of any scene world use (see scenes.worlds).
SCENE_WORDS = frozenset({*ALL_WORDS, *SPECIALS})
CHECK_SIZE = 64  # scenes-v1's own size; a box filter averages bigger images down to it
BACKGROUND_MAX_SATURATION = 30  # max - min channel; backgrounds are grey with a +-12 tint
BACKGROUND_LUMINANCE = (70, 225)  # base tone 105-185, plus tint, gradient and noise
PALETTE_DISTANCE = 40.0  # RGB distance to the nearest palette colour
MAX_OTHER = 0.10  # a scene's antialiased edges stay well below (benchmarks/familiarity.py)
MIN_BACKGROUND = 0.30  # three big shapes still leave about half the image background


@dataclass
class Familiarity:
    """Whether an image looks like a generated scene, and why (one short sentence)."""

    familiar: bool
    reason: str


def trained_on_scenes(model) -> bool:
    """True for a model (or its config) whose vocabulary is the scenes captions' words."""
    vocab = model.vocab if isinstance(model.vocab, list) else model.vocab.words
    return set(vocab) <= SCENE_WORDS


def looks_like_scene(image: Image.Image, world: World = V1) -> Familiarity:
    """Colour statistics of a 64x64 copy against what every generated scene of `world`
    shows: its palette, and its backgrounds' largest luminance spread."""
    small = image.convert("RGB").resize((CHECK_SIZE, CHECK_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float64).reshape(-1, 3)
    saturation = pixels.max(axis=1) - pixels.min(axis=1)
    luminance = pixels.mean(axis=1)
    background = ((saturation <= BACKGROUND_MAX_SATURATION)
                  & (luminance >= BACKGROUND_LUMINANCE[0])
                  & (luminance <= BACKGROUND_LUMINANCE[1]))
    palette = np.array(list(world.colors.values()), dtype=np.float64)
    distance = np.linalg.norm(pixels[:, None, :] - palette[None], axis=2).min(axis=1)
    coloured = (distance <= PALETTE_DISTANCE) & ~background
    other = 1 - background.mean() - coloured.mean()
    if other > MAX_OTHER:
        return Familiarity(False, f"{other:.0%} of the image is neither a plain background nor "
                                  "a flat shape colour: it does not look like a generated scene")
    if background.mean() < MIN_BACKGROUND:
        return Familiarity(False, f"only {background.mean():.0%} of the image is plain grey "
                                  "background: generated scenes are mostly background")
    spread = luminance[background].std()
    if spread > world.background_max_std:
        return Familiarity(False, "the background is not one plain tone, as in generated "
                                  "scenes")
    if coloured.mean() < world.min_palette:
        return Familiarity(False, "there is no shape in a scene colour on the background")
    return Familiarity(True, "plain background with flat coloured shapes, like the scenes "
                             "the model was trained on")


def familiarity(image: Image.Image, model) -> Familiarity | None:
    """For a scenes model, whether `image` is like its training data (the world its config
    names); None for other models (a photo model has no such narrow domain to check)."""
    world = world_of(model)
    return looks_like_scene(image, world) if world is not None else None


def unfamiliar_warning(image: Image.Image, model) -> str | None:
    """For a scenes model shown an image unlike its training data: what to say beside the
    caption (None when the image looks like a generated scene, or for other models)."""
    verdict = familiarity(image, model)
    if verdict is None or verdict.familiar:
        return None
    return ("This model was trained only on generated scenes of coloured shapes, and this "
            f"image does not look like one ({verdict.reason}): the caption is not meaningful.")

