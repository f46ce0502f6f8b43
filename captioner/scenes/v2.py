"""scenes-v2: a richer world in the spirit of CLEVR / ShapeWorld, every caption still exactly
checkable.

128-px scenes of one to five objects: 6 shapes, 8 colours, 3 sizes, on gradient, blotchy-noise
or low-contrast striped backgrounds. Identical objects are counted ("two small red circles");
distractors share attributes with other objects (a small red circle beside a small red square
and a big red circle); a later object may partly cover an earlier one (``visible`` in the
ground truth: named when at least 60 % shows, never named when at most 35 % does, nothing in
between). Four colour-shape pairs (``HELD_OUT_PAIRS``) never appear in training, validation or
test scenes, only in the held-out compositional set (CLEVR CoGenT).

scenes-v1 is a special case: its shapes, colours (same RGB), "small"/"big" sizes (same
fractions of the image side) and gradient backgrounds are all part of this world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from captioner.scenes import v1
from captioner.scenes.captions import NUMBER_WORDS, plural
from captioner.scenes.objects import (
    Scene,
    SceneObject,
    boxes_clear,
    paint,
    place_specs,
    relation_between,
    shape_mask,
    unambiguous,
    visible_fractions,
)

SHAPES: tuple[str, ...] = (*v1.SHAPES, "diamond", "star", "hexagon")
COLORS: dict[str, tuple[int, int, int]] = {
    **v1.COLORS,
    "orange": (250, 125, 15),
    "cyan": (20, 190, 205),
    "pink": (240, 110, 185),
}
SIZES: tuple[str, ...] = ("tiny", "small", "big")
# "small" and "big" are scenes-v1's fractions; "tiny" is 18-22 px at 128 px, still more than
# two cells of a 16x16 grid.
SIZE_RANGES: dict[str, tuple[float, float]] = {"tiny": (0.14, 0.17), **v1.SIZE_RANGES}
MAX_OBJECTS = 5
MAX_COUNT = 3  # identical objects in one scene: "two", "three"
IMAGE_SIZE = 128
MIN_IMAGE_SIZE = 96
GRID = 16
MAX_WORDS = 40  # five singletons chained by relations, after "an image of"
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "star"), ("blue", "hexagon"), ("cyan", "circle"), ("orange", "triangle"))
BACKGROUNDS = ("gradient", "noise", "stripes")
NAMED_VISIBLE = 0.6  # a covered object shows at least this much (named) ...
HIDDEN_VISIBLE = (0.1, 0.35)  # ... or only this much (not named)
P_COPY, P_DISTRACTOR, P_OCCLUDE = 0.25, 0.35, 0.25
AREA_BUDGET = 0.42  # the objects' boxes cover at most this share of the image


def _random_kind(rng: np.random.Generator) -> tuple[str, str, str]:
    return (SIZES[rng.integers(len(SIZES))], list(COLORS)[rng.integers(len(COLORS))],
            SHAPES[rng.integers(len(SHAPES))])


def _distractor(rng: np.random.Generator, kind: tuple[str, str, str]) -> tuple[str, str, str]:
    """`kind` with exactly one of size, colour, shape changed."""
    which = int(rng.integers(3))
    options = (SIZES, tuple(COLORS), SHAPES)[which]
    others = [v for v in options if v != kind[which]]
    new = list(kind)
    new[which] = others[rng.integers(len(others))]
    return tuple(new)


def is_held_out(kind: tuple[str, str, str] | SceneObject) -> bool:
    """Whether an object's colour-shape pair is one of the held-out ones."""
    if isinstance(kind, SceneObject):
        kind = kind.kind
    return (kind[1], kind[2]) in HELD_OUT_PAIRS


def _sample_kinds(rng: np.random.Generator, count: int, held_out: bool
                  ) -> list[tuple[str, str, str]]:
    """`count` kinds with copies (to count) and one-attribute distractors; outside the held-out
    set no held-out pair, inside it the first object always has one."""
    while True:
        if held_out:
            color, shape = HELD_OUT_PAIRS[rng.integers(len(HELD_OUT_PAIRS))]
            kinds = [(SIZES[rng.integers(len(SIZES))], color, shape)]
        else:
            kinds = []
        while len(kinds) < count:
            r = rng.random()
            if kinds and r < P_COPY:
                kind = kinds[rng.integers(len(kinds))]
                if kinds.count(kind) >= MAX_COUNT:
                    continue
            elif kinds and r < P_COPY + P_DISTRACTOR:
                kind = _distractor(rng, kinds[rng.integers(len(kinds))])
            else:
                kind = _random_kind(rng)
            if not held_out and is_held_out(kind):
                continue
            if kinds.count(kind) < MAX_COUNT:
                kinds.append(kind)
        area = sum(np.mean(SIZE_RANGES[size]) ** 2 for size, _, _ in kinds)
        if area <= AREA_BUDGET:
            return [kinds[i] for i in rng.permutation(count)]


