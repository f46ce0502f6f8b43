"""The page's shareable link. explorer.js records the view in the page address (example or lab
scene and seed, beam, length, forced words, look-here point, selected word, and the model's
attention kind where the app offers soft and hard); when a page opens,
`parse_link` checks those fields one by one and `open_link` rebuilds the same view. Uploads are
never named in a link: a picture is shared only as an example or a lab scene."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from captioner.demo.core import DEFAULT_BEAM, Demo, Look, View
from captioner.demo.inputs import check_int


def parse_link(query: Mapping) -> dict:
    """A shared link's fields (explorer.js `share` writes them), checked one by one: a bad
    field is a ValueError naming it. Unknown fields are ignored."""
    link: dict = {}

    def number(name, kind=int):
        try:
            return kind(query[name])
        except (TypeError, ValueError):
            raise ValueError(f"the link's '{name}' is not a number: {query[name]!r}") from None

    for name in ("example", "scene", "beam", "len", "word"):
        if query.get(name) not in (None, ""):
            link[name] = number(name)
    if query.get("prefix"):
        link["prefix"] = str(query["prefix"])
    if query.get("model"):  # checked against the models offered by `open_link`
        link["model"] = str(query["model"])
    if query.get("look"):
        parts = str(query["look"]).split(",")
        try:
            link["look"] = Look(int(parts[0]), float(parts[1]), float(parts[2]))
        except (IndexError, ValueError):
            raise ValueError(f"the link's 'look' must be word,x,y: {query['look']!r}") from None
    if query.get("compose"):
        specs = []
        for part in str(query["compose"]).split("_"):
            fields = part.split("-")
            try:
                shape, color, size, x, y = fields
                specs.append({"shape": shape, "color": color, "size": size,
                              "position": (float(x), float(y))})
            except ValueError:
                raise ValueError("the link's 'compose' must be shape-colour-size-x-y objects "
                                 f"joined by _: {part!r}") from None
        link["compose"] = specs
    return link


@dataclass
class Opened:
    """What a link shows: the picture for the input component, the settings, the view (None
    when there is nothing to show) and the scene lab's verdict."""

    picture: str | Image.Image | None
    beam_size: int
    max_len: int
    view: View | None
    truth: str = ""


def open_link(model: Demo, examples: list[str], link: dict) -> Opened:
    """The view a parsed link names; without one, the first example. Bad values raise
    ValueError with a message for the visitor."""
    model = model.using(link.get("model"))  # the soft or hard model the link names
    beam_size, max_len = link.get("beam", DEFAULT_BEAM), link.get("len", model.default_max_len)
    steer = {"prefix": link.get("prefix", ""), "look": link.get("look")}
    if "scene" in link or "compose" in link:
        if not model.knows_scenes:
            raise ValueError("this model has no scene lab: open the page without the link's "
                             "scene")
        picture, view, truth = (model.new_scene(link["scene"], beam_size, max_len)
                                if "scene" in link else
                                model.compose(link["compose"], beam_size, max_len))
        if steer["prefix"] or steer["look"]:  # the lab's verdict is about its own caption
            view = model.view(picture, beam_size, max_len, **steer,
                              source=view.explorer["source"])
    elif examples:
        number = check_int("the link's example", link.get("example", 0), 0, len(examples) - 1)
        picture, truth = examples[number], ""
        view = model.view(picture, beam_size, max_len, **steer, source={"example": number})
    else:
        return Opened(None, beam_size, max_len, None)
    view.explorer["word"] = link.get("word")
    return Opened(picture, beam_size, max_len, view, truth)
