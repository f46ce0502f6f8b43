"""scenes-v1, the world the bundled model was trained on: 64-px scenes of one to three
distinct shapes (3 shapes, 5 colours, 2 sizes) apart from each other on a muted background.

Kept exactly as it was (the same seed gives the same bytes), so the bundled weights keep
their evaluation. The first of the five captions is the canonical one: objects ordered left to
right, chained by relations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from captioner.scenes.objects import (
    Scene,
    SceneObject,
    boxes_clear,
    paint,
    place_specs,
    relation_between,
    unambiguous,
)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Saturated colours that stay distinct from each other and from the (desaturated) backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 175, 55),
    "blue": (40, 85, 235),
    "yellow": (240, 215, 25),
    "purple": (155, 55, 195),
}
SIZES: tuple[str, ...] = ("small", "big")
# Object widths as fractions of the image size: at 64 px "small" is 16-18 px and "big" 26-30 px,
# so every object spans at least two cells of an 8x8 feature grid.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.25, 0.285), "big": (0.40, 0.47)}
MAX_OBJECTS = 3
IMAGE_SIZE = 64
MIN_IMAGE_SIZE = 32


def _sample_objects(rng: np.random.Generator, image_size: int) -> list[SceneObject]:
    """Random distinct objects at random non-overlapping, unambiguously related positions."""
    margin = max(2, image_size // 32)
    border = max(1, image_size // 64)
    min_gap = image_size / 16
    while True:
        count = int(rng.integers(1, MAX_OBJECTS + 1))
        kinds: set[tuple[str, str, str]] = set()
        while len(kinds) < count:
            kinds.add(
                (
                    SIZES[rng.integers(len(SIZES))],
                    list(COLORS)[rng.integers(len(COLORS))],
                    SHAPES[rng.integers(len(SHAPES))],
                )
            )
        objects: list[SceneObject] = []
        for size, color, shape in sorted(kinds):
            lo, hi = SIZE_RANGES[size]
            width = int(round(image_size * rng.uniform(lo, hi)))
            for _ in range(100):
                x0 = int(rng.integers(border, image_size - border - width + 1))
                y0 = int(rng.integers(border, image_size - border - width + 1))
                box = [x0, y0, x0 + width, y0 + width]
                if all(
                    boxes_clear(box, o.box, margin) and unambiguous(box, o.box, min_gap)
                    for o in objects
                ):
                    objects.append(SceneObject(shape, color, size, box))
                    break
            else:
                break  # no room: start the scene again
        if len(objects) == count:
            # Drawing/listing order is random rather than sorted by kind.
            return [objects[i] for i in rng.permutation(count)]


def draw_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A desaturated base tone with a gentle linear gradient and light noise."""
    base = rng.uniform(105, 185)
    tint = rng.uniform(-12, 12, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    amplitude = rng.uniform(0, 18)
    coords = (np.arange(image_size) - (image_size - 1) / 2) / image_size
    ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    img = base + tint[None, None, :] + amplitude * ramp[:, :, None]
    img = img + rng.normal(0, rng.uniform(0, 5), size=(image_size, image_size, 1))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _np(obj: SceneObject) -> str:
    return f"a {obj.description}"


def _the(obj: SceneObject) -> str:
    return f"the {obj.description}"


def _chain(objs: Sequence[SceneObject]) -> str:
    parts = [_np(objs[0])]
    for prev, nxt in zip(objs, objs[1:], strict=False):
        parts += [relation_between(prev, nxt), _np(nxt)]
    return " ".join(parts)


def make_captions(objects: Sequence[SceneObject]) -> list[str]:
    """Five true, differently worded captions; the first (canonical) orders objects left→right."""
    objs = sorted(objects, key=lambda o: (o.center[0], o.center[1]))
    if len(objs) == 1:
        (a,) = objs
        return [
            _np(a),
            f"there is {_np(a)}",
            f"a single {a.description}",
            f"an image of {_np(a)}",
            f"{_np(a)} on a plain background",
        ]
    if len(objs) == 2:
        a, b = objs
        return [
            _chain([a, b]),
            _chain([b, a]),
            f"there is {_np(a)} and {_np(b)}",
            f"{_np(b)} and {_np(a)}",
            f"{_np(a)} is {relation_between(a, b)} {_np(b)}",
        ]
    if len(objs) == 3:
        a, b, c = objs
        return [
            _chain([a, b, c]),
            _chain([c, b, a]),
            f"there is {_np(a)} {_np(b)} and {_np(c)}",
            f"{_np(a)} is {relation_between(a, b)} {_np(b)} and "
            f"{_np(c)} is {relation_between(c, b)} {_the(b)}",
            f"{_chain([b, c])} and {_np(a)}",
        ]
    raise ValueError(f"scenes have 1 to {MAX_OBJECTS} objects, got {len(objs)}")


def render_scene(rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> Scene:
    """Draw one random scene and describe it; all randomness comes from ``rng``."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {image_size}")
    objects = _sample_objects(rng, image_size)
    return draw_scene(objects, draw_background(rng, image_size))


def draw_scene(objects: Sequence[SceneObject], background: np.ndarray) -> Scene:
    """Paint ``objects`` on a (S, S, 3) uint8 ``background`` and describe them; used by
    ``render_scene`` and by the scene lab's hand-made scenes."""
    return Scene(image=paint(objects, background, COLORS), objects=list(objects),
                 captions=make_captions(objects))


def objects_from_specs(specs: Sequence[Mapping], image_size: int = IMAGE_SIZE
                       ) -> list[SceneObject]:
    """Hand-made objects for a scene: each spec has ``shape``, ``color``, ``size`` and
    ``position`` (the object's centre as x, y fractions of the image side). The width is the
    middle of the size's range, as in the dataset. Raises ValueError, naming the problem, for
    an unknown shape/colour/size, more than three objects, a repeated object, an object that
    does not fit inside the image, or objects that overlap or touch."""
    return place_specs(specs, image_size, shapes=SHAPES, colors=tuple(COLORS), sizes=SIZES,
                       size_ranges=SIZE_RANGES, max_objects=MAX_OBJECTS, repeats=False)
