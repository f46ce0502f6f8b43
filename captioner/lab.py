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
from captioner.scenes import (
    Scene,
    caption_correctness,
    draw_background,
    draw_scene,
    objects_from_specs,
    render_scene,
    scene_rng,
)

LAB_SEED = 10_000
MAX_LEN = 30  # words: the longest true caption has 27, so the model's own is never cut


@dataclass
class LabScene:
    """A scene, the model's caption of it, and how that caption compares with the truth."""

    image: Image.Image
    caption: Caption
    objects: list[dict]  # shape, color, size, box (pixels) and box_fraction (x0, y0, x1, y1)
    references: list[str]  # five true captions
    objects_correct: bool  # the caption names exactly the scene's objects
    relations_correct: bool | None  # None when the caption states no relation
    words: list[dict]  # per colour/shape word naming a scene object: index, word, object, hit

    def summary(self) -> dict:
        """Everything but the image and attention maps, as JSON-able values."""
        return {"caption": self.caption.text, "tokens": self.caption.tokens,
                "objects": self.objects, "references": self.references,
                "objects_correct": self.objects_correct,
                "relations_correct": self.relations_correct, "words": self.words}


def _check(model: Captioner, scene: Scene, beam_size: int, top_k: int,
           max_len: int) -> LabScene:
    """Caption a scene and score it, with evaluation's own checks (strict pointing: the
    attention peak inside the object's box). A caption cut at `max_len` is never right."""
    caption = caption_images(model, [scene.image], beam_size=beam_size, top_k=top_k,
                             max_len=max_len)[0]
    objects = [o.to_dict() for o in scene.objects]
    size = scene.image.width
    for obj in objects:
        obj["box_fraction"] = [v / size for v in obj["box"]]
    result = caption_correctness(caption.tokens, objects)
    words = [{"index": w["word_index"], "word": caption.tokens[w["word_index"]],
              "object": w["object"], "hit": w["hit"]}
             for w in pointing_words(caption, objects, size, size,
                                     model.encoder.cell_centres(), tolerance=0)]
    whole = not caption.truncated
    return LabScene(scene.image, caption, objects, scene.captions,
                    result["objects_correct"] and whole,
                    result["relations_correct"] if whole else False, words)


def new_scene(model: Captioner, seed: int, *, beam_size: int = 1, top_k: int = 0,
              max_len: int = MAX_LEN) -> LabScene:
    """Lab scene number `seed` (any int >= 0), drawn like the dataset at the model's size;
    `top_k` alternatives per word, as in `caption_images`."""
    if seed < 0:
        raise ValueError(f"seed must be 0 or more, got {seed}")
    return _check(model, render_scene(scene_rng(LAB_SEED, "test", seed),
                                      model.config.image_size), beam_size, top_k, max_len)


def compose(model: Captioner, objects: Sequence[Mapping], *, seed: int = 0,
            beam_size: int = 1, top_k: int = 0, max_len: int = MAX_LEN) -> LabScene:
    """A hand-made scene: up to three objects, each {shape, color, size, position (x, y
    fractions)}, on a background drawn from lab seed `seed`. Bad specs raise ValueError."""
    size = model.config.image_size
    placed = objects_from_specs(objects, size)
    background = draw_background(np.random.default_rng([LAB_SEED, seed]), size)
    return _check(model, draw_scene(placed, background), beam_size, top_k, max_len)
