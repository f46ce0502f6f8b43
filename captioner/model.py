"""Show, Attend and Tell: a ResNet grid encoder, gated attention and an LSTM decoder.

Read top to bottom: the config, the encoder, the attention (soft, or the paper's stochastic
"hard" attention trained with REINFORCE), the decoder, and the `Captioner` that ties them
together and saves/loads itself as `model.safetensors` + `config.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models

from captioner.vocab import Vocabulary

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# What an encoder's features depend on besides its weights: a feature cache is keyed on these
# (a new decoder setting must not make a run encode 60,000 images again).
ENCODER_SETTINGS = ("encoder", "encoder_stage", "grid_size", "coord_channels", "image_size",
                    "image_mean", "image_std")
ATTENTION_KINDS = ("soft", "hard")
HARD_READOUTS = ("expectation", "argmax")
# Hard attention's training settings, those of the authors' code (arctic-captions, capgen.py):
SEMI_SAMPLING_P = 0.5  # chance that a batch reads one sampled cell per word (else: expectation)
LOCATION_CHANNELS, LOCATION_KERNEL = 8, 5  # location query: filters over the last map, width
ENTROPY_BONUS = 0.002  # weight of the attention entropy, against collapsing onto one cell early
BASELINE_DECAY = 0.9  # moving-average baseline: b <- 0.9 b + 0.1 mean reward


@dataclass
class CaptionerConfig:
    """Everything needed to rebuild the model and feed it images; saved as config.json.

    Whether the backbone started from ImageNet weights is deliberately *not* here: a saved model
    holds all its weights, so loading must never try to download a backbone.
    """

    vocab: list[str]
    encoder: str = "resnet50"
    encoder_stage: int = 4  # keep ResNet stages 1..N; early stages = small, local receptive fields
    grid_size: int = 7  # features are pooled to a grid_size x grid_size grid
    coord_channels: bool = True  # append (x, y) of each cell so relations/positions are learnable
    embed_dim: int = 256
    attention_dim: int = 512
    hidden_dim: int = 512
    dropout: float = 0.5
    image_size: int = 224
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # "soft": read the alpha-weighted mean of the grid. "hard": trained reading one cell drawn
    # from alpha (Xu et al. 2015, section 4.1); at test time it reads `hard_readout`: the
    # expectation (the soft mean) or the single most attended cell (argmax).
    attention: str = "soft"
    hard_readout: str = "expectation"
    # The paper's attention asks from the LSTM state alone, which has not read the word just
    # said: after "a small" the look for the next word cannot depend on "small". With
    # `word_query` the query also sees that word (a projection that starts at zero, so a
    # model switched on from a saved one starts out computing exactly what the saved one did).
    word_query: bool = False
    # With `location_query` the query also sees where the previous word looked (a small
    # convolution of its map, Chorowski et al. 2015), so the shape word after "red" can stay
    # on the red object the colour word found; also starts at zero like `word_query`.
    location_query: bool = False
    # With `early_features` each cell also carries the stage-1 features pooled to the same grid,
    # placed before the coordinates. A ResNet18's stage 1 sees 43 px where stage 2 sees 99, and
    # its cells do not mix in their neighbours' shapes (benchmarks/cell_probe.py --stage 1), so
    # the attention can read which object is which. A model switched on from a saved one starts
    # with zero weights on them (`grow_into`), computing what the saved one did.
    early_features: bool = False
    # With `members` > 1 the weights hold that many captioners of this architecture, decoding
    # together as one (captioner/ensemble.py): load_model builds an `Ensemble` from it.
    members: int = 1
    # The scene world it was trained on (captioner.scenes.worlds); "" for other data. Configs
    # saved before worlds existed have none: `scenes.world_of` reads their vocabulary.
    world: str = ""

    def __post_init__(self):
        if self.encoder not in RESNETS:
            raise ValueError(f"encoder must be one of {RESNETS}, got {self.encoder!r}")
        if not 1 <= self.encoder_stage <= 4:
            raise ValueError(f"encoder_stage must be 1..4, got {self.encoder_stage}")
        if self.early_features and self.encoder_stage == 1:
            raise ValueError("early_features needs encoder_stage 2 or more: stage 1's features "
                             "are already the cells")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, "
                             f"got {self.attention!r}")
        if self.hard_readout not in HARD_READOUTS:
            raise ValueError(f"hard_readout must be one of {HARD_READOUTS}, "
                             f"got {self.hard_readout!r}")
        if not isinstance(self.members, int) or self.members < 1:
            raise ValueError(f"members must be a whole number >= 1, got {self.members!r}")
        Vocabulary(self.vocab)  # validates special tokens
        if self.world:
            from captioner.scenes.worlds import get_world

            get_world(self.world)  # an unknown world is a ValueError naming the known ones

    def encoder_settings(self) -> dict:
        settings = {k: getattr(self, k) for k in ENCODER_SETTINGS}
        if self.early_features:  # only when on, so that earlier models' feature caches stay valid
            settings["early_features"] = True
        return settings


def resnet_stages(resnet: models.ResNet, stage: int) -> nn.Sequential:
    """The stem and the first `stage` residual stages of a torchvision ResNet."""
    stem = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool]
    return nn.Sequential(*stem, *(getattr(resnet, f"layer{i}") for i in range(1, stage + 1)))


class Encoder(nn.Module):
    """A torchvision ResNet cut after `stage`, pooled to a grid of feature vectors."""

    def __init__(self, name: str, stage: int, grid_size: int, image_size: int, coords: bool,
                 early: bool = False):
        super().__init__()
        resnet = models.get_model(name, weights=None)
        self.backbone = resnet_stages(resnet, stage)
        self.backbone_dim = resnet.fc.in_features // 2 ** (4 - stage)  # channels double per stage
        self.early = early  # stage 1's features too (CaptionerConfig.early_features)
        self.image_dim = self.backbone_dim + (resnet.fc.in_features // 8 if early else 0)
        self.stride = 2 ** (stage + 1)
        self.pool = nn.AdaptiveAvgPool2d(grid_size)
        self.grid_size = grid_size
        self.image_size = image_size
        self.coords = coords
        self.trainable_from = 0  # backbone modules before this index stay frozen (fine_tune)
        centres = torch.tensor(self.cell_centres() * 2 - 1, dtype=torch.float32)
        yy, xx = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("coord_grid", torch.stack([xx, yy]).flatten(1).T, persistent=False)
        self.out_dim = self.image_dim + (2 if coords else 0)

    def fine_tune(self, last_stages: int | None) -> None:
        """Train only the last `last_stages` residual stages (None: all, 0: none). Frozen parts
        also keep their BatchNorm statistics fixed (see `train`)."""
        self.backbone.requires_grad_(False)
        n_stages = len(self.backbone) - 4  # after the stem's 4 modules
        first = 0 if last_stages is None else 4 + max(0, n_stages - last_stages)
        if last_stages != 0:
            self.backbone[first:].requires_grad_(True)
        self.trainable_from = first if last_stages != 0 else len(self.backbone)

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.backbone[: self.trainable_from]:
            module.eval()
        return self

    def load_imagenet_weights(self, name: str):
        """Start the backbone from ImageNet (training only; downloads via torchvision)."""
        resnet = models.get_model(name, weights=models.get_model_weights(name).DEFAULT)
        self.backbone.load_state_dict(resnet_stages(resnet, len(self.backbone) - 4).state_dict())

    def cell_centres(self, stride: int | None = None) -> np.ndarray:
        """Where each grid cell is centred, as a fraction of the image side.

        ResNet convolutions centre feature m at pixel m * stride, not at the middle of its
        stride-sized block; drawing or scoring attention with naive upsampling would put it
        half a cell off. Pooled cells take the mean centre of the features they average.
        `stride`: of an earlier stage pooled to the same grid (benchmarks/cell_probe.py).
        """
        stride = stride or self.stride
        n_feat = -(-self.image_size // stride)
        feat_centres = (np.arange(n_feat) * stride + 0.5) / self.image_size
        g = self.grid_size
        starts = [(i * n_feat) // g for i in range(g)]
        ends = [-(-((i + 1) * n_feat) // g) for i in range(g)]
        return np.array([feat_centres[s:e].mean() for s, e in zip(starts, ends)])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) -> features (B, grid*grid, out_dim): the last stage's, then
        stage 1's if `early`, then the cell's coordinates if `coords`."""
        if self.early:
            first = self.backbone[:5](images)  # the stem's 4 modules and stage 1
            cells = [self.backbone[5:](first), first]
        else:
            cells = [self.backbone(images)]
        x = torch.cat([self.pool(c).flatten(2).transpose(1, 2) for c in cells], dim=2)
        if self.coords:
            x = torch.cat([x, self.coord_grid.expand(x.shape[0], -1, -1).to(x.dtype)], dim=2)
        return x


