"""Training speed per scene world at its full preset: what one epoch of the real run costs.

    HF_HUB_OFFLINE=1 python benchmarks/world_training.py            # ~5 min on 2 busy cores
    HF_HUB_OFFLINE=1 python benchmarks/world_training.py --steps 3  # quicker

For each world (scenes-v1, the bundled model's; scenes-v2) the preset of `train_space.py
--dataset <world>` is built exactly as training builds it (parse_args, the same Captioner,
Objective, Pairs, epoch_pairs and encode_captions, Adam over decoder and encoder), on
`--scenes` freshly generated training scenes; then `--steps` optimiser steps of batch_size
image-caption pairs are timed, the worlds taking turns (round-robin, so a change in machine
load hits both alike). Reported: median seconds per step and the epoch time that implies for
the preset's num_scenes (one caption per image and epoch: steps = num_scenes / batch_size).
Per-epoch validation (greedy decoding of up to 500 images) comes on top.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    interference_line,
    interleaved,
    machine,
    machine_line,
    median,
    summary,
    table,
    write_results,
)
from captioner.data import load_caption_dataset  # noqa: E402
from captioner.model import Captioner, CaptionerConfig  # noqa: E402
from captioner.objective import Objective, Pairs  # noqa: E402
from captioner.preprocess import resized_pixels  # noqa: E402
from captioner.scenes import generate_scenes  # noqa: E402
from captioner.training import encode_captions, epoch_pairs  # noqa: E402
from captioner.training_config import parse_args  # noqa: E402
from captioner.vocab import Vocabulary  # noqa: E402


def setup(world: str, scenes: int, data_dir: Path):
    """A step function training `world`'s preset model on `scenes` generated scenes."""
    cfg = parse_args(["--dataset", world])
    source = generate_scenes(data_dir / world, num_train=scenes, num_validation=1, num_test=1,
                             image_size=cfg.image_size, world=world, progress=False)
    train = load_caption_dataset(source)["train"]
    vocab = Vocabulary.build((c for caps in train["captions"] for c in caps), min_freq=1)
    torch.manual_seed(0)
    model = Captioner(CaptionerConfig(
        vocab=vocab.words, encoder=cfg.encoder, encoder_stage=cfg.encoder_stage,
        grid_size=cfg.grid, coord_channels=cfg.coord_channels, embed_dim=cfg.embed_dim,
        attention_dim=cfg.attention_dim, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout,
        image_size=cfg.image_size, world=world))
    model.encoder.fine_tune(None)
    pixels = np.stack([resized_pixels(row["image"], cfg.image_size).numpy() for row in train])
    captions = encode_captions(train, vocab, cfg.max_caption_len)
    pairs = Pairs(pixels, captions, epoch_pairs(captions, cfg.captions_per_image, 0, 1))
    loader = torch.utils.data.DataLoader(pairs, batch_size=cfg.batch_size)
    objective = Objective(model, cfg.attention_penalty, pixels=True).train()
    optimizer = torch.optim.Adam([
        {"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")],
         "lr": cfg.lr},
        {"params": list(model.encoder.parameters()), "lr": cfg.encoder_lr}])
    batches = iter(())

    def step():
        nonlocal batches
        try:
            inputs, ids = next(batches)
        except StopIteration:
            batches = iter(loader)
            inputs, ids = next(batches)
        loss, _ = objective(inputs, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad()

    info = {"image_size": cfg.image_size, "grid": cfg.grid, "hidden_dim": cfg.hidden_dim,
            "batch_size": cfg.batch_size, "max_caption_len": cfg.max_caption_len,
            "num_scenes": cfg.num_scenes, "epochs": cfg.epochs,
            "steps_per_epoch": math.ceil(cfg.num_scenes / cfg.batch_size),
            "parameters": sum(p.numel() for p in model.parameters())}
    return step, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per world")
    parser.add_argument("--scenes", type=int, default=256, help="training scenes generated")
    parser.add_argument("--worlds", nargs="+", default=["scenes-v1", "scenes-v2"])
    args = parser.parse_args()
    m = machine()
    print(machine_line(m))
    with tempfile.TemporaryDirectory() as tmp:
        setups = {w: setup(w, args.scenes, Path(tmp)) for w in args.worlds}
        times = interleaved({w: s[0] for w, s in setups.items()}, repeats=args.steps)
    rows, results = [], {}
    for world, (_, info) in setups.items():
        per_step = median(times[world])
        epoch = per_step * info["steps_per_epoch"]
        results[world] = {**info, "step": summary(times[world]), "epoch_s": round(epoch),
                          "run_h": round(epoch * info["epochs"] / 3600, 2)}
        rows.append([world, f"{info['image_size']} px, {info['grid']}x{info['grid']}",
                     f"{per_step:.2f} s", f"{info['steps_per_epoch']}",
                     f"{epoch / 60:.0f} min", f"{epoch * info['epochs'] / 3600:.1f} h"])
    print(table(rows, ["world", "input, grid", "s / step", "steps / epoch", "epoch",
                       "all epochs (no validation)"]))
    print(interference_line())
    path = write_results("world-training", {"machine": m, "steps": args.steps,
                                            "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
