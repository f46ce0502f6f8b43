"""Several captioners of one architecture decoding as one model.

At each word every member reads its own feature grid of the image and gives its next-word
probabilities; the ensemble says the word their mean makes likeliest, and every member goes on
from that word. The attention map of a word is the mean of the members' maps, so the explorer,
pointing and steering see one map per word as with a single model (a "look here" map steers
every member). Members trained apart make their binding mistakes (a neighbour's shape) in
partly different scenes, and the mean of their probabilities keeps what they agree on:
docs/worlds.md measures the gain.

`python -m captioner ensemble A B --output DIR` writes one; `load_model` loads it like any
model (config.json with `"members": N`, one model.safetensors with every member's weights).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from captioner.model import Captioner, CaptionerConfig, DecoderState, load_pretrained, save_model
from captioner.vocab import Vocabulary


@dataclass
class EnsembleState:
    """Each member's decoder state, one row per caption/hypothesis in all of them."""

    members: list[DecoderState]

    def select(self, index: torch.Tensor) -> EnsembleState:
        return EnsembleState([state.select(index) for state in self.members])


class Ensemble(nn.Module, PyTorchModelHubMixin, library_name="captioner",
               tags=["image-captioning", "show-attend-and-tell", "attention"],
               pipeline_tag="image-to-text", license="mit"):
    """`config.members` captioners with `config`'s architecture; the decoding primitives of
    `Captioner` (encode, init_state, step, forward), so every decoder, evaluation and the app
    use it unchanged. It is for captioning: training starts from one model."""

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        if isinstance(config, dict):
            config = CaptionerConfig(**config)
        if config.members < 2:
            raise ValueError(f"an ensemble needs 2 or more members, config has {config.members}")
        self.config = config
        self.vocab = Vocabulary(config.vocab)
        self.members = nn.ModuleList(Captioner(replace(config, members=1))
                                     for _ in range(config.members))

    @property
    def encoder(self):
        """The first member's encoder, for what all members share: the grid's cell centres."""
        return self.members[0].encoder

    @property
    def attention(self) -> nn.ModuleList:
        return nn.ModuleList(member.attention for member in self.members)

    def _split(self, grid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A concatenated (B, P, sum of D) grid -> each member's part."""
        return torch.split(grid, grid.shape[2] // len(self.members), dim=2)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, P, members x D): each member's feature grid, side by side."""
        return torch.cat([member.encode(images) for member in self.members], dim=2)

    def image_channel_mask(self) -> torch.Tensor:
        return torch.cat([member.image_channel_mask() for member in self.members])

    def init_state(self, features: torch.Tensor) -> tuple[EnsembleState, torch.Tensor]:
        states, projected = zip(*(member.init_state(grid) for member, grid in
                                  zip(self.members, self._split(features))))
        return EnsembleState(list(states)), torch.cat(projected, dim=2)

    def step(self, words, state: EnsembleState, features, projected, override=None, read=None):
        """One word: log of the members' mean next-word probabilities (B, V) in place of
        logits (a softmax leaves them as they are), the new state, and the mean attention
        (B, P) and mean gate (B, D); `override` steers every member."""
        probs = alpha = gate = 0
        states = []
        for member, own, grid, proj in zip(self.members, state.members, self._split(features),
                                           self._split(projected)):
            logits, own, member_alpha, member_gate = member.step(words, own, grid, proj,
                                                                 override, read)
            probs = probs + logits.float().softmax(dim=1)
            alpha = alpha + member_alpha
            gate = gate + member_gate
            states.append(own)
        n = len(self.members)
        return (probs / n).log(), EnsembleState(states), alpha / n, gate / n

    def forward(self, features: torch.Tensor, captions: torch.Tensor, read=None):
        """Teacher forcing: every member reads the given words, so each runs on its own;
        (B, L-1, V) log of their mean probabilities and (B, L-1, P) mean attention for
        predicting captions[:, 1:], as `step` gives word by word."""
        outputs = [member(grid, captions, read)
                   for member, grid in zip(self.members, self._split(features))]
        probs = torch.stack([logits.float().softmax(dim=2) for logits, _ in outputs]).mean(0)
        return probs.log(), torch.stack([alphas for _, alphas in outputs]).mean(0)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download,
                         local_files_only, token, map_location="cpu", strict=True, **kwargs):
        return load_pretrained(cls(**kwargs), model_id, revision=revision, cache_dir=cache_dir,
                               force_download=force_download, local_files_only=local_files_only,
                               token=token, map_location=map_location)

    def save(self, directory: str | Path, half: bool = False) -> Path:
        return save_model(self, directory, half)


def build_ensemble(sources: list[str]) -> Ensemble:
    """One ensemble of the saved single models in `sources` (folders or Hub ids), refused in
    one line unless they share vocabulary, architecture and world."""
    from captioner.averaging import load_alike

    models = load_alike(sources, "an ensemble",
                        "an ensemble's members share one vocabulary, architecture and world")
    if any(model.config.members != 1 for model in models):
        raise ValueError("an ensemble's members must be single models, not ensembles")
    ensemble = Ensemble(replace(models[0].config, members=len(models)))
    for slot, model in zip(ensemble.members, models):
        slot.load_state_dict(model.state_dict())
    return ensemble.eval()