class Attention(nn.Module):
    """Additive (Bahdanau) attention over the grid: alpha = softmax(w . tanh(Wf f + Wh h)),
    plus We e (the embedding of the word just said) inside the tanh when `word_dim` is given,
    and U (F * alpha_prev) (filters over the last word's map on the grid) when `grid` is."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int,
                 word_dim: int | None = None, grid: int | None = None):
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.hidden_proj = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)
        self.word_proj = None
        if word_dim is not None:
            self.word_proj = nn.Linear(word_dim, attention_dim)
            nn.init.zeros_(self.word_proj.weight)  # starts as the paper's query (see config)
            nn.init.zeros_(self.word_proj.bias)
        self.grid = grid
        if grid is not None:
            self.location_conv = nn.Conv2d(1, LOCATION_CHANNELS, LOCATION_KERNEL,
                                           padding=LOCATION_KERNEL // 2)
            self.location_proj = nn.Linear(LOCATION_CHANNELS, attention_dim)
            nn.init.zeros_(self.location_proj.weight)  # starts as the query without it
            nn.init.zeros_(self.location_proj.bias)

    def forward(self, features, projected, hidden, word=None, previous=None):
        """`projected` = feature_proj(features), computed once per image, not once per word;
        `word` (B, word_dim) the embedded word just said, used with `word_dim`; `previous`
        (B, P) the last word's attention, used with `grid`."""
        query = self.hidden_proj(hidden)
        if self.word_proj is not None:
            query = query + self.word_proj(word)
        keys = projected + query.unsqueeze(1)
        if self.grid is not None:
            maps = previous.view(-1, 1, self.grid, self.grid)
            keys = keys + self.location_proj(self.location_conv(maps).flatten(2).transpose(1, 2))
        energy = self.score(torch.tanh(keys))
        alpha = energy.squeeze(2).softmax(dim=1)
        return self.read(alpha, features), alpha

    @staticmethod
    def read(alpha, features):
        """The context vector: the grid averaged with weights `alpha` (B, P)."""
        return (alpha.unsqueeze(2) * features).sum(dim=1)

    @staticmethod
    def read_cell(cells, features):
        """Hard attention's context: the feature vector of one cell (B,) per row."""
        index = cells.view(-1, 1, 1).expand(-1, 1, features.shape[2])
        return features.gather(1, index).squeeze(1)

    @staticmethod
    def read_argmax(alpha, features):
        """Hard attention at test time, `hard_readout="argmax"`: the most attended cell."""
        return Attention.read_cell(alpha.argmax(dim=1), features)


