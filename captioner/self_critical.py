"""Self-critical sequence training (Rennie et al., CVPR 2017), rewarded by what a scene shows.

Teacher forcing trains each word given the right words before it; at test time the model
follows its own words, and a slip early in a crowded scene's caption is never trained against
(greedy decoding trails beam search by six points on scenes-v2). Here the model also samples
whole captions and is rewarded for what they say: the scene worlds check every caption
exactly (captioner.scenes.captions), so the reward is the metric itself, not a proxy for it.

Each image gets `samples` captions; each caption's baseline is the mean reward of the others
for the same image (Luo 2020, "a better variant of self-critical sequence training"), so no
greedy decode is needed and an image whose captions all score the same teaches nothing.

The reward alone lets the words drift from the world's grammar and the looks from the
objects (a first run named three identical objects one by one and pointed 10 points worse;
docs/worlds.md). So a caption is exactly right only when it counts identical objects as the
world does, and with `ground` the drawn captions' own words pay the grounding loss too
(captioner.grounding): the pointing game scores the model's own captions, not the references.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from captioner.evaluation import objects_of
from captioner.grounding import grounding_loss, word_objects
from captioner.scenes.captions import (
    caption_correctness,
    names_each_kind_once,
    said_and_present,
)
from captioner.scenes.objects import SceneObject, as_object

# What a stated relation that is false costs: the objects can be right and the caption not.
RELATION_COST = 0.5


def scene_reward(tokens: Sequence[str], objects: Sequence[SceneObject | Mapping]) -> float:
    """How right a caption is about its scene, from -0.5 to 2.

    The share of objects said right (the kinds said and shown, counts included, that agree,
    over the larger of the two totals) gives partial credit; exactly right adds 1, so the
    step from almost to exactly right counts as much as all the steps below it, but only if
    each kind is named once (identical objects counted: "two red circles", never "a red
    circle and a red circle"); a stated relation that is false costs `RELATION_COST`."""
    objects = [as_object(o) for o in objects]
    result = caption_correctness(tokens, objects)
    parsed = result["parsed"]
    said, present = said_and_present(parsed, objects)
    larger = max(1, sum(said.values()), sum(present.values()))
    shared = sum((said & present).values()) / larger
    return (shared + float(result["objects_correct"] and names_each_kind_once(parsed))
            - RELATION_COST * (result["relations_correct"] is False))


def sample_captions(model, features: torch.Tensor, samples: int, max_len: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw `samples` captions per image from the model's own word distribution.

    Returns the word ids (B * samples, T), rows in image order and padded after <end>, each
    caption's summed log-probability (B * samples,), with the gradient of the words drawn,
    and each word's attention (B * samples, T, P), with theirs. <pad> and <start> are never
    drawn (as in captioner.decoding)."""
    vocab = model.vocab
    features = features.repeat_interleave(samples, dim=0)
    rows = features.shape[0]
    never = torch.zeros(len(vocab), dtype=torch.bool, device=features.device)
    never[[vocab.pad_id, vocab.start_id]] = True
    state, projected = model.init_state(features)
    words = torch.full((rows,), vocab.start_id, dtype=torch.long, device=features.device)
    done = torch.zeros(rows, dtype=torch.bool, device=features.device)
    steps, log_probs, alphas = [], [], []
    for _ in range(max_len):
        logits, state, alpha, _ = model.step(words, state, features, projected)
        alphas.append(alpha)
        logp = logits.float().masked_fill(never, float("-inf")).log_softmax(dim=1)
        with torch.no_grad():
            drawn = torch.multinomial(logp.exp(), 1).squeeze(1)
        drawn = torch.where(done, vocab.end_id, drawn)  # a finite log-probability to mask
        said = logp.gather(1, drawn.unsqueeze(1)).squeeze(1)
        log_probs.append(torch.where(done, torch.zeros_like(said), said))
        steps.append(torch.where(done, vocab.pad_id, drawn))
        done = done | (drawn == vocab.end_id)
        words = drawn
        if done.all():
            break
    return torch.stack(steps, 1), torch.stack(log_probs, 1).sum(dim=1), torch.stack(alphas, 1)


def leave_one_out(rewards: torch.Tensor, samples: int) -> torch.Tensor:
    """Each reward minus the mean of the other samples' rewards for the same image."""
    per_image = rewards.view(-1, samples)
    others = (per_image.sum(dim=1, keepdim=True) - per_image) / (samples - 1)
    return (per_image - others).view(-1)


def self_critical_loss(model, features: torch.Tensor, scenes: Sequence[Sequence[SceneObject]],
                       samples: int, max_len: int, cells: torch.Tensor | None = None,
                       ground: float = 0.0, each_object: bool = False
                       ) -> tuple[torch.Tensor, float]:
    """The REINFORCE loss of `samples` captions drawn per image, with the leave-one-out
    baseline, and the captions' mean reward (for the progress bar and the log). With
    `ground` > 0 and the images' object `cells` (B, O, P, in `scenes`' object order), plus
    `ground` times the grounding loss of the drawn captions' words."""
    if samples < 2:
        raise ValueError("self-critical training needs at least 2 samples per image")
    ids, log_probs, alphas = sample_captions(model, features, samples, max_len)
    vocab = model.vocab
    captions = [vocab.decode(row) for row in ids.tolist()]
    rewards = torch.tensor([scene_reward(words, scenes[i // samples])
                            for i, words in enumerate(captions)], device=log_probs.device)
    loss = -(leave_one_out(rewards, samples) * log_probs).mean()
    if ground:
        bits = torch.zeros(ids.shape, dtype=torch.long, device=ids.device)
        for i, words in enumerate(captions):  # word t of `ids` is token t + 1 of the bits
            named = word_objects(" ".join(words), scenes[i // samples], ids.shape[1])[1:]
            bits[i, :len(named)] = torch.tensor(named[:ids.shape[1]])
        loss = loss + ground * grounding_loss(alphas, bits,
                                              cells.repeat_interleave(samples, dim=0),
                                              each_object)
    return loss, rewards.mean().item()


def scene_objects(split) -> list[list[SceneObject]]:
    """Each image's objects, for the rewards (a split of a scene world)."""
    return [[as_object(o) for o in objects_of(v)] for v in split["objects"]]
