"""Procedural "scenes": coloured shapes on muted backgrounds, with exactly checkable captions.

The package can generate this dataset anywhere (no network) and, because every image comes with
the list of objects it shows, a model's caption can be *verified* (right objects? true spatial
relations?) and its attention checked against the object boxes (the "pointing game").

Caption grammar (lowercase, single spaces, no punctuation)::

    mention  := "a" SIZE COLOUR SHAPE            e.g. "a big red circle"
    relation := "to the left of" | "to the right of" | "above" | "below"

A relation phrase links the mention just before it to the mention just after it. "the SIZE
COLOUR SHAPE" refers back to an object already mentioned. The first of the five captions of a
scene is the canonical one: objects ordered left to right, chained by relations.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

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
RELATIONS: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
INVERSE_RELATION: dict[str, str] = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}

# Object widths as fractions of the image size: at 64 px "small" is 16-18 px and "big" 26-30 px,
# so every object spans at least two cells of an 8x8 feature grid.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.25, 0.285), "big": (0.40, 0.47)}
MAX_OBJECTS = 3
FORMAT_VERSION = 1
SPLIT_IDS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
_SUPERSAMPLE = 4


@dataclass
class SceneObject:
    """One drawn shape; ``box`` is ``[x0, y0, x1, y1]`` in pixels, x1/y1 exclusive."""

    shape: str
    color: str
    size: str
    box: list[int]

    @property
    def description(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "box": list(self.box)}


@dataclass
class Scene:
    """A rendered image, the objects in it and five differently worded true captions."""

    image: Image.Image
    objects: list[SceneObject]
    captions: list[str]


@dataclass
class Mention:
    """An object phrase found in a caption; token indices are into the whitespace tokens."""

    size: str | None
    color: str | None
    shape: str
    shape_index: int
    color_index: int | None = None
    size_index: int | None = None

    @property
    def key(self) -> tuple[str | None, str | None, str]:
        return (self.size, self.color, self.shape)


@dataclass
class ParsedCaption:
    """What a caption claims: the objects it mentions and relations between mentions."""

    tokens: list[str]
    mentions: list[Mention] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Geometry


def _as_object(obj: SceneObject | Mapping) -> SceneObject:
    if isinstance(obj, SceneObject):
        return obj
    return SceneObject(obj["shape"], obj["color"], obj["size"], [int(v) for v in obj["box"]])


def relation_between(a: SceneObject | Mapping, b: SceneObject | Mapping) -> str:
    """The relation of ``a`` to ``b``, from box centres along the axis with larger separation."""
    (ax, ay), (bx, by) = _as_object(a).center, _as_object(b).center
    dx, dy = ax - bx, ay - by
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _boxes_clear(a: list[int], b: list[int], margin: int) -> bool:
    return (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def _unambiguous(a: list[int], b: list[int], min_gap: float) -> bool:
    """True when one axis clearly dominates, so the relation is obvious to a viewer too."""
    dx = abs((a[0] + a[2]) - (b[0] + b[2])) / 2
    dy = abs((a[1] + a[3]) - (b[1] + b[3])) / 2
    return abs(dx - dy) >= min_gap


# --------------------------------------------------------------------------------------------
# Rendering


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
                    _boxes_clear(box, o.box, margin) and _unambiguous(box, o.box, min_gap)
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


def _shape_mask(shape: str, width: int) -> Image.Image:
    """An antialiased coverage mask of ``shape`` filling a ``width`` x ``width`` box."""
    big = width * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "circle":
        draw.ellipse([0, 0, big - 1, big - 1], fill=255)
    elif shape == "square":
        draw.rectangle([0, 0, big - 1, big - 1], fill=255)
    else:
        draw.polygon([(0, big - 1), (big - 1, big - 1), ((big - 1) / 2, 0)], fill=255)
    return mask.resize((width, width), Image.Resampling.BOX)


# --------------------------------------------------------------------------------------------
# Captions


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


def render_scene(rng: np.random.Generator, image_size: int = 64) -> Scene:
    """Draw one random scene and describe it; all randomness comes from ``rng``."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
    objects = _sample_objects(rng, image_size)
    return draw_scene(objects, draw_background(rng, image_size))


def draw_scene(objects: Sequence[SceneObject], background: np.ndarray) -> Scene:
    """Paint ``objects`` on a (S, S, 3) uint8 ``background`` and describe them; used by
    ``render_scene`` and by the scene lab's hand-made scenes."""
    image = Image.fromarray(background, "RGB")
    for obj in objects:
        x0, y0, x1, _ = obj.box
        image.paste(COLORS[obj.color], (x0, y0), _shape_mask(obj.shape, x1 - x0))
    return Scene(image=image, objects=list(objects), captions=make_captions(objects))