def _covered(under: list[int], shape_under: str, over: list[int], shape_over: str) -> float:
    """The share of the shape in box `under` that a shape drawn in box `over` covers."""
    x0, y0 = min(under[0], over[0]), min(under[1], over[1])
    x1, y1 = max(under[2], over[2]), max(under[3], over[3])
    masks = []
    for box, shape in ((under, shape_under), (over, shape_over)):
        canvas = np.zeros((y1 - y0, x1 - x0))
        canvas[box[1] - y0:box[3] - y0, box[0] - x0:box[2] - x0] = np.asarray(
            shape_mask(shape, box[2] - box[0]), dtype=np.float64) / 255
        masks.append(canvas)
    return float((masks[0] * masks[1]).sum() / masks[0].sum())


def _occlusion_ok(visible: float) -> bool:
    return visible >= NAMED_VISIBLE or HIDDEN_VISIBLE[0] <= visible <= HIDDEN_VISIBLE[1]


def _place(rng: np.random.Generator, kinds: list[tuple[str, str, str]], image_size: int
           ) -> list[SceneObject] | None:
    """Positions for `kinds` in drawing order, or None when they do not fit. Objects keep
    apart, except that one may partly cover one earlier, not yet covered object of another
    colour."""
    margin = max(2, image_size // 32)
    border = max(1, image_size // 64)
    objects: list[SceneObject] = []
    covered: set[int] = set()
    for size, color, shape in kinds:
        lo, hi = SIZE_RANGES[size]
        width = int(round(image_size * rng.uniform(lo, hi)))
        occlude = bool(objects) and rng.random() < P_OCCLUDE
        for _ in range(100):
            x0 = int(rng.integers(border, image_size - border - width + 1))
            y0 = int(rng.integers(border, image_size - border - width + 1))
            box = [x0, y0, x0 + width, y0 + width]
            touching = [k for k, o in enumerate(objects) if not boxes_clear(box, o.box, margin)]
            if not touching:
                if occlude:
                    continue
                objects.append(SceneObject(shape, color, size, box))
                break
            if not occlude or len(touching) > 1 or touching[0] in covered:
                continue
            under = objects[touching[0]]
            if under.color == color:  # no edge would show where one ends
                continue
            share = _covered(under.box, under.shape, box, shape)
            if share > 0.05 and _occlusion_ok(1 - share):
                covered.add(touching[0])
                objects.append(SceneObject(shape, color, size, box))
                break
        else:
            return None
    return objects


def _relations_clear(objects: Sequence[SceneObject], image_size: int) -> bool:
    """Every pair of named objects that captions may relate (one of a kind each) is
    unambiguously placed, as in scenes-v1."""
    kinds = [o.kind for o in objects if o.named]
    singles = [o for o in objects if o.named and kinds.count(o.kind) == 1]
    return all(unambiguous(a.box, b.box, image_size / 16)
               for i, a in enumerate(singles) for b in singles[i + 1:])


def sample_objects(rng: np.random.Generator, image_size: int = IMAGE_SIZE, *,
                   held_out: bool = False) -> list[SceneObject]:
    """Random objects in drawing order, each with its visible fraction. The number of
    objects is drawn once, so crowded scenes are as common as sparse ones."""
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    while True:
        objects = _place(rng, _sample_kinds(rng, count, held_out), image_size)
        if objects is None:
            continue
        for obj, visible in zip(objects, visible_fractions(objects, image_size)):
            obj.visible = visible
        if all(_occlusion_ok(o.visible) for o in objects) and _relations_clear(
                objects, image_size) and (not held_out or any(
                    is_held_out(o) and o.named for o in objects)):
            return objects


def draw_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A desaturated tone with a gentle gradient, plus blotchy noise or faint stripes."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    base = rng.uniform(105, 185)
    tint = rng.uniform(-12, 12, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    amplitude = rng.uniform(0, 24)
    coords = (np.arange(image_size) - (image_size - 1) / 2) / image_size
    ramp = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    tone = amplitude * ramp
    if kind == "noise":
        cells = int(rng.integers(4, 12))
        blotches = rng.normal(0, rng.uniform(3, 7), size=(cells, cells))
        tone = tone + np.asarray(Image.fromarray(blotches.astype(np.float32)).resize(
            (image_size, image_size), Image.Resampling.BICUBIC))
    elif kind == "stripes":
        period = rng.uniform(6, 20)
        phase = rng.uniform(0, 2 * np.pi)
        direction = rng.uniform(0, np.pi)
        pixels = np.arange(image_size)
        along = np.cos(direction) * pixels[None, :] + np.sin(direction) * pixels[:, None]
        tone = tone + rng.uniform(3, 7) * np.sign(np.sin(2 * np.pi * along / period + phase))
    img = base + tint[None, None, :] + tone[:, :, None]
    img = img + rng.normal(0, rng.uniform(0, 4), size=(image_size, image_size, 1))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _units(objects: Sequence[SceneObject]) -> list[list[SceneObject]]:
    """The named objects grouped by kind (what one phrase names)."""
    groups: dict[tuple[str, str, str], list[SceneObject]] = {}
    for obj in objects:
        if obj.named:
            groups.setdefault(obj.kind, []).append(obj)
    return list(groups.values())


def _centre(unit: list[SceneObject]) -> tuple[float, float]:
    return (float(np.mean([o.center[0] for o in unit])),
            float(np.mean([o.center[1] for o in unit])))


def _phrase(unit: list[SceneObject]) -> str:
    size, color, shape = unit[0].kind
    if len(unit) == 1:
        return f"a {size} {color} {shape}"
    return f"{NUMBER_WORDS[len(unit)]} {size} {color} {plural(shape)}"


def _chain(units: list[list[SceneObject]]) -> str:
    """Phrases in order: a relation between two single objects, else "and"."""
    parts = [_phrase(units[0])]
    for prev, nxt in zip(units, units[1:]):
        single = len(prev) == 1 and len(nxt) == 1
        parts += [relation_between(prev[0], nxt[0]) if single else "and", _phrase(nxt)]
    return " ".join(parts)


def _listing(units: list[list[SceneObject]]) -> str:
    phrases = [_phrase(u) for u in units]
    return phrases[0] if len(phrases) == 1 else f"{' '.join(phrases[:-1])} and {phrases[-1]}"


def make_captions(objects: Sequence[SceneObject]) -> list[str]:
    """Five true, differently worded captions of the named objects; the first (canonical)
    orders them left to right."""
    units = sorted(_units(objects), key=lambda u: _centre(u))
    if not units:
        raise ValueError("a scene needs at least one mostly visible object")
    be = "is" if len(units[0]) == 1 else "are"
    if len(units) == 1:
        p = _phrase(units[0])
        return [p, f"there {be} {p}", f"an image of {p}", f"{p} in the image",
                f"{p} on the background"]
    top_down = sorted(units, key=lambda u: _centre(u)[::-1])
    return [_chain(units), _chain(units[::-1]), f"there {be} {_listing(units)}",
            f"an image of {_chain(top_down)}", f"{_listing(units[::-1])} in the image"]


def draw_scene(objects: Sequence[SceneObject], background: np.ndarray) -> Scene:
    """Paint ``objects`` in order on a (S, S, 3) uint8 ``background`` and describe them."""
    return Scene(image=paint(objects, background, COLORS), objects=list(objects),
                 captions=make_captions(objects))


def render_scene(rng: np.random.Generator, image_size: int = IMAGE_SIZE, *,
                 held_out: bool = False) -> Scene:
    """Draw one random scene and describe it; `held_out`: a scene of the compositional set
    (at least one named object of a held-out colour-shape pair)."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"scenes-v2 images are at least {MIN_IMAGE_SIZE} pixels, got "
                         f"{image_size}")
    objects = sample_objects(rng, image_size, held_out=held_out)
    return draw_scene(objects, draw_background(rng, image_size))


def objects_from_specs(specs: Sequence[Mapping], image_size: int = IMAGE_SIZE
                       ) -> list[SceneObject]:
    """Hand-made objects (1 to 5, identical ones allowed), as scenes-v1's
    ``objects_from_specs``; hand-made objects never overlap."""
    objects = place_specs(specs, image_size, shapes=SHAPES, colors=tuple(COLORS), sizes=SIZES,
                          size_ranges=SIZE_RANGES, max_objects=MAX_OBJECTS, repeats=True)
    for obj in objects:
        obj.visible = 1.0
    return objects
