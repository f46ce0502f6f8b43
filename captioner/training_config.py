"""A training run's settings: `TrainConfig`, the presets of each dataset, and the command line
of `train_space.py`, checked before any data is read or folder made (captioner.training runs
the loop)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from captioner.cli_checks import Parser, at_least
from captioner.data import looks_local
from captioner.hub import read_config, repo_id_problem
from captioner.model import ATTENTION_KINDS, CaptionerConfig, WeightsError
from captioner.scenes import is_world
from captioner.vocab import SPECIALS


@dataclass
class TrainConfig:
    """Every knob of a run; saved in the checkpoint and the model card."""

    dataset: str = "jxie/flickr8k"
    image_column: str = ""
    caption_column: str = ""
    split_column: str = ""
    output_dir: str = "runs/flickr8k-resnet50"
    overwrite: bool = False
    # model
    encoder: str = "resnet50"
    encoder_stage: int = 4
    grid: int = 7
    image_size: int = 224
    coord_channels: bool = True
    embed_dim: int = 256
    attention_dim: int = 512
    hidden_dim: int = 512
    dropout: float = 0.5
    attention: str = "soft"
    word_query: bool = False
    location_query: bool = False
    early_features: bool = False
    pretrained_encoder: bool = True
    fine_tune_encoder: bool = False
    fine_tune_stages: int = 0
    # data
    min_word_freq: int = 5
    max_caption_len: int = 30
    captions_per_image: int = 0
    max_train_images: int = 0
    max_eval_images: int = 500
    num_scenes: int = 10000
    num_eval_scenes: int = 0
    data_dir: str = "data"
    cache_dir: str = ".cache/captioner"
    # optimisation
    epochs: int = 20
    batch_size: int = 64
    lr: float = 4e-4
    encoder_lr: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 5.0
    attention_penalty: float = 1.0
    ground_attention: float = 0.0
    ground_each_object: bool = False
    steer_words: float = 0.0
    steer_classifier_only: bool = False
    cell_words: float = 0.0
    self_critical: float = 0.0
    self_critical_samples: int = 4
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "auto"
    patience: int = 5
    time_limit: float = 0.0
    # evaluation and output
    beam_size: int = 3
    max_len: int = 20
    meteor: bool = True
    seed: int = 0
    resume: bool = False
    init_from: str = ""
    push_to_hub: str = ""
    project_url: str = ""
    cpu: bool = False


HELP = {
    "dataset": "Hub dataset id, local folder or file (see docs/datasets.md), or a "
               "generated scene world: 'scenes' (= 'scenes-v1') or 'scenes-v2' "
               "(docs/worlds.md)",
    "image_column": "column holding the images or their file paths (default: 'image', or the "
                    "only image column)",
    "caption_column": "column of captions (strings, or lists of strings) or a pattern such as "
                      "'caption_*' (default: caption_0..N, 'captions', 'caption', 'sentences')",
    "split_column": "column holding each row's split: train/restval -> train, val/dev -> "
                    "validation, test -> test (default: 'split' when the source has one split)",
    "output_dir": "where the model, checkpoint, log, figures and card are written",
    "overwrite": "train into an --output-dir that already holds files (else refused)",
    "encoder": "torchvision ResNet: resnet18/34/50/101",
    "encoder_stage": "keep ResNet stages 1..N (early stages: smaller, local receptive fields)",
    "grid": "attention grid side (features are pooled to grid x grid)",
    "image_size": "side of the square input image, in pixels",
    "coord_channels": "append x/y coordinate channels to the feature grid",
    "embed_dim": "word embedding size",
    "attention_dim": "attention layer size",
    "hidden_dim": "LSTM hidden size",
    "dropout": "dropout before the word classifier",
    "attention": "soft (weighted mean of the grid) or hard (one sampled cell per word, "
                 "REINFORCE; see docs/faithfulness.md)",
    "word_query": "the attention query also sees the word just said (the paper's: the LSTM "
                  "state alone; see CaptionerConfig); an --init-from model that has it keeps "
                  "it",
    "location_query": "the attention query also sees where the last word looked (a "
                      "convolution of its map; see CaptionerConfig); an --init-from model that "
                      "has it keeps it",
    "early_features": "each cell also carries stage 1's features, which keep neighbouring "
                      "objects apart (see CaptionerConfig); an --init-from model that has them "
                      "keeps them",
    "pretrained_encoder": "start the encoder from ImageNet weights (needs network once)",
    "fine_tune_encoder": "train the encoder too (else: encode once and cache features)",
    "fine_tune_stages": "with --fine-tune-encoder: train only the last N ResNet stages (0: all)",
    "min_word_freq": "words seen fewer times in the training captions become <unk>",
    "max_caption_len": "training captions are cut to this many words",
    "captions_per_image": "captions per image visited each epoch (0: all)",
    "max_train_images": "use only the first N training images, for quick runs (0: all)",
    "max_eval_images": "validation images decoded each epoch",
    "num_scenes": "training images generated for --dataset scenes",
    "num_eval_scenes": "validation and test images generated for --dataset scenes, for quick "
                       "trials (0: 500 and 1000)",
    "data_dir": "where --dataset scenes is generated (relative to the working directory)",
    "cache_dir": "where encoded features are cached (relative to the working directory)",
    "epochs": "training epochs",
    "batch_size": "image-caption pairs per batch, per process",
    "lr": "learning rate of the decoder",
    "encoder_lr": "learning rate of the encoder (with --fine-tune-encoder)",
    "warmup_steps": "optimiser steps of linear learning-rate warm-up before the cosine decay",
    "grad_clip": "gradient norm clipping",
    "attention_penalty": "weight of the doubly stochastic attention penalty",
    "ground_attention": "scene worlds: weight of the loss that puts each object word's "
                        "attention on that object's cells (0: off; captioner/grounding.py)",
    "ground_each_object": "with --ground-attention: a word naming a counted group puts "
                          "attention on each of its objects, not only on the group",
    "steer_words": "scene worlds: share of captions in which a colour word is also trained "
                   "looking at another object, to say that object's colour (0: off)",
    "steer_classifier_only": "with --steer-words: that loss trains only the word classifier, "
                             "not the LSTM that remembers the caption so far",
    "cell_words": "scene worlds: weight of the loss that makes each object's cells, read "
                  "alone, say its size, colour and shape word (0: off)",
    "self_critical": "scene worlds: weight of self-critical training (Rennie et al. 2017): "
                     "captions drawn from the model are rewarded for what they get right "
                     "about the scene (0: off; captioner/self_critical.py)",
    "self_critical_samples": "with --self-critical: captions drawn per image-caption pair",
    "gradient_accumulation_steps": "batches per optimiser step",
    "mixed_precision": "auto (bf16 on CUDA), no, fp16 or bf16",
    "patience": "stop after N epochs without a better validation score (0: never)",
    "time_limit": "minutes for the epochs, validation included (setup and the final test "
                  "evaluation come on top): after each epoch the run plans as many more as "
                  "fit, at most --epochs, and decays the learning rate over them (0: no limit)",
    "beam_size": "beam size of the example attention figure",
    "max_len": "longest caption decoded in evaluation",
    "meteor": "compute METEOR on the test split (starts Java; --no-meteor for quick runs)",
    "seed": "seed of the initialisation, the data order and carved-out splits",
    "resume": "continue from OUTPUT_DIR/checkpoint.safetensors",
    "init_from": "start from the weights of this saved model folder (e.g. weights), with a "
                 "new optimiser and schedule; its vocabulary is kept (it must hold every word "
                 "of the run's captions) and its architecture must match the run's, except "
                 "soft or hard attention and --word-query (default: fresh weights)",
    "push_to_hub": "upload the output folder to this Hub repo id (token: HF_TOKEN or login; "
                   "default: no upload)",
    "project_url": "link to the project's code in the model card (default: no link)",
    "cpu": "train on the CPU even if a GPU is present",
}

PRESETS = {
    # Real photos: frozen ImageNet ResNet50, 7x7 grid, features cached once.
    "flickr8k": {},
    # Generated scenes: a ResNet18 cut after stage 2 (8x8 cells with local receptive fields),
    # trained from scratch end to end; see the model card for what made attention point.
    "scenes": dict(encoder="resnet18", encoder_stage=2, grid=8, image_size=64,
                   embed_dim=128, attention_dim=256, hidden_dim=384, dropout=0.1,
                   pretrained_encoder=False, fine_tune_encoder=True, min_word_freq=1,
                   max_caption_len=20, captions_per_image=1, epochs=12, lr=1e-3,
                   encoder_lr=1e-3, patience=0, output_dir="runs/scenes"),
    # The richer world (docs/worlds.md): 128-px images, the same stage-2 ResNet18 (stride 8),
    # so a 16x16 grid of 8-px cells; captions up to 40 words.
    "scenes-v2": dict(encoder="resnet18", encoder_stage=2, grid=16, image_size=128,
                      embed_dim=128, attention_dim=256, hidden_dim=512, dropout=0.1,
                      pretrained_encoder=False, fine_tune_encoder=True, min_word_freq=1,
                      max_caption_len=40, max_len=40, captions_per_image=1, num_scenes=30000,
                      epochs=15, lr=1e-3, encoder_lr=1e-3, patience=0,
                      output_dir="runs/scenes-v2"),
}
PRESETS["scenes-v1"] = PRESETS["scenes"]


def parse_args(argv=None) -> TrainConfig:
    """argparse built from TrainConfig; a preset (by dataset) fills what was not given."""
    parser = Parser(
        prog="train_space.py", description="Train a Show, Attend and Tell captioner. Defaults "
        "are the Flickr8k recipe; with --dataset scenes (or scenes-v2), that world's preset "
        "values apply (shown as 'scenes: ...', 'scenes-v2: ...') unless given.")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = default_text(f.name)
        help_text = f"{HELP[f.name]} ({default})" if default else HELP[f.name]
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif f.type in ("int", "float"):
            kind = int if f.type == "int" else float
            low = MINIMUM.get(f.name, 0)
            parser.add_argument(flag, type=at_least(low, kind), default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    preset = PRESETS.get(given.get("dataset"), PRESETS["flickr8k"])
    cfg = TrainConfig(**{**preset, **given})
    problem = config_problem(cfg)
    if problem:
        parser.error(problem)
    return cfg


# Numbers that must be at least 1 (the others: at least 0).
MINIMUM = {name: 1 for name in (
    "encoder_stage", "grid", "image_size", "embed_dim", "attention_dim", "hidden_dim",
    "min_word_freq", "max_caption_len", "max_eval_images", "num_scenes", "batch_size",
    "gradient_accumulation_steps", "beam_size", "max_len")}


def config_problem(cfg: TrainConfig) -> str | None:
    """What is wrong with a run's settings, found before any data is read or folder made."""
    if cfg.mixed_precision not in ("auto", "no", "fp16", "bf16"):
        return "--mixed-precision must be auto, no, fp16 or bf16"
    if cfg.attention not in ATTENTION_KINDS:
        return f"--attention must be one of {', '.join(ATTENTION_KINDS)}"
    if not 0 <= cfg.dropout < 1:
        return f"--dropout must be from 0 to below 1, got {cfg.dropout:g}"
    try:
        CaptionerConfig(vocab=list(SPECIALS), encoder=cfg.encoder,
                        encoder_stage=cfg.encoder_stage, early_features=cfg.early_features)
    except ValueError as e:
        return "--" + str(e).replace("_", "-")
    stride = 2 ** (cfg.encoder_stage + 1)  # the ResNet's downsampling after that stage
    smallest = stride * (cfg.grid - 1) + 1
    if cfg.image_size < smallest:
        return (f"--image-size {cfg.image_size} is too small: {cfg.encoder} stages 1-"
                f"{cfg.encoder_stage} shrink images {stride}x, so a {cfg.grid}x{cfg.grid} grid "
                f"needs at least {smallest} px; raise --image-size or lower --grid")
    if not is_world(cfg.dataset) and looks_local(cfg.dataset) \
            and not Path(cfg.dataset).expanduser().exists():
        return (f"--dataset {cfg.dataset}: no such folder or file (or give a Hub dataset id "
                "such as jxie/flickr8k, or a scene world: 'scenes', 'scenes-v2')")
    if cfg.steer_words > 1:
        return f"--steer-words is a share of captions, from 0 to 1, got {cfg.steer_words:g}"
    if cfg.steer_classifier_only and not cfg.steer_words:
        return "--steer-classifier-only changes what --steer-words trains: give --steer-words too"
    if cfg.ground_each_object and not cfg.ground_attention:
        return ("--ground-each-object changes what --ground-attention trains: give "
                "--ground-attention too")
    if cfg.self_critical_samples < 2:
        return ("--self-critical-samples must be at least 2 (each caption's baseline is the "
                f"others' mean reward), got {cfg.self_critical_samples}")
    if cfg.init_from and cfg.resume:
        return "--init-from starts a new run; --resume continues one: give only one"
    if cfg.init_from and not (Path(cfg.init_from).expanduser() / "config.json").is_file():
        return f"--init-from {cfg.init_from}: no saved model there (no config.json)"
    if cfg.init_from and (members := saved_members(Path(cfg.init_from).expanduser())) > 1:
        return (f"--init-from {cfg.init_from}: an ensemble of {members} models, which only "
                "captions; training starts from one model: give one of its members")
    if cfg.push_to_hub:
        return repo_id_problem(cfg.push_to_hub, "--push-to-hub")
    return None


def saved_members(folder: Path) -> int:
    """How many models the saved config in `folder` holds (1 unless it is an ensemble, or
    unreadable: loading it names that problem)."""
    try:
        return read_config(folder).members
    except WeightsError:
        return 1


def default_text(name: str) -> str:
    """The real default, and the scenes preset's value where it differs (argparse's own
    defaults are None, so that a preset can tell what was given). Empty for options whose
    absence the help line explains."""
    default = getattr(TrainConfig, name)
    if default == "":
        return ""
    text = f"default: {default}"
    for world in ("scenes", "scenes-v2"):
        if name in PRESETS[world]:
            text += f"; {world}: {PRESETS[world][name]}"
    return text.replace("%", "%%")