class CellSampler:
    """Hard attention while training: each word reads one cell drawn from its alpha, and the
    sampler keeps log alpha of the drawn cells and the entropy of alpha, word by word, for the
    REINFORCE update. No gradient flows through the draw itself: only through log alpha."""

    def __init__(self):
        self.log_probs: list[torch.Tensor] = []
        self.entropies: list[torch.Tensor] = []

    def __call__(self, alpha, features):
        cells = torch.multinomial(alpha.detach().float(), 1).squeeze(1)
        log_alpha = alpha.float().clamp_min(1e-12).log()
        self.log_probs.append(log_alpha.gather(1, cells.unsqueeze(1)).squeeze(1))
        self.entropies.append(-(alpha.float() * log_alpha).sum(dim=1))
        return Attention.read_cell(cells, features)


def reinforce_loss(log_probs, rewards, baseline, tokens: int):
    """The score-function (REINFORCE) surrogate whose gradient is -(r - b) * grad log p(cells):
    `log_probs` (B,) is each caption's summed log alpha of its drawn cells, `rewards` (B,) its
    log-likelihood given those cells. Divided by `tokens`, the same scale as the mean
    cross-entropy."""
    advantage = (rewards - baseline).detach()
    return -(advantage * log_probs).sum() / tokens


@dataclass
class DecoderState:
    """What the decoder carries from one word to the next (one row per caption/hypothesis)."""

    h: torch.Tensor
    c: torch.Tensor
    alpha: torch.Tensor  # the last word's attention (B, P); uniform before the first word

    def select(self, index: torch.Tensor) -> DecoderState:
        return DecoderState(self.h[index], self.c[index], self.alpha[index])


