"""Reading and checking captions of any scene world.

The parser knows every world's words, so one checker serves all of them: scenes-v1 captions
use a subset of scenes-v2's grammar, and a v1 caption parses exactly as it always did.

    mention  := "a" SIZE COLOUR SHAPE | COUNT SIZE COLOUR SHAPE-s   ("two small red circles")
    relation := "to the left of" | "to the right of" | "above" | "below"

A relation phrase links the mention just before it to the mention just after it; "the SIZE
COLOUR SHAPE" refers back to an object already mentioned.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from captioner.scenes.objects import SceneObject, as_object, relation_between

# Every world's attribute words (scenes.worlds checks that each world's are among them).
ALL_SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
ALL_COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "pink")
ALL_SIZES = ("tiny", "small", "big")
COUNT_WORDS: dict[str, int] = {"two": 2, "three": 3, "four": 4, "five": 5}
NUMBER_WORDS: dict[int, str] = {n: w for w, n in COUNT_WORDS.items()}
PLURALS: dict[str, str] = {f"{s}s": s for s in ALL_SHAPES}


def plural(shape: str) -> str:
    return f"{shape}s"


@dataclass
class Mention:
    """An object phrase found in a caption; token indices are into the whitespace tokens.

    ``count`` is how many identical objects it names (1 for "a ...", 2 for "two ...")."""

    size: str | None
    color: str | None
    shape: str
    shape_index: int
    color_index: int | None = None
    size_index: int | None = None
    count: int = 1
    count_index: int | None = None

    @property
    def key(self) -> tuple[str | None, str | None, str]:
        return (self.size, self.color, self.shape)

    @property
    def named_words(self) -> list[tuple[str, int]]:
        """The words that name the object(s), what pointing scores: (kind, token index), kind
        "count", "colour" or "shape"."""
        return [(kind, i) for kind, i in (("count", self.count_index),
                                          ("colour", self.color_index),
                                          ("shape", self.shape_index)) if i is not None]


@dataclass
class ParsedCaption:
    """What a caption claims: the objects it mentions and relations between mentions."""

    tokens: list[str]
    mentions: list[Mention] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)


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
        shape = words[i] if words[i] in ALL_SHAPES else PLURALS.get(words[i])
        if shape is not None:
            mention = Mention(size=None, color=None, shape=shape, shape_index=i)
            j = i - 1
            if j >= 0 and words[j] in ALL_COLORS:
                mention.color, mention.color_index = words[j], j
                j -= 1
            if j >= 0 and words[j] in ALL_SIZES:
                mention.size, mention.size_index = words[j], j
                j -= 1
            if j >= 0 and words[j] in COUNT_WORDS:
                mention.count, mention.count_index = COUNT_WORDS[words[j]], j
                j -= 1
            index = None
            if j >= 0 and words[j] == "the":  # "the X" refers back to an earlier "a X"
                index = next(
                    (k for k, m in enumerate(parsed.mentions)
                     if m.key == mention.key and m.count == mention.count), None
                )
            if index is None:
                parsed.mentions.append(mention)
                index = len(parsed.mentions) - 1
            if pending is not None and last is not None:
                parsed.relations.append((last, pending, index))
            pending, last = None, index
        i += 1
    return parsed


def match_groups(
    parsed: ParsedCaption | str | Sequence[str], objects: Sequence[SceneObject | Mapping]
) -> list[list[int]]:
    """For each mention, the indices of the scene objects it names: up to ``count`` objects
    of the same size, colour and shape (mostly visible ones first), each object used by one
    mention at most."""
    if not isinstance(parsed, ParsedCaption):
        parsed = parse_caption(parsed)
    objs = [as_object(o) for o in objects]
    used: set[int] = set()
    groups: list[list[int]] = []
    for mention in parsed.mentions:
        found = [k for k, o in enumerate(objs) if k not in used and o.kind == mention.key]
        found = sorted(found, key=lambda k: not objs[k].named)[: mention.count]
        used.update(found)
        groups.append(found)
    return groups


def match_mentions(
    parsed: ParsedCaption | str | Sequence[str], objects: Sequence[SceneObject | Mapping]
) -> list[int | None]:
    """For each mention, the index of the (first) scene object it names, or ``None``.

    Each object is matched at most once. Used for the pointing game: is the attention at a
    mention's word inside that object's box? (See :func:`match_groups` for counted mentions.)
    """
    return [group[0] if group else None for group in match_groups(parsed, objects)]


def said_and_present(parsed: ParsedCaption, objs: Sequence[SceneObject]
                     ) -> tuple[Counter, Counter]:
    """The kinds (size, colour, shape) a caption says, counts included, and those the scene
    shows mostly visible: a caption is right about its objects when the two are equal."""
    said: Counter = Counter()
    for m in parsed.mentions:
        said[m.key] += m.count
    return said, Counter(o.kind for o in objs if o.named)


def names_each_kind_once(parsed: ParsedCaption) -> bool:
    """Whether identical objects are counted, as the world's captions count them ("two red
    circles"), not named one by one ("a red circle and a red circle", which
    `caption_correctness` accepts: the same objects are named)."""
    return len({m.key for m in parsed.mentions}) == len(parsed.mentions)


def caption_correctness(
    text: str | Sequence[str], objects: Sequence[SceneObject | Mapping]
) -> dict:
    """Check a caption against a scene's objects.

    Returns ``objects_correct`` (the mentioned objects, counts included, are exactly the
    scene's named — mostly visible — objects, as a multiset), ``relations_correct`` (``None`` if
    no relation is stated, else whether all are true, for every member of a counted group),
    ``matches`` (see :func:`match_mentions`), ``groups`` (see :func:`match_groups`) and the
    ``parsed`` caption.
    """
    parsed = parse_caption(text)
    objs = [as_object(o) for o in objects]
    mentioned, present = said_and_present(parsed, objs)
    groups = match_groups(parsed, objs)
    relations_correct: bool | None = None
    if parsed.relations:
        relations_correct = all(
            groups[i] and groups[j] and i != j
            and all(relation_between(objs[a], objs[b]) == rel
                    for a in groups[i] for b in groups[j])
            for i, rel, j in parsed.relations
        )
    return {
        "objects_correct": mentioned == present,
        "relations_correct": relations_correct,
        "matches": [g[0] if g else None for g in groups],
        "groups": groups,
        "parsed": parsed,
    }


def caption_mistakes(text: str | Sequence[str], objects: Sequence[SceneObject | Mapping]
                     ) -> Counter:
    """What a caption got wrong about its scene's objects, one count per object.

    An object said with one attribute off is a ``"size"``, ``"colour"`` or ``"shape"`` mistake,
    or ``"... borrowed"`` when the wrong value belongs to another object in the scene (an
    attention model that mixes up two objects does this). Then ``"count too high"``/``"count
    too low"`` for right kinds said too often or too rarely, ``"left out"`` for objects not
    mentioned at all and ``"made up"`` for mentions that match nothing."""
    objs = [as_object(o) for o in objects]
    said, present = said_and_present(parse_caption(text), objs)
    missing, extra = present - said, said - present
    mistakes: Counter = Counter()
    # in the scene's and the caption's order (a caption may leave a size or colour out: None)
    for kind in list(missing.elements()):
        near = [e for e in extra if sum(a != b for a, b in zip(kind, e)) == 1]
        if not near:
            continue
        wrong = near[0]
        i = next(i for i, (a, b) in enumerate(zip(kind, wrong)) if a != b)
        borrowed = any(o.kind[i] == wrong[i] for o in objs if o.named)
        mistakes[("size", "colour", "shape")[i] + (" borrowed" if borrowed else "")] += 1
        missing[kind] -= 1
        extra[wrong] -= 1
        missing, extra = +missing, +extra
    for kind, n in missing.items():
        mistakes["count too low" if kind in said else "left out"] += n
    for kind, n in extra.items():
        mistakes["count too high" if kind in present else "made up"] += n
    return mistakes
