"""What a finished run leaves beside its weights: the log and training curve (rewritten every
epoch), then the selected model's test metrics, an attention example, the model card and the
optional upload."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path

import torch

from captioner.data import load_caption_dataset
from captioner.decoding import caption_images
from captioner.evaluation import compositional_metrics, evaluate_split
from captioner.hub import load_model, push_folder, training_time, write_model_card
from captioner.preprocess import to_rgb
from captioner.scenes import generate_scenes, get_world, is_world
from captioner.training_config import TrainConfig
from captioner.visualize import save_attention_grid


def write_log(out: Path, history: list[dict]) -> None:
    """log.jsonl rewritten from the checkpointed history: every epoch exactly once."""
    tmp = out / "log.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    os.replace(tmp, out / "log.jsonl")
    plot_curves(out / "training_curve.png", history)


def plot_curves(path: Path, history: list[dict]) -> None:
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation loss")
    ax.set_xlabel("epoch")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    for key, label in [("bleu4", "val BLEU-4"), ("objects_correct", "val all objects right (%)"),
                       ("pointing", "val pointing (%)")]:
        if history[0].get(key) is not None:
            scale = 1 if key == "bleu4" else 100  # one 0-100 scale: fractions as percentages
            ax.plot(epochs, [r[key] * scale for r in history], "o-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def hardware(cfg: TrainConfig) -> str:
    """What trained it, for the model card: the GPUs' name, or the CPU cores."""
    if torch.cuda.is_available() and not cfg.cpu:
        count = torch.cuda.device_count()
        return f"{count} × {torch.cuda.get_device_name(0)}" if count > 1 else \
            f"one {torch.cuda.get_device_name(0)}"
    return f"{os.cpu_count()} CPU cores"


def finish(cfg: TrainConfig, out: Path, dataset, command: str, history: list[dict],
           selected_epoch: int | None) -> None:
    """Evaluate the selected model on the test split and write metrics, figures and card."""
    model = load_model(out)
    test = dataset["test"]
    metrics = {"dataset": cfg.dataset, "split": "test", "images": len(test),
               "scale": "caption metrics x 100; objects_*, relations_*, pointing* as 0-1 "
                        "fractions"}
    for beam in (1, 3):
        metrics[f"beam{beam}"] = evaluate_split(model, test, beam_size=beam, max_len=cfg.max_len,
                                                meteor=cfg.meteor)
    world = get_world(cfg.dataset) if is_world(cfg.dataset) else None
    if world is not None and world.held_out_pairs:
        metrics["compositional"] = held_out_metrics(cfg, world, model, len(test))
    metrics["selected_epoch"] = selected_epoch
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    image = to_rgb(test[0]["image"])
    caption = caption_images(model, [image], beam_size=cfg.beam_size, max_len=cfg.max_len)[0]
    save_attention_grid(out / "attention_example.png", image, caption.tokens, caption.attention,
                        model.encoder.cell_centres(), title=caption.text)
    write_model_card(out, cfg=asdict(cfg), metrics=metrics, command=command,
                     project_url=cfg.project_url or None,
                     trained_in=training_time(history, hardware(cfg)))
    print(json.dumps({k: {m: v for m, v in metrics[k].items() if m != "examples"}
                      for k in ("beam1", "beam3")}, indent=2))
    if cfg.push_to_hub:
        try:
            url = push_folder(out, cfg.push_to_hub)
        except SystemExit as e:  # the run is safe: say how to push it later
            raise SystemExit(f"{e}\nThe trained model is in {out}; upload it later with: "
                             f"python -m captioner push {shlex.quote(str(out))} "
                             f"{cfg.push_to_hub}") from None
        print(f"pushed to {url}")


def held_out_metrics(cfg: TrainConfig, world, model, images: int) -> dict:
    """The compositional block: `images` held-out scenes (each shows a colour-shape pair never
    trained on), scored at beams 1 and 3."""
    root = Path(cfg.data_dir) / f"{world.folder_prefix}-heldout-{cfg.image_size}px-{images}"
    held = load_caption_dataset(generate_scenes(
        root, num_train=1, num_validation=1, num_test=images, image_size=cfg.image_size,
        seed=cfg.seed, world=world.name, held_out=True, progress=False))["test"]
    block = {"pairs": [" ".join(p) for p in world.held_out_pairs], "images": len(held)}
    for beam in (1, 3):
        block[f"beam{beam}"] = compositional_metrics(model, held, beam_size=beam,
                                                     max_len=cfg.max_len)
    return block