class Captioner(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="captioner",
    tags=["image-captioning", "show-attend-and-tell", "attention"],
    pipeline_tag="image-to-text",
    license="mit",
):
    """The whole model. `config` is saved beside the weights; loading is strict and offline-safe."""

    def __init__(self, config: CaptionerConfig):
        super().__init__()
        if isinstance(config, dict):
            config = CaptionerConfig(**config)
        if config.members != 1:
            raise ValueError(f"this config holds {config.members} models: build it as a "
                             "captioner.ensemble.Ensemble (load_model does)")
        self.config = config
        self.vocab = Vocabulary(config.vocab)
        self.encoder = Encoder(config.encoder, config.encoder_stage, config.grid_size,
                               config.image_size, config.coord_channels, config.early_features)
        d_feat, d_hid = self.encoder.out_dim, config.hidden_dim
        self.embedding = nn.Embedding(len(self.vocab), config.embed_dim)
        self.attention = Attention(d_feat, d_hid, config.attention_dim,
                                   config.embed_dim if config.word_query else None,
                                   config.grid_size if config.location_query else None)
        self.init_h = nn.Linear(d_feat, d_hid)
        self.init_c = nn.Linear(d_feat, d_hid)
        self.gate = nn.Linear(d_hid, d_feat)  # "selector" beta: how much context this word needs
        self.lstm = nn.LSTMCell(config.embed_dim + d_feat, d_hid)
        self.dropout = nn.Dropout(config.dropout)
        # The word is predicted from the state *and* the attended context, which moves attention
        # onto the object being named instead of one word early.
        self.classifier = nn.Linear(d_hid + d_feat, len(self.vocab))
        if config.attention == "hard":
            # REINFORCE's moving-average baseline of the caption log-likelihood; saved with
            # the weights so that a resumed run goes on from where it was.
            self.register_buffer("reward_baseline", torch.zeros(()))

    # --- decoding primitives (used by training and by captioner.decoding) ---

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def image_channel_mask(self) -> torch.Tensor:
        """(feature,) bool: the feature channels that come from the image, not coordinates."""
        return torch.arange(self.encoder.out_dim) < self.encoder.image_dim

    def init_state(self, features: torch.Tensor) -> tuple[DecoderState, torch.Tensor]:
        """Initial LSTM state from the mean feature, and the attention projection of the grid."""
        mean = features.mean(dim=1)
        uniform = features.new_full(features.shape[:2], 1.0 / features.shape[1])
        state = DecoderState(torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)),
                             uniform)
        return state, self.attention.feature_proj(features)

    def advance(self, words, state: DecoderState, features, projected, override=None,
                read=None):
        """Attend, gate and update the LSTM for one word; returns the classifier's input
        (B, hidden + feature), the new state, the attention weights (B, P) and the gate
        (B, feature): how much of the attended context the word uses.

        `override` = (rows (B,) bool, maps (B, P)) puts the given attention in place of the
        model's own on the marked rows, to ask "what would you say looking *here*?".
        `read(alpha, features)` -> context replaces the reading rule (a `CellSampler` while
        training hard attention); by default soft attention reads the expectation and hard
        attention in eval mode its `hard_readout`."""
        embedded = self.embedding(words)
        context, alpha = self.attention(features, projected, state.h, embedded, state.alpha)
        if override is not None:
            rows, maps = override
            alpha = torch.where(rows.unsqueeze(1), maps.to(alpha.dtype), alpha)
            context = self.attention.read(alpha, features)
        if read is None and self.reads_argmax():
            read = Attention.read_argmax
        if read is not None:
            context = read(alpha, features)
        gate = torch.sigmoid(self.gate(state.h))
        context = gate * context
        h, c = self.lstm(torch.cat([embedded, context], dim=1), (state.h, state.c))
        return torch.cat([h, context], dim=1), DecoderState(h, c, alpha), alpha, gate

    def step(self, words, state: DecoderState, features, projected, override=None, read=None):
        """One word: returns logits (B, V), the new state, the attention weights (B, P) and
        the gate (B, feature); `override` and `read` as in `advance`."""
        output, state, alpha, gate = self.advance(words, state, features, projected, override,
                                                  read)
        return self.classifier(self.dropout(output)), state, alpha, gate

    def reads_argmax(self) -> bool:
        """Whether, with no other rule given, a word reads its single most attended cell."""
        return (self.config.attention == "hard" and self.config.hard_readout == "argmax"
                and not self.training)

    def forward(self, features: torch.Tensor, captions: torch.Tensor, read=None):
        """Teacher forcing: captions (B, L) start with <start>; returns logits and alphas for
        predicting captions[:, 1:], shapes (B, L-1, V) and (B, L-1, P). The classifier runs
        once over all steps (one large matmul beats L-1 small ones). `read` as in `advance`."""
        state, projected = self.init_state(features)
        outputs, alphas = [], []
        for t in range(captions.shape[1] - 1):
            output, state, alpha, _ = self.advance(captions[:, t], state, features, projected,
                                                   read=read)
            outputs.append(output)
            alphas.append(alpha)
        if not outputs:  # <start> alone: nothing to predict
            return (features.new_zeros(len(features), 0, len(self.vocab)),
                    features.new_zeros(len(features), 0, features.shape[1]))
        return self.classifier(self.dropout(torch.stack(outputs, 1))), torch.stack(alphas, 1)

    def loss(self, features, captions, attention_penalty: float = 1.0,
             semi_sampling_p: float = SEMI_SAMPLING_P, entropy_bonus: float = ENTROPY_BONUS,
             return_alphas: bool = False):
        """Cross-entropy on the next word plus the doubly stochastic attention penalty
        lambda * sum_p (1 - sum_t alpha_tp)^2, which pushes every cell to be looked at once.
        Returns (loss to minimise, mean cross-entropy).

        Hard attention in training mode: with probability `semi_sampling_p` the whole batch
        reads one sampled cell per word, and the loss adds REINFORCE (reward: the caption's
        log-likelihood, minus the moving-average baseline) and an entropy bonus; otherwise
        the batch trains like soft attention (the authors' "semi-sampling").
        `return_alphas` adds the attention weights (B, L-1, P) as a third value."""
        sampler = None
        if self.config.attention == "hard" and self.training \
                and torch.rand(()).item() < semi_sampling_p:
            sampler = CellSampler()
        logits, alphas = self(features, captions, read=sampler)
        targets = captions[:, 1:]
        pad = self.vocab.pad_id
        token_ce = F.cross_entropy(logits.transpose(1, 2).float(), targets, ignore_index=pad,
                                   reduction="none")  # (B, L-1), 0 at padding
        words = targets != pad
        tokens = words.sum().clamp_min(1)
        ce = token_ce.sum() / tokens
        mask = words.unsqueeze(2).to(alphas.dtype)
        coverage = (alphas * mask).sum(dim=1)
        penalty = ((1.0 - coverage) ** 2).sum(dim=1).mean()
        total = ce + attention_penalty * penalty / alphas.shape[2]
        if sampler is not None:
            rewards = -token_ce.detach().sum(dim=1)
            log_probs = (torch.stack(sampler.log_probs, 1) * words).sum(dim=1)
            entropy = (torch.stack(sampler.entropies, 1) * words).sum() / tokens
            total = total + reinforce_loss(log_probs, rewards, self.reward_baseline, tokens) \
                - entropy_bonus * entropy
            with torch.no_grad():
                self.reward_baseline.mul_(BASELINE_DECAY).add_(
                    (1 - BASELINE_DECAY) * rewards.mean())
        return (total, ce, alphas) if return_alphas else (total, ce)

    # --- saving and loading ---

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download,
                         local_files_only, token, map_location="cpu", strict=True, **kwargs):
        return load_pretrained(cls(**kwargs), model_id, revision=revision, cache_dir=cache_dir,
                               force_download=force_download, local_files_only=local_files_only,
                               token=token, map_location=map_location)

    def save(self, directory: str | Path, half: bool = False) -> Path:
        return save_model(self, directory, half)


