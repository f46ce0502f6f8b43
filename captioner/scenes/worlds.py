"""The scene worlds by name, and which one a model was trained on.

``scenes`` (and ``scenes-v1``) is the world of the bundled model; ``scenes-v2`` the richer one.
A model's config records its world (``world``); configs written before there was a choice
have none and, when their vocabulary is scenes words, mean scenes-v1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from captioner.scenes import v1, v2
from captioner.scenes.captions import ALL_COLORS, ALL_SHAPES, ALL_SIZES, COUNT_WORDS, PLURALS
from captioner.scenes.objects import RELATIONS


@dataclass(frozen=True)
class World:
    """What a scenes model's data looks like, and how to make more of it."""

    name: str
    module: object  # scenes.v1 or scenes.v2: render_scene, draw_background, draw_scene, ...
    image_size: int  # the size its model sees
    min_image_size: int  # the smallest its generator draws
    grid: int  # the encoder grid its preset trains
    max_words: int  # the longest caption it writes
    words: frozenset[str]  # every word of its captions
    held_out_pairs: tuple[tuple[str, str], ...] = ()
    # familiarity (64-px copy): a background's largest luminance spread, and the least share
    # of palette-coloured pixels (one tiny star of scenes-v2 is about 0.8 %)
    background_max_std: float = 15.0
    min_palette: float = 0.01

    @property
    def shapes(self) -> tuple[str, ...]:
        return self.module.SHAPES

    @property
    def colors(self) -> dict[str, tuple[int, int, int]]:
        return self.module.COLORS

    @property
    def sizes(self) -> tuple[str, ...]:
        return self.module.SIZES

    @property
    def max_objects(self) -> int:
        return self.module.MAX_OBJECTS

    @property
    def render_scene(self) -> Callable:
        return self.module.render_scene

    @property
    def draw_background(self) -> Callable:
        return self.module.draw_background

    @property
    def draw_scene(self) -> Callable:
        return self.module.draw_scene

    @property
    def objects_from_specs(self) -> Callable:
        return self.module.objects_from_specs

    @property
    def folder_prefix(self) -> str:
        """How its generated datasets' folders start ("scenes" for scenes-v1, as always)."""
        return "scenes" if self.name == "scenes-v1" else self.name

    def size_for(self, model_size: int) -> int:
        """The size to draw scenes at for a model seeing `model_size` pixels: that size, or
        the world's own where its generator cannot draw so small."""
        return model_size if model_size >= self.min_image_size else self.image_size

    def options(self) -> dict:
        """What a scene may hold, for a form that composes one (JSON-able)."""
        return {"world": self.name, "shapes": list(self.shapes), "colors": list(self.colors),
                "sizes": list(self.sizes), "max_objects": self.max_objects,
                "image_size": self.image_size}


_RELATION_WORDS = " ".join(RELATIONS).split()
V1 = World("scenes-v1", v1, v1.IMAGE_SIZE, v1.MIN_IMAGE_SIZE, 8, 20, frozenset(
    {*v1.SHAPES, *v1.COLORS, *v1.SIZES, *_RELATION_WORDS, "a", "an", "the", "is", "and",
     "there", "image", "of", "on", "plain", "background", "single"}))
V2 = World("scenes-v2", v2, v2.IMAGE_SIZE, v2.MIN_IMAGE_SIZE, v2.GRID, v2.MAX_WORDS, frozenset(
    {*v2.SHAPES, *(f"{s}s" for s in v2.SHAPES), *v2.COLORS, *v2.SIZES, *_RELATION_WORDS,
     "two", "three", "a", "an", "the", "is", "are", "and", "there", "image", "of", "in", "on",
     "background"}), held_out_pairs=v2.HELD_OUT_PAIRS, background_max_std=18.0,
    min_palette=0.004)
WORLDS: dict[str, World] = {"scenes": V1, "scenes-v1": V1, "scenes-v2": V2}
ALL_WORDS = frozenset().union(*(w.words for w in WORLDS.values()))
assert {*V2.shapes} <= {*ALL_SHAPES} and {*V2.colors} <= {*ALL_COLORS}
assert {*V2.sizes} <= {*ALL_SIZES} and set(PLURALS) >= {f"{s}s" for s in V2.shapes}
assert {"two", "three"} <= set(COUNT_WORDS)


def get_world(name: str) -> World:
    """The world called `name` (scenes, scenes-v1, scenes-v2); ValueError naming the choices."""
    try:
        return WORLDS[name]
    except KeyError:
        raise ValueError(f"unknown scene world {name!r}; use one of {sorted(WORLDS)}") from None


def is_world(name: str | None) -> bool:
    return name in WORLDS


def world_of(model) -> World | None:
    """The world a model (or its config) was trained on: its config's ``world``; for a config
    without one, scenes-v1 when its vocabulary is scenes-v1 words; None for other models."""
    config = getattr(model, "config", model)
    name = getattr(config, "world", "") or ""
    if name:
        return get_world(name)
    vocab = config.vocab if isinstance(config.vocab, list) else config.vocab.words
    from captioner.vocab import SPECIALS

    return V1 if set(vocab) <= V1.words | set(SPECIALS) else None
