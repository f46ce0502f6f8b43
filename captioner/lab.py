"""Scene lab: make a scene (fresh or hand-made), caption it and check the caption against the
truth — are the objects right, and did attention land on each object it names?

Plain Python for the app (no gradio): everything but the image and the Caption is JSON-able.
Fresh lab scenes come from `scene_rng(LAB_SEED, "test", n)`: training used seed 0 and README's
evaluate uses 2026, so a lab scene is never one the model was trained or scored on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from captioner.decoding import Caption, caption_images
from captioner.evaluation import pointing_words
from captioner.model import Captioner
from captioner.scenes import Scene, World, caption_correctness, get_world, scene_rng, world_of

LAB_SEED = 10_000
MAX_LEN = 30  # steps: scenes-v1's longest true caption has 27 words, so it is never cut


# The composer's starting objects per world, one row per object the world allows: they fit
# and do not overlap (a test composes them). scenes-v2's show counting and distractors: two
# small red circles beside a big red square and a small blue circle.
COMPOSE_DEFAULTS = {
    "scenes-v1": [("circle", "red", "big", 0.25, 0.3), ("square", "green", "small", 0.75, 0.3),
                  ("none", "blue", "small", 0.5, 0.75)],
    "scenes-v2": [("circle", "red", "small", 0.25, 0.25), ("circle", "red", "small", 0.75, 0.25),
                  ("square", "red", "big", 0.3, 0.7), ("circle", "blue", "small", 0.75, 0.75),
                  ("none", "blue", "tiny", 0.5, 0.25)],
}
POSITION_RANGE = (0.25, 0.75)  # a big object (under half the side wide) fits anywhere in it


def lab_world(model: Captioner, world: str | None = None) -> World:
    """The world lab scenes come from: `world` when given, else the model's own (scenes-v1
    for a model of no scene world)."""
    if world is not None:
        return get_world(world)
    return world_of(model) or get_world("scenes-v1")


def lab_options(model: Captioner, world: str | None = None) -> dict:
    """What Compose may put in a scene of the lab's world: shapes, colours, sizes, the most
    objects, and the image size (JSON-able, for the app's form)."""
    return lab_world(model, world).options()


@dataclass
class LabScene:
    """A scene, the model's caption of it, and how that caption compares with the truth."""

    image: Image.Image
    caption: Caption
    objects: list[dict]  # shape, color, size, box (pixels), box_fraction (x0, y0, x1, y1),
    # and in worlds with overlaps, visible (the share not covered by later objects)
    references: list[str]  # five true captions
    objects_correct: bool  # the caption names exactly the scene's objects
    relations_correct: bool | None  # None when the caption states no relation
    # per count/colour/shape word naming scene objects: index, word, object (the first),
    # objects (all a counted mention names: a count word points at any of them), hit
    words: list[dict]

    def summary(self) -> dict:
        """Everything but the image and attention maps, as JSON-able values."""
        return {"caption": self.caption.text, "tokens": self.caption.tokens,
                "objects": self.objects, "references": self.references,
                "objects_correct": self.objects_correct,
                "relations_correct": self.relations_correct, "words": self.words}


def _check(model: Captioner, scene: Scene, beam_size: int, top_k: int, world: World,
           max_len: int | None) -> LabScene:
    """Caption a scene and score it, with evaluation's own checks (strict pointing: the
    attention peak inside the object's box, or any of a counted mention's boxes). A caption
    cut at `max_len` (default: room for the world's longest caption) is never right."""
    if max_len is None:
        max_len = max(MAX_LEN, world.max_words + 1)
    caption = caption_images(model, [scene.image], beam_size=beam_size, top_k=top_k,
                             max_len=max_len)[0]
    objects = [o.to_dict() for o in scene.objects]
    size = scene.image.width
    for obj in objects:
        obj["box_fraction"] = [v / size for v in obj["box"]]
    result = caption_correctness(caption.tokens, objects)
    words = [{"index": w["word_index"], "word": caption.tokens[w["word_index"]],
              "object": w["object"], "objects": w["objects"], "hit": w["hit"]}
             for w in pointing_words(caption, objects, size, size,
                                     model.encoder.cell_centres(), tolerance=0)]
    whole = not caption.truncated
    return LabScene(scene.image, caption, objects, scene.captions,
                    result["objects_correct"] and whole,
                    result["relations_correct"] if whole else False, words)


def new_scene(model: Captioner, seed: int, *, beam_size: int = 1, top_k: int = 0,
              world: str | None = None, max_len: int | None = None,
              size: int | None = None) -> LabScene:
    """Lab scene number `seed` (any int >= 0), drawn like the dataset of `world` (default:
    the model's own) at `size` pixels (default: the model's size, where the world allows);
    `top_k` alternatives per word, as in `caption_images`. The same seed, world and size
    give the same scene."""
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    spec = lab_world(model, world)
    scene = spec.render_scene(scene_rng(LAB_SEED, "test", seed),
                              size or spec.size_for(model.config.image_size))
    return _check(model, scene, beam_size, top_k, spec, max_len)


def compose(model: Captioner, objects: Sequence[Mapping], *, seed: int = 0,
            beam_size: int = 1, top_k: int = 0, world: str | None = None,
            max_len: int | None = None, size: int | None = None) -> LabScene:
    """A hand-made scene of `world` (default: the model's own): up to its most objects
    (three in scenes-v1, five in scenes-v2, where identical ones are counted), each {shape,
    color, size, position (x, y fractions)}, on a background drawn from lab seed `seed`. Bad
    specs raise ValueError. `size` as in `new_scene`."""
    spec = lab_world(model, world)
    size = size or spec.size_for(model.config.image_size)
    placed = spec.objects_from_specs(objects, size)
    background = spec.draw_background(np.random.default_rng([LAB_SEED, seed]), size)
    return _check(model, spec.draw_scene(placed, background), beam_size, top_k, spec, max_len)