def load_pretrained(model: nn.Module, model_id, *, revision=None, cache_dir=None,
                    force_download=False, local_files_only=False, token=None,
                    map_location="cpu") -> nn.Module:
    """Fill `model` from a folder or Hub repo: safetensors only (never unpickle), always
    strict, errors that name the file."""
    if os.path.isdir(model_id):
        weights = Path(model_id) / WEIGHTS_FILE
        if not weights.is_file():
            raise WeightsError(f"{weights}: file not found (a model folder needs "
                               f"{WEIGHTS_FILE} and {CONFIG_FILE})")
    else:
        weights = hf_hub_download(model_id, WEIGHTS_FILE, revision=revision,
                                  cache_dir=cache_dir, force_download=force_download,
                                  local_files_only=local_files_only, token=token)
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{weights}: not a readable safetensors file ({e})") from e
    check_state_dict(model, state, weights)
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_model(model: nn.Module, directory: str | Path, half: bool = False) -> Path:
    """save_pretrained without the mixin's generic model card (we write our own), each file
    written under a temporary name and renamed, so a crash never leaves a torn model. `half`
    stores floating tensors as float16, half the file; loading casts them back to the model's
    float32, so it computes as before on the rounded weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file({k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}, tmp)
    replace_as_shared(tmp, directory / WEIGHTS_FILE)
    tmp = directory / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(model.config), indent=2))
    os.replace(tmp, directory / CONFIG_FILE)
    return directory


def grow_into(model: Captioner, saved: dict[str, torch.Tensor]) -> None:
    """Load the weights of a saved model without early features into `model`, which has them.
    Each feature dimension gets zeros for the new channels, inserted where the encoder puts
    them (before the coordinates), so the grown model computes what the saved one did; the
    gate's new rows are zero too, and their context then meets only zero weights. Weights the
    saved model lacks keep their initial values; the same shapes are copied as they are."""
    extra = model.encoder.image_dim - model.encoder.backbone_dim
    coords = model.encoder.out_dim - model.encoder.image_dim
    state = model.state_dict()
    for name, new in state.items():
        old = saved.get(name)
        if old is None or old.shape == new.shape:
            state[name] = new if old is None else old
            continue
        grown = [d for d in range(old.dim()) if old.shape[d] != new.shape[d]]
        if old.dim() != new.dim() or len(grown) != 1 or \
                new.shape[grown[0]] - old.shape[grown[0]] != extra:
            raise ValueError(f"{name}: {tuple(old.shape)} cannot grow into {tuple(new.shape)}")
        d = grown[0]
        at = old.shape[d] - coords
        zeros = old.new_zeros([extra if i == d else n for i, n in enumerate(old.shape)])
        state[name] = torch.cat([old.narrow(d, 0, at), zeros, old.narrow(d, at, coords)], dim=d)
    model.load_state_dict(state)


def replace_as_shared(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path` with the permissions of any other file written here:
    safetensors creates its files 0600, which hides weights from the rest of a team."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


class WeightsError(ValueError):
    """A model folder or file that cannot be loaded; the message says which file and why."""


def check_state_dict(model: nn.Module, state: dict, source) -> None:
    """Refuse partial loads: name every missing, unexpected or mis-shaped tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:8]}"
                        f"{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(sorted(shapes)[:8]))
    if problems:
        raise WeightsError(f"{source} does not match its config.json: " + "; ".join(problems))
