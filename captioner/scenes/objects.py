"""What every scene world shares: the objects, their geometry and how shapes are drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
INVERSE_RELATION: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
# An object at least this visible is named in captions; worlds never draw one that is neither
# clearly visible nor clearly hidden (see scenes.v2), so the line is never a judgement call.
MIN_VISIBLE = 0.5
_SUPERSAMPLE = 4


@dataclass
class SceneObject:
    """One drawn shape; ``box`` is ``[x0, y0, x1, y1]`` in pixels, x1/y1 exclusive.

    ``visible`` is the fraction of the shape not covered by shapes drawn after it, in worlds
    that let shapes overlap (None where they never do, as in scenes-v1)."""

    shape: str
    color: str
    size: str
    box: list[int]
    visible: float | None = None

    @property
    def description(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def kind(self) -> tuple[str, str, str]:
        return (self.size, self.color, self.shape)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def named(self) -> bool:
        """Whether captions name this object (it is mostly visible)."""
        return self.visible is None or self.visible >= MIN_VISIBLE

    def to_dict(self) -> dict:
        record = {"shape": self.shape, "color": self.color, "size": self.size,
                  "box": list(self.box)}
        if self.visible is not None:
            record["visible"] = self.visible
        return record


@dataclass
class Scene:
    """A rendered image, the objects in it and five differently worded true captions."""

    image: Image.Image
    objects: list[SceneObject]
    captions: list[str]


def as_object(obj: SceneObject | Mapping) -> SceneObject:
    """A SceneObject from itself or from its metadata dict."""
    if isinstance(obj, SceneObject):
        return obj
    visible = obj.get("visible")
    return SceneObject(obj["shape"], obj["color"], obj["size"], [int(v) for v in obj["box"]],
                       None if visible is None else float(visible))


def relation_between(a: SceneObject | Mapping, b: SceneObject | Mapping) -> str:
    """The relation of ``a`` to ``b``, from box centres along the axis with larger separation."""
    (ax, ay), (bx, by) = as_object(a).center, as_object(b).center
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def boxes_clear(a: list[int], b: list[int], margin: int) -> bool:
    return (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def unambiguous(a: list[int], b: list[int], min_gap: float) -> bool:
    """True when one axis clearly dominates, so the relation is obvious to a viewer too."""
    dx = abs((a[0] + a[2]) - (b[0] + b[2])) / 2
    dy = abs((a[1] + a[3]) - (b[1] + b[3])) / 2
    return abs(dx - dy) >= min_gap


def _star(big: int) -> list[tuple[float, float]]:
    """A five-pointed star whose points touch the box's top, sides and bottom corners' line."""
    c, outer = (big - 1) / 2, (big - 1) / 2
    inner = outer * 0.45
    angles = -np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, outer, inner)
    ys = c + radii * np.sin(angles)
    ys = ys - ys.min()
    ys = ys * (big - 1) / ys.max()  # stretch to the full box height, as the other shapes fill it
    return [(float(c + r * np.cos(a)), float(y)) for r, a, y in zip(radii, angles, ys)]


def shape_mask(shape: str, width: int) -> Image.Image:
    """An antialiased coverage mask of ``shape`` filling a ``width`` x ``width`` box."""
    big = width * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    m = big - 1
    if shape == "circle":
        draw.ellipse([0, 0, m, m], fill=255)
    elif shape == "square":
        draw.rectangle([0, 0, m, m], fill=255)
    elif shape == "triangle":
        draw.polygon([(0, m), (m, m), (m / 2, 0)], fill=255)
    elif shape == "diamond":
        draw.polygon([(m / 2, 0), (m, m / 2), (m / 2, m), (0, m / 2)], fill=255)
    elif shape == "hexagon":
        draw.polygon([(m / 4, 0), (3 * m / 4, 0), (m, m / 2), (3 * m / 4, m), (m / 4, m),
                      (0, m / 2)], fill=255)
    elif shape == "star":
        draw.polygon(_star(big), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask.resize((width, width), Image.Resampling.BOX)


def paint(objects: Sequence[SceneObject], background: np.ndarray,
          colors: Mapping[str, tuple[int, int, int]]) -> Image.Image:
    """``objects`` painted in order (later ones on top) on a (S, S, 3) uint8 background."""
    image = Image.fromarray(background, "RGB")
    for obj in objects:
        x0, y0, x1, _ = obj.box
        image.paste(colors[obj.color], (x0, y0), shape_mask(obj.shape, x1 - x0))
    return image


def visible_fractions(objects: Sequence[SceneObject], image_size: int) -> list[float]:
    """For each object, the share of its coverage left once the objects after it are drawn."""
    covers = []
    for obj in objects:
        canvas = np.zeros((image_size, image_size))
        x0, y0, x1, y1 = obj.box
        canvas[y0:y1, x0:x1] = np.asarray(shape_mask(obj.shape, x1 - x0), dtype=np.float64) / 255
        covers.append(canvas)
    fractions = []
    for i, cover in enumerate(covers):
        left = cover.copy()
        for later in covers[i + 1:]:
            left *= 1 - later
        fractions.append(round(float(left.sum() / cover.sum()), 3))
    return fractions


def place_specs(specs: Sequence[Mapping], image_size: int, *, shapes, colors, sizes,
                size_ranges, max_objects: int, repeats: bool) -> list[SceneObject]:
    """`objects_from_specs` for a world's attributes; `repeats` allows identical objects."""
    if not 1 <= len(specs) <= max_objects:
        raise ValueError(f"a scene has 1 to {max_objects} objects, got {len(specs)}")
    margin = max(2, image_size // 32)
    objects: list[SceneObject] = []
    for n, spec in enumerate(specs, 1):
        shape, color, size = spec.get("shape"), spec.get("color"), spec.get("size")
        for name, value, allowed in (("shape", shape, tuple(shapes)),
                                     ("color", color, tuple(colors)),
                                     ("size", size, tuple(sizes))):
            if value not in allowed:
                raise ValueError(f"object {n}: unknown {name} {value!r}; use one of {allowed}")
        try:
            x, y = (float(v) for v in spec["position"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"object {n}: position must be (x, y) fractions of the image "
                             f"side, got {spec.get('position')!r}") from None
        width = int(round(image_size * sum(size_ranges[size]) / 2))
        x0, y0 = int(round(x * image_size - width / 2)), int(round(y * image_size - width / 2))
        box = [x0, y0, x0 + width, y0 + width]
        if x0 < 0 or y0 < 0 or box[2] > image_size or box[3] > image_size:
            raise ValueError(f"object {n} ({size} {color} {shape}) at ({x:.2f}, {y:.2f}) does "
                             "not fit inside the image; move it towards the centre")
        for m, other in enumerate(objects, 1):
            if not repeats and (other.size, other.color, other.shape) == (size, color, shape):
                raise ValueError(f"objects {m} and {n} are both a {size} {color} {shape}; "
                                 "scenes never repeat an object")
            if not boxes_clear(box, other.box, margin):
                raise ValueError(f"object {n} ({size} {color} {shape}) overlaps object {m} "
                                 f"({other.description}); move them apart")
        objects.append(SceneObject(shape, color, size, box))
    return objects
