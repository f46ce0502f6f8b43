"""Evaluation without teacher forcing: standard caption metrics and, on scenes, whether the
captions are right and whether attention points at the object being named."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from captioner.decoding import BATCH_SIZE, Caption, Guide, box_map, decode, images_to_batch
from captioner.preprocess import to_rgb
from captioner.scenes import COLORS, caption_correctness, world_of
from captioner.scenes.objects import MIN_VISIBLE
from captioner.visualize import upsample_attention
from captioner.vocab import tokenize


def java_available() -> bool:
    if shutil.which("java") is None:
        return False
    return subprocess.run(["java", "-version"], capture_output=True).returncode == 0


def coco_format(references: list[list[str]], hypotheses: list[str]):
    """pycocoevalcap wants {id: [tokenised caption, ...]}; it chokes on empty strings."""
    refs = {i: [" ".join(tokenize(r)) or "<empty>" for r in rs] for i, rs in enumerate(references)}
    hyps = {i: [" ".join(tokenize(h)) or "<empty>"] for i, h in enumerate(hypotheses)}
    return refs, hyps


def bleu4(references: list[list[str]], hypotheses: list[str]) -> float:
    from pycocoevalcap.bleu.bleu import Bleu

    return round(100 * Bleu(4).compute_score(*coco_format(references, hypotheses),
                                             verbose=0)[0][3], 2)


def caption_metrics(references: list[list[str]], hypotheses: list[str], *,
                    meteor: bool = True) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr from pycocoevalcap, on the 0-100 scale.

    Captions are tokenised with our own tokeniser (the same as training) rather than the PTB
    tokeniser, which needs Java. METEOR needs Java too: without it the metric is skipped and
    `skipped` says so.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = coco_format(references, hypotheses)
    scores: dict = {}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    scores.update({f"bleu{n + 1}": 100 * b for n, b in enumerate(bleu)})
    scores["rouge_l"] = 100 * Rouge().compute_score(refs, hyps)[0]
    scores["cider"] = 100 * Cider().compute_score(refs, hyps)[0]
    if not meteor:
        scores["skipped"] = ["meteor: not requested"]
    elif java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            scores["meteor"] = 100 * scorer.compute_score(refs, hyps)[0]
        finally:
            del scorer  # its __del__ stops the Java process
    else:
        scores["skipped"] = ["meteor: needs Java, which is not installed"]
    return {k: (round(float(v), 2) if not isinstance(v, list) else v) for k, v in scores.items()}


def pointing_words(caption: Caption, objects: list[dict], width: int, height: int,
                   centres: np.ndarray, tolerance: float) -> list[dict]:
    """For every named object, at its colour word and at its shape word (and, for counted
    objects, at the count word): is the peak of the upsampled attention inside the object's
    box widened by `tolerance` pixels (for counted objects, inside any of their boxes)? One
    dict per word: its index, its `kind` (count, colour, shape), the object's index
    (`objects`: all of a counted mention's), the `peak` (x, y pixel centre), `hit`, and the
    chance a uniformly random peak hits."""
    words = []
    result = caption_correctness(caption.tokens, objects)
    for mention, group in zip(result["parsed"].mentions, result["groups"]):
        if not group:
            continue
        boxes = []
        for k in group:
            x0, y0, x1, y1 = objects[k]["box"]
            boxes.append((max(0, x0 - tolerance), max(0, y0 - tolerance),
                          min(width, x1 + tolerance), min(height, y1 + tolerance)))
        chance = box_union_share(boxes, width, height)
        for kind, index in mention.named_words:
            if index >= len(caption.attention):
                continue
            heat = upsample_attention(caption.attention[index], width, height, centres)
            y, x = np.unravel_index(np.argmax(heat), heat.shape)
            px, py = float(x) + 0.5, float(y) + 0.5
            hit = any(x0 <= px <= x1 and y0 <= py <= y1 for x0, y0, x1, y1 in boxes)
            words.append({"word_index": index, "kind": kind, "object": group[0],
                          "objects": group, "peak": (px, py), "hit": hit, "chance": chance})
    return words


def box_union_share(boxes: list[tuple], width: int, height: int) -> float:
    """The share of the image that (x0, y0, x1, y1) pixel boxes cover together."""
    if len(boxes) == 1:
        x0, y0, x1, y1 = boxes[0]
        return (x1 - x0) * (y1 - y0) / (width * height)
    # pixel centres inside any box, the same test as a hit
    xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        covered |= ((xs[None, :] >= x0) & (xs[None, :] <= x1)
                    & (ys[:, None] >= y0) & (ys[:, None] <= y1))
    return float(covered.mean())


@dataclass
class SteeringTrial:
    """At `position` (A's colour word) look at object B's box: does the model say `expected`?"""

    image: int
    guide: Guide
    position: int
    expected: str


def steering_trials(model, captions: list[Caption], objects: list[list[dict]],
                    image_size: int) -> list[SteeringTrial]:
    """One trial per scene with objects of at least two colours whose greedy caption names a
    scene object A with its colour (first mention): keep the caption's words before A's colour
    word, and at that word put all attention evenly on the first object B of another colour."""
    centres = model.encoder.cell_centres()
    trials = []
    for i, (caption, objs) in enumerate(zip(captions, objects)):
        result = caption_correctness(caption.tokens, objs)
        first = next(((m, k) for m, k in zip(result["parsed"].mentions, result["matches"])
                      if k is not None and m.color_index is not None), None)
        if first is None:
            continue
        mention, a = first
        other = next((o for o in objs if o["color"] != objs[a]["color"]
                      and o.get("visible", 1.0) >= MIN_VISIBLE), None)
        if other is None:
            continue
        box = [v / image_size for v in other["box"]]
        position = mention.color_index
        guide = Guide(prefix=caption.tokens[:position],
                      attention={position: box_map(centres, box)})
        trials.append(SteeringTrial(i, guide, position, other["color"]))
    return trials


@torch.inference_mode()
def steered_words(model, features: torch.Tensor, captions: list[Caption],
                  objects: list[list[dict]]) -> list[bool]:
    """Run the steering trials of one batch of scenes (encoded as `features`, with their greedy
    `captions`): for each, did the model say B's colour?"""
    trials = steering_trials(model, captions, objects, model.config.image_size)
    if not trials:
        return []
    index = torch.tensor([t.image for t in trials], device=features.device)
    steered = decode(model, features[index], beam_size=1,
                     max_len=max(t.position for t in trials) + 1,
                     guide=[t.guide for t in trials])
    return [len(c.tokens) > t.position and c.tokens[t.position] == t.expected
            for c, t in zip(steered, trials)]


def steering_summary(said: list[bool], colours: int = len(COLORS)) -> dict:
    """Steering accuracy beside chance (a colour picked at random from the world's
    `colours`; scenes-v1 has five)."""
    return {"steering": round(float(np.mean(said)), 4) if said else None,
            "steering_chance": round(1 / colours, 4), "steering_trials": len(said)}


def scene_metrics(captions: list[Caption], objects: list[list[dict]], image_size: int,
                  centres: np.ndarray, grid_size: int) -> dict:
    """Exact content, relations and pointing accuracy on generated scenes.

    `relations_correct` is over multi-object captions that state a relation ("a X and a Y"
    states none, as some reference wordings do); `relations_stated` says how often they do.
    `pointing` allows one grid cell around the box; `pointing_strict` allows none;
    `pointing_count`, `_colour` and `_shape` split `pointing` by the kind of word (a model
    that says a colour from memory may look elsewhere at that word: docs/worlds.md)."""
    correct, stated, relations = [], [], []
    words, strict_words = [], []
    for caption, objs in zip(captions, objects):
        result = caption_correctness(caption.tokens, objs)
        correct.append(result["objects_correct"])
        if len(objs) > 1:
            stated.append(result["relations_correct"] is not None)
            if result["relations_correct"] is not None:
                relations.append(result["relations_correct"])
        for tolerance, found in ((image_size / grid_size, words), (0, strict_words)):
            found += pointing_words(caption, objs, image_size, image_size, centres, tolerance)
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else None  # noqa: E731
    metrics = {"objects_correct": mean(correct), "relations_correct": mean(relations),
               "relations_stated": mean(stated), "pointing": mean([w["hit"] for w in words]),
               "pointing_chance": mean([w["chance"] for w in words]),
               "pointing_strict": mean([w["hit"] for w in strict_words]),
               "pointing_strict_chance": mean([w["chance"] for w in strict_words]),
               "pointing_trials": len(words)}
    for kind in ("count", "colour", "shape"):
        metrics[f"pointing_{kind}"] = mean([w["hit"] for w in words if w["kind"] == kind])
    return metrics


def objects_of(value) -> list[dict]:
    """A scene's objects, whether the dataset kept them as a list or as a JSON string."""
    return json.loads(value) if isinstance(value, str) else value


def split_features(model, split, *, batch_size: int = 64, features=None, desc: str = "decoding"):
    """(start, encoded batch) over a dataset split, from cached features when given."""
    model.eval()
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(split), batch_size), desc=desc, leave=False):
        stop = min(start + batch_size, len(split))
        if features is not None:
            yield start, torch.from_numpy(np.array(features[start:stop])).to(device).float()
        else:
            images = [to_rgb(row["image"]) for row in split.select(range(start, stop))]
            yield start, model.encode(images_to_batch(model, images))


