"""Procedural "scenes": coloured shapes on muted backgrounds, with exactly checkable captions.

The package can generate these datasets anywhere (no network) and, because every image comes
with the list of objects it shows, a model's caption can be *verified* (right objects, right
counts, true spatial relations?) and its attention checked against the object boxes (the
"pointing game").

Two worlds (``scenes.worlds``): ``scenes-v1`` (alias ``scenes``), what the bundled model was
trained on, and the richer ``scenes-v2``. The names imported from here directly (SHAPES,
COLORS, SIZES, render_scene, ...) are scenes-v1's, as they always were; parsing and checking
captions serves both worlds.
"""

from captioner.scenes.captions import (
    Mention,
    ParsedCaption,
    caption_correctness,
    caption_mistakes,
    match_groups,
    match_mentions,
    parse_caption,
)
from captioner.scenes.dataset import SPLIT_IDS, generate_scenes, scene_rng
from captioner.scenes.objects import (
    INVERSE_RELATION,
    RELATIONS,
    Scene,
    SceneObject,
    relation_between,
)
from captioner.scenes.v1 import (
    COLORS,
    MAX_OBJECTS,
    SHAPES,
    SIZE_RANGES,
    SIZES,
    draw_background,
    draw_scene,
    make_captions,
    objects_from_specs,
    render_scene,
)
from captioner.scenes.worlds import WORLDS, World, get_world, is_world, world_of

__all__ = [
    "COLORS",
    "INVERSE_RELATION",
    "MAX_OBJECTS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SIZE_RANGES",
    "SPLIT_IDS",
    "WORLDS",
    "Mention",
    "ParsedCaption",
    "Scene",
    "SceneObject",
    "World",
    "caption_correctness",
    "caption_mistakes",
    "draw_background",
    "draw_scene",
    "generate_scenes",
    "get_world",
    "is_world",
    "make_captions",
    "match_groups",
    "match_mentions",
    "objects_from_specs",
    "parse_caption",
    "relation_between",
    "render_scene",
    "scene_rng",
    "world_of",
]
