"""Teaching attention to look at what each word names, where a world knows its objects.

Three optional training signals for the scene worlds, each off unless asked for
(`--ground-attention`, `--steer-words`, `--cell-words`), all built from the generator's ground
truth:

- **grounding**: every word that names objects (count, size, colour and shape word) pays
  -log of the attention it puts on those objects' cells, as in Liu et al.'s "attention
  correctness" supervision (AAAI 2017); with `--ground-each-object` a counted group's words
  pay for each of its objects, so that the look that says "two" sees both. Crowded scenes
  fail by *binding* (a colour read on one object, a shape on its neighbour; docs/worlds.md);
  a map that stays on one object cannot mix them.
- **steering**: for a share of captions one colour word is predicted a second time with the
  attention put evenly on another object of another colour, and must name *that* colour. The
  LSTM remembers the object it was describing; this teaches the word to follow the look, and
  so makes it only as right as the look (docs/worlds.md measures what each costs).
- **cell words** (`--cell-words`): the look must be worth following. Every named object's
  cells, read alone as the attended context (the mean feature of its box, what a steered look
  reads) with an empty memory, must make the word classifier say the object's size, colour and
  shape word. A cell that also sees its neighbour (`benchmarks/cell_probe.py`) pays for it,
  which pushes the encoder to keep objects apart (docs/worlds.md measures what it did).

The evaluation's pointing and steering then measure what was taught on unseen scenes; the
untaught measures of faithfulness are causal grounding and deletion (captioner.faithfulness).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from captioner.decoding import box_map
from captioner.scenes.captions import ALL_COLORS, ALL_SHAPES, ALL_SIZES, match_groups, parse_caption
from captioner.scenes.objects import as_object
from captioner.vocab import Vocabulary, tokenize


@dataclass
class SceneTruth:
    """What the loss needs to know about a split's scenes, as arrays indexed like the cache.

    `cells` (images, objects, P): the grid cells of each object's box (as `box_map` draws it);
    `attributes` (images, objects, 3): the vocabulary ids of each object's size, colour and
    shape word (in `ATTRIBUTES` order), -1 for none or a word the vocabulary lacks;
    `named` (images, objects): whether captions name it (mostly visible);
    `words` (images, captions, max_len + 2): for each caption id, a bit set of the objects
    the word names (bit k: object k), 0 for words that name none."""

    cells: np.ndarray
    attributes: np.ndarray
    named: np.ndarray
    words: np.ndarray

    @property
    def colours(self) -> np.ndarray:
        return self.attributes[..., COLOUR]


# The kinds of word `SceneTruth.attributes` holds, in order; each is told apart only from the
# words of its own kind by `cell_words_loss`.
ATTRIBUTES = (ALL_SIZES, tuple(ALL_COLORS), ALL_SHAPES)
COLOUR = 1


def word_objects(caption: str, objects, max_len: int) -> list[int]:
    """For `Vocabulary.encode(caption, max_len)`'s ids: the bit set of the scene objects each
    word names. A counted mention ("two red circles") names every object of its group."""
    tokens = tokenize(caption)[:max_len]
    parsed = parse_caption(tokens)
    bits = [0] * (len(tokens) + 2)  # <start> ... <end>
    for mention, group in zip(parsed.mentions, match_groups(parsed, objects)):
        mask = sum(1 << k for k in group)
        for index in (mention.count_index, mention.size_index, mention.color_index,
                      mention.shape_index):
            if index is not None:
                bits[index + 1] |= mask
    return bits


def scene_truth(split, vocab: Vocabulary, max_len: int, centres: np.ndarray,
                image_size: int) -> SceneTruth:
    """`SceneTruth` of a split with an ``objects`` column (the scene worlds)."""
    if "objects" not in split.column_names:
        raise ValueError("--ground-attention, --steer-words, --cell-words and --self-critical "
                         "need each image's objects (an 'objects' column with boxes): train on "
                         "a scene world, e.g. --dataset scenes-v2")
    scenes = [[as_object(o) for o in objs] for objs in split["objects"]]
    captions = split["captions"]
    most = max(1, max(len(s) for s in scenes))
    if most > 31:
        raise ValueError(f"a scene has {most} objects; grounding handles at most 31")
    per_image = max(len(c) for c in captions)
    cells = np.zeros((len(scenes), most, len(centres) ** 2), dtype=bool)
    attributes = np.full((len(scenes), most, len(ATTRIBUTES)), -1, dtype=np.int64)
    named = np.zeros((len(scenes), most), dtype=bool)
    words = np.zeros((len(scenes), per_image, max_len + 2), dtype=np.int32)
    for i, (objs, caps) in enumerate(zip(scenes, captions)):
        for k, o in enumerate(objs):
            cells[i, k] = box_map(centres, [v / image_size for v in o.box]).ravel() > 0
            attributes[i, k] = [vocab.index.get(w, -1) for w in (o.size, o.color, o.shape)]
            named[i, k] = o.named
        for j, caption in enumerate(caps):
            bits = word_objects(caption, objs, max_len)
            words[i, j, : len(bits)] = bits
    return SceneTruth(cells, attributes, named, words)


def named_objects(bits: torch.Tensor, objects: int) -> torch.Tensor:
    """Bit sets (...) -> (..., objects) bool: which objects each word names."""
    return (bits.unsqueeze(-1) >> torch.arange(objects, device=bits.device)) & 1 == 1


def grounding_loss(alphas: torch.Tensor, bits: torch.Tensor, cells: torch.Tensor,
                   each_object: bool = False) -> torch.Tensor:
    """Mean -log(attention on the named objects' cells) over the words that name objects.

    `alphas` (B, T, P) predict the words whose bit sets are `bits` (B, T); `cells` (B, O, P).
    A word that names a counted group ("two red circles") is satisfied by attention on the
    union of the group's cells, which one object alone can fill; with `each_object` it pays
    instead the mean of -log(attention on each object of the group), lowest when the look
    covers every object it counts (log N for N objects, evenly split)."""
    names = named_objects(bits, cells.shape[1])  # (B, T, O)
    grounded = names.any(dim=2)
    if each_object:
        per_object = (alphas.float() @ cells.float().transpose(1, 2)).clamp_min(1e-6).log()
        cost = -(per_object * names).sum(dim=2) / names.sum(dim=2).clamp_min(1)
    else:
        on_target = names.float() @ cells.float() > 0  # (B, T, P)
        cost = -(alphas.float() * on_target).sum(dim=2).clamp_min(1e-6).log()
    return (cost * grounded).sum() / grounded.sum().clamp_min(1)


def draw_steering(captions: torch.Tensor, bits: torch.Tensor, colours: torch.Tensor,
                  named: torch.Tensor, cells: torch.Tensor, share: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick, in about `share` of the captions, one colour word naming a scene object and a
    named object B of another colour. Returns the word's position in `captions` (-1: none),
    the attention map on B's cells (B, P) and B's colour id (the word to say instead)."""
    batch, objects = colours.shape
    rows = torch.arange(batch, device=captions.device)
    is_colour = (bits != 0) & torch.isin(captions, colours[colours >= 0])
    other = named.unsqueeze(1) & (colours.unsqueeze(1) != captions.unsqueeze(2))  # (B, L, O)
    candidate = is_colour & other.any(dim=2)
    candidate &= torch.rand(batch, 1, device=captions.device) < share
    position = torch.rand(candidate.shape, device=captions.device).masked_fill(
        ~candidate, -1).argmax(dim=1)
    choice = torch.rand(batch, objects, device=captions.device).masked_fill(
        ~other[rows, position], -1).argmax(dim=1)
    maps = cells[rows, choice].float()
    maps = maps / maps.sum(dim=1, keepdim=True).clamp_min(1)
    position = torch.where(candidate.any(dim=1), position, -1)
    return position, maps, colours[rows, choice]


def steered_logits(model, features: torch.Tensor, captions: torch.Tensor,
                   position: torch.Tensor, maps: torch.Tensor,
                   classifier_only: bool = False) -> torch.Tensor:
    """Logits (B, V) for the word at `position` of each caption, read with the attention
    replaced by `maps` at that word and teacher forcing before it (what `decode` with a
    `Guide` of the same prefix and attention computes one word at a time). With
    `classifier_only` only the word classifier gets a gradient: the LSTM, which also carries
    what the caption has said so far (counts, objects named), is left as the captions train it."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and not classifier_only):
        outputs = _steered_outputs(model, features, captions, position, maps)
    return model.classifier(model.dropout(outputs))


def _steered_outputs(model, features, captions, position, maps) -> torch.Tensor:
    """The classifier's input (B, hidden + feature) of `steered_logits`."""
    state, projected = model.init_state(features)
    steps = position - 1  # step t reads captions[:, t] and predicts captions[:, t + 1]
    outputs = torch.zeros(len(captions), model.classifier.in_features,
                          device=features.device, dtype=features.dtype)
    for t in range(int(steps.max()) + 1):
        here = steps == t
        output, state, _, _ = model.advance(captions[:, t], state, features, projected,
                                            override=(here, maps))
        outputs = torch.where(here.unsqueeze(1), output.to(outputs.dtype), outputs)
    return outputs


def steering_loss(model, features, captions, bits, colours, named, cells, share: float,
                  classifier_only: bool = False) -> torch.Tensor:
    """Cross-entropy of saying the steered-to object's colour (0 when no caption drew one);
    `classifier_only` as in `steered_logits`."""
    position, maps, target = draw_steering(captions, bits, colours, named, cells, share)
    chosen = position > 0
    if not chosen.any():
        return features.new_zeros(())
    logits = steered_logits(model, features[chosen], captions[chosen], position[chosen],
                            maps[chosen], classifier_only)
    return F.cross_entropy(logits.float(), target[chosen])


def attribute_ids(vocab: Vocabulary) -> list[torch.Tensor]:
    """For each kind of `ATTRIBUTES`: the vocabulary ids of its words the vocabulary has."""
    return [torch.tensor([vocab.index[w] for w in kind if w in vocab.index])
            for kind in ATTRIBUTES]


def cell_words_loss(model, features: torch.Tensor, cells: torch.Tensor,
                    attributes: torch.Tensor, named: torch.Tensor,
                    kinds: list[torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of each named object's size, colour and shape word, each told apart
    from the other words of its kind only, as the word classifier says them reading the
    object's cells alone: the mean feature of its box as the context, and zeros for the LSTM
    state. `features` (B, P, D), `cells` (B, O, P), `attributes` (B, O, 3), `named` (B, O);
    `kinds` from `attribute_ids`."""
    maps = cells.float()
    looks = (maps / maps.sum(dim=2, keepdim=True).clamp_min(1)) @ features.float()  # (B, O, D)
    keep = named & cells.any(dim=2)
    if not keep.any():
        return features.new_zeros(())
    looks, targets = looks[keep], attributes[keep]
    memory = looks.new_zeros(len(looks), model.classifier.in_features - looks.shape[1])
    logits = model.classifier(model.dropout(torch.cat([memory, looks], dim=1))).float()
    total, terms = logits.new_zeros(()), 0
    for k, ids in enumerate(kinds):
        ids = ids.to(logits.device)
        match = targets[:, k:k + 1] == ids  # (N, words of this kind)
        has = match.any(dim=1)
        if has.any():
            total = total + F.cross_entropy(logits[has][:, ids], match[has].float().argmax(dim=1),
                                            reduction="sum")
            terms += int(has.sum())
    return total / max(terms, 1)