@torch.inference_mode()
def generate_for_split(model, split, *, beam_size: int, max_len: int,
                       batch_size: int = BATCH_SIZE, features=None,
                       desc: str = "decoding") -> list[Caption]:
    """Captions for every image of a dataset split (from cached features when given)."""
    captions: list[Caption] = []
    for _, batch in split_features(model, split, batch_size=batch_size, features=features,
                                   desc=desc):
        captions += decode(model, batch, beam_size=beam_size, max_len=max_len)
    return captions


@torch.inference_mode()
def steering_for_split(model, split, greedy_captions: list[Caption], objects: list[list[dict]],
                       *, batch_size: int = BATCH_SIZE, features=None) -> dict:
    """Steering accuracy over a scenes split, given its greedy captions."""
    said = []
    for start, batch in split_features(model, split, batch_size=batch_size, features=features,
                                       desc="steering"):
        stop = start + len(batch)
        said += steered_words(model, batch, greedy_captions[start:stop], objects[start:stop])
    world = world_of(model)
    return steering_summary(said, len(world.colors) if world else len(COLORS))


def evaluate_split(model, split, *, beam_size: int, max_len: int, batch_size: int = BATCH_SIZE,
                   features=None, full: bool = True, meteor: bool = True) -> dict:
    """All metrics for one split; `full=False` (per-epoch validation) computes BLEU only."""
    captions = generate_for_split(model, split, beam_size=beam_size, max_len=max_len,
                                  batch_size=batch_size, features=features,
                                  desc=f"decoding (beam {beam_size})")
    references = split["captions"]
    hypotheses = [c.text for c in captions]
    if full:
        metrics = caption_metrics(references, hypotheses, meteor=meteor)
    else:
        metrics = {"bleu4": bleu4(references, hypotheses)}
    if "objects" in split.column_names:
        objects = [objects_of(o) for o in split["objects"]]
        cfg = model.config
        metrics.update(scene_metrics(captions, objects, cfg.image_size,
                                     model.encoder.cell_centres(), cfg.grid_size))
        if full and beam_size == 1:  # steering starts from the model's own greedy caption
            metrics.update(steering_for_split(model, split, captions, objects,
                                              batch_size=batch_size, features=features))
    metrics["examples"] = [{"caption": c.text, "references": r[:2]}
                           for c, r in zip(captions[:5], references[:5])]
    return metrics