def objects_from_specs(specs: Sequence[Mapping], image_size: int = 64) -> list[SceneObject]:
    """Hand-made objects for a scene: each spec has ``shape``, ``color``, ``size`` and
    ``position`` (the object's centre as x, y fractions of the image side). The width is the
    middle of the size's range, as in the dataset. Raises ValueError, naming the problem, for
    an unknown shape/colour/size, more than three objects, a repeated object, an object that
    does not fit inside the image, or objects that overlap or touch."""
    if not 1 <= len(specs) <= MAX_OBJECTS:
        raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(specs)}")
    margin = max(2, image_size // 32)
    objects: list[SceneObject] = []
    for n, spec in enumerate(specs, 1):
        shape, color, size = spec.get("shape"), spec.get("color"), spec.get("size")
        for name, value, allowed in (("shape", shape, SHAPES), ("color", color, tuple(COLORS)),
                                     ("size", size, SIZES)):
            if value not in allowed:
                raise ValueError(f"object {n}: unknown {name} {value!r}; use one of {allowed}")
        try:
            x, y = (float(v) for v in spec["position"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"object {n}: position must be (x, y) fractions of the image "
                             f"side, got {spec.get('position')!r}") from None
        width = int(round(image_size * sum(SIZE_RANGES[size]) / 2))
        x0, y0 = int(round(x * image_size - width / 2)), int(round(y * image_size - width / 2))
        box = [x0, y0, x0 + width, y0 + width]
        if x0 < 0 or y0 < 0 or box[2] > image_size or box[3] > image_size:
            raise ValueError(f"object {n} ({size} {color} {shape}) at ({x:.2f}, {y:.2f}) does "
                             "not fit inside the image; move it towards the centre")
        for m, other in enumerate(objects, 1):
            if (other.size, other.color, other.shape) == (size, color, shape):
                raise ValueError(f"objects {m} and {n} are both a {size} {color} {shape}; "
                                 "scenes never repeat an object")
            if not _boxes_clear(box, other.box, margin):
                raise ValueError(f"object {n} ({size} {color} {shape}) overlaps object {m} "
                                 f"({other.description}); move them apart")
        objects.append(SceneObject(shape, color, size, box))
    return objects


# --------------------------------------------------------------------------------------------
# Parsing and checking captions

_RELATION_PHRASES: dict[tuple[str, ...], str] = {
    ("to", "the", "left", "of"): "to the left of",
    ("on", "the", "left", "of"): "to the left of",
    ("left", "of"): "to the left of",
    ("to", "the", "right", "of"): "to the right of",
    ("on", "the", "right", "of"): "to the right of",
    ("right", "of"): "to the right of",
    ("on", "top", "of"): "above",
    ("above",): "above",
    ("over",): "above",
    ("below",): "below",
    ("under",): "below",
    ("underneath",): "below",
    ("beneath",): "below",
}
_LONGEST_PHRASE = max(len(k) for k in _RELATION_PHRASES)


def _clean(token: str) -> str:
    return "".join(ch for ch in str(token).lower() if ch.isalpha())


def parse_caption(text_or_tokens: str | Sequence[str]) -> ParsedCaption:
    """Read mentions and relations from a caption; never raises, ignores words it can't place.

    A string is split on whitespace; a token list (e.g. a model's output, special tokens and all)
    is used as is, so the returned token indices line up with it.
    """
    if isinstance(text_or_tokens, str):
        tokens = text_or_tokens.split()
    else:
        try:
            tokens = [str(t) for t in text_or_tokens]
        except TypeError:
            tokens = []
    words = [_clean(t) for t in tokens]
    parsed = ParsedCaption(tokens=tokens)
    last: int | None = None  # mention index of the most recent mention or back-reference
    pending: str | None = None  # relation waiting for its right-hand mention
    i = 0
    while i < len(words):
        for length in range(_LONGEST_PHRASE, 0, -1):
            relation = _RELATION_PHRASES.get(tuple(words[i : i + length]))
            if relation is not None:
                break
        if relation is not None:
            pending = relation if last is not None else None
            i += length
            continue
        if words[i] in SHAPES:
            mention = Mention(size=None, color=None, shape=words[i], shape_index=i)
            j = i - 1
            if j >= 0 and words[j] in COLORS:
                mention.color, mention.color_index = words[j], j
                j -= 1
            if j >= 0 and words[j] in SIZES:
                mention.size, mention.size_index = words[j], j
                j -= 1
            index = None
            if j >= 0 and words[j] == "the":  # "the X" refers back to an earlier "a X"
                index = next(
                    (k for k, m in enumerate(parsed.mentions) if m.key == mention.key), None
                )
            if index is None:
                parsed.mentions.append(mention)
                index = len(parsed.mentions) - 1
            if pending is not None and last is not None:
                parsed.relations.append((last, pending, index))
            pending, last = None, index
        i += 1
    return parsed


def match_mentions(
    parsed: ParsedCaption | str | Sequence[str], objects: Sequence[SceneObject | Mapping]
) -> list[int | None]:
    """For each mention, the index of the scene object it names (same size, colour, shape).

    Each object is matched at most once; a mention with no such object gets ``None``. Used for
    the pointing game: is the attention at a mention's word inside that object's box?
    """
    if not isinstance(parsed, ParsedCaption):
        parsed = parse_caption(parsed)
    objs = [_as_object(o) for o in objects]
    used: set[int] = set()
    matches: list[int | None] = []
    for mention in parsed.mentions:
        found = next(
            (
                k
                for k, o in enumerate(objs)
                if k not in used and (o.size, o.color, o.shape) == mention.key
            ),
            None,
        )
        if found is not None:
            used.add(found)
        matches.append(found)
    return matches


def caption_correctness(
    text: str | Sequence[str], objects: Sequence[SceneObject | Mapping]
) -> dict:
    """Check a caption against a scene's objects.

    Returns ``objects_correct`` (the mentioned objects are exactly the scene's objects, as a
    multiset), ``relations_correct`` (``None`` if no relation is stated, else whether all are
    true), ``matches`` (see :func:`match_mentions`) and the ``parsed`` caption.
    """
    parsed = parse_caption(text)
    objs = [_as_object(o) for o in objects]
    mentioned = Counter(m.key for m in parsed.mentions)
    present = Counter((o.size, o.color, o.shape) for o in objs)
    matches = match_mentions(parsed, objs)
    relations_correct: bool | None = None
    if parsed.relations:
        relations_correct = all(
            matches[i] is not None
            and matches[j] is not None
            and i != j
            and relation_between(objs[matches[i]], objs[matches[j]]) == rel
            for i, rel, j in parsed.relations
        )
    return {
        "objects_correct": mentioned == present,
        "relations_correct": relations_correct,
        "matches": matches,
        "parsed": parsed,
    }


# --------------------------------------------------------------------------------------------
# Writing a dataset


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one image: independent per (seed, split, index), so splits never
    share images and the first N images of a split don't depend on the split's length."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index])


def _is_complete(out_dir: Path, params: dict) -> bool:
    try:
        if json.loads((out_dir / "scenes.json").read_text()) != params:
            return False
        for split in SPLIT_IDS:
            with open(out_dir / split / "metadata.jsonl", encoding="utf-8") as f:
                if sum(1 for _ in f) != params[f"num_{split}"]:
                    return False
    except (OSError, ValueError):
        return False
    return True


def _write_split(
    split_dir: Path, split: str, count: int, image_size: int, seed: int, progress: bool
) -> None:
    split_dir.mkdir(parents=True)
    width = max(5, len(str(count - 1)))
    indices = range(count)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"scenes/{split}", unit="img")
    with open(split_dir / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i in indices:
            scene = render_scene(scene_rng(seed, split, i), image_size)
            name = f"{i:0{width}d}.png"
            scene.image.save(split_dir / name, format="PNG")
            record = {
                "file_name": name,
                "captions": scene.captions,
                "objects": [o.to_dict() for o in scene.objects],
            }
            meta.write(json.dumps(record) + "\n")


def generate_scenes(
    out_dir: str | Path,
    *,
    num_train: int = 10000,
    num_validation: int = 500,
    num_test: int = 1000,
    image_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write a scenes dataset in imagefolder layout (``train/``, ``validation/``, ``test/``,
    each with PNGs and ``metadata.jsonl``) and return its path.

    Same arguments give byte-identical files. An existing complete dataset with the same
    parameters (recorded in ``scenes.json``) is reused. The data is written to a temporary
    folder next to ``out_dir`` and renamed into place, so an interrupted run leaves no half
    dataset behind. An existing ``out_dir`` is only replaced if it is empty or was written here.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    params = {
        "generator": "captioner.scenes",
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "seed": seed,
        "num_train": num_train,
        "num_validation": num_validation,
        "num_test": num_test,
    }
    if _is_complete(out_dir, params):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "scenes.json").exists():
        raise FileExistsError(
            f"{out_dir} exists and is not a scenes dataset; refusing to overwrite it"
        )
    for split in SPLIT_IDS:
        if params[f"num_{split}"] < 1:
            raise ValueError(f"num_{split} must be at least 1")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        tmp.mkdir()
        for split in SPLIT_IDS:
            _write_split(tmp / split, split, params[f"num_{split}"], image_size, seed, progress)
        (tmp / "scenes.json").write_text(json.dumps(params, indent=2) + "\n")
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


__all__ = [
    "COLORS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "Mention",
    "ParsedCaption",
    "Scene",
    "SceneObject",
    "caption_correctness",
    "draw_background",
    "draw_scene",
    "generate_scenes",
    "make_captions",
    "match_mentions",
    "parse_caption",
    "objects_from_specs",
    "relation_between",
    "render_scene",
    "scene_rng",
]
