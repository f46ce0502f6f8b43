"""One training batch and what it costs: `Pairs` reads (image input, caption ids) and, for
the scene worlds, the scene's ground truth; `Objective` turns a batch into the loss (caption
cross-entropy, attention penalty, and captioner.grounding's and captioner.self_critical's
losses when asked for)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from captioner.grounding import (
    COLOUR,
    SceneTruth,
    attribute_ids,
    cell_words_loss,
    grounding_loss,
    steering_loss,
)
from captioner.model import Captioner
from captioner.preprocess import normalise
from captioner.scenes.objects import SceneObject
from captioner.self_critical import self_critical_loss


class Objective(nn.Module):
    """Loss of a batch, as one module so DDP sees a single forward pass.

    Inputs are cached encoder features, or uint8 pixels when the encoder is trained too. With
    scene truth (`Pairs(..., truth=...)`), the grounding, steering and cell-word losses of
    captioner.grounding are added with weight `ground` (per object of a counted group with
    `ground_each_object`), share `steer` (through the word classifier alone with
    `steer_classifier_only`) and weight `cell_words`. With `self_critical` > 0 and the
    training images' `scenes`, the batch also carries each pair's image index, and
    `self_critical` times captioner.self_critical's loss over `samples` captions drawn per
    pair (at most `max_len` words, their own words grounded with weight `ground`) is added;
    `last_reward` keeps their mean reward."""

    def __init__(self, model: Captioner, penalty: float, pixels: bool, ground: float = 0.0,
                 steer: float = 0.0, cell_words: float = 0.0,
                 steer_classifier_only: bool = False, ground_each_object: bool = False,
                 self_critical: float = 0.0,
                 scenes: list[list[SceneObject]] | None = None, samples: int = 4,
                 max_len: int = 20):
        super().__init__()
        if self_critical and scenes is None:
            raise ValueError("self-critical training needs the training images' scenes")
        self.self_critical, self.scenes, self.samples = self_critical, scenes, samples
        self.max_len, self.last_reward = max_len, None
        self.model, self.penalty, self.pixels = model, penalty, pixels
        self.ground, self.steer, self.cell_words = ground, steer, cell_words
        self.steer_classifier_only = steer_classifier_only
        self.ground_each_object = ground_each_object
        self.kinds = attribute_ids(model.vocab)

    def forward(self, inputs, captions, *truth):
        # Captions are padded to max_caption_len; decoding past the batch's longest is waste.
        longest = int((captions != self.model.vocab.pad_id).sum(dim=1).max())
        captions = captions[:, :longest]
        if self.pixels:
            cfg = self.model.config
            features = self.model.encode(normalise(inputs, cfg.image_mean, cfg.image_std))
        else:
            features = inputs.float()
        if not truth:
            return self.model.loss(features, captions, self.penalty)
        cells, attributes, named, bits, *images = truth
        bits = bits[:, :longest]
        total, ce, alphas = self.model.loss(features, captions, self.penalty,
                                            return_alphas=True)
        if self.ground:
            total = total + self.ground * grounding_loss(alphas, bits[:, 1:], cells,
                                                         self.ground_each_object)
        if self.steer:
            total = total + steering_loss(self.model, features, captions, bits,
                                          attributes[..., COLOUR], named, cells, self.steer,
                                          classifier_only=self.steer_classifier_only)
        if self.cell_words:
            total = total + self.cell_words * cell_words_loss(self.model, features, cells,
                                                              attributes, named, self.kinds)
        if self.self_critical:
            loss, self.last_reward = self_critical_loss(
                self.model, features, [self.scenes[i] for i in images[0].tolist()],
                self.samples, self.max_len, cells, self.ground, self.ground_each_object)
            total = total + self.self_critical * loss
        return total, ce


class Pairs(torch.utils.data.Dataset):
    """(image input, caption ids) pairs read from the memory-mapped cache, with the scene's
    `SceneTruth` rows (object cells, attributes, named, the caption's word objects) if given,
    and then the image's index if `indices` (what self-critical training rewards against)."""

    def __init__(self, inputs: np.ndarray, captions: np.ndarray, pairs: np.ndarray,
                 truth: SceneTruth | None = None, indices: bool = False):
        self.inputs, self.captions, self.pairs, self.truth = inputs, captions, pairs, truth
        self.indices = indices

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image, caption = self.pairs[i]
        item = (torch.from_numpy(self.inputs[image]),
                torch.from_numpy(self.captions[image, caption].astype(np.int64)))
        if self.truth is None:
            return item
        t = self.truth
        item += (torch.from_numpy(t.cells[image]), torch.from_numpy(t.attributes[image]),
                 torch.from_numpy(t.named[image]),
                 torch.from_numpy(t.words[image, caption].astype(np.int64)))
        return item + (torch.tensor(image),) if self.indices else item