def held_out_named(captions: list[Caption], objects: list[list[dict]], pairs) -> float | None:
    """Of the mostly visible objects whose colour-shape pair is in `pairs`, the share that
    the captions name with the right size, colour and shape (and count)."""
    named = []
    for caption, objs in zip(captions, objects):
        matched = {k for group in caption_correctness(caption.tokens, objs)["groups"]
                   for k in group}
        named += [k in matched for k, o in enumerate(objs)
                  if (o["color"], o["shape"]) in pairs and o.get("visible", 1.0) >= MIN_VISIBLE]
    return round(float(np.mean(named)), 4) if named else None


def compositional_metrics(model, split, *, beam_size: int, max_len: int,
                          batch_size: int = BATCH_SIZE) -> dict:
    """Scene metrics on held-out scenes (each shows a colour-shape pair never trained on),
    plus `held_out_named`: how often those very objects are named right."""
    captions = generate_for_split(model, split, beam_size=beam_size, max_len=max_len,
                                  batch_size=batch_size,
                                  desc=f"held-out pairs (beam {beam_size})")
    objects = [objects_of(o) for o in split["objects"]]
    cfg = model.config
    metrics = {"bleu4": bleu4(split["captions"], [c.text for c in captions])}
    metrics.update(scene_metrics(captions, objects, cfg.image_size,
                                 model.encoder.cell_centres(), cfg.grid_size))
    metrics["held_out_named"] = held_out_named(captions, objects,
                                               set(world_of(model).held_out_pairs))
    metrics["examples"] = [{"caption": c.text, "references": r[:2]}
                           for c, r in zip(captions[:5], split["captions"][:5])]
    return metrics

