"""Training: a plain loop over cached features (or pixels), run through `accelerate`.

`python train_space.py --dataset ID_OR_DIR --output-dir DIR` trains, evaluates without teacher
forcing, and leaves a `from_pretrained`-ready folder with a model card. The same script runs
unchanged under `accelerate launch --num_processes N` (DDP).
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from captioner.data import (
    DatasetFormatError,
    DatasetLoadError,
    load_caption_dataset,
)
from captioner.evaluation import evaluate_split
from captioner.features import cache_key, cached_array, state_fingerprint
from captioner.grounding import scene_truth
from captioner.hub import (
    check_push_target,
    load_model,
)
from captioner.model import Captioner, CaptionerConfig, grow_into, replace_as_shared
from captioner.objective import Objective, Pairs
from captioner.preprocess import resized_pixels, to_model_input
from captioner.run_report import finish, write_log
from captioner.scenes import generate_scenes, get_world, is_world
from captioner.self_critical import scene_objects
from captioner.training_config import TrainConfig, parse_args
from captioner.vocab import Vocabulary

CHECKPOINT = "checkpoint.safetensors"


def encode_captions(split, vocab: Vocabulary, max_len: int) -> np.ndarray:
    """(images, max captions, max_len + 2) ids, padded; missing captions are all-pad rows."""
    per_image = split["captions"]
    width = max(len(c) for c in per_image)
    out = np.full((len(per_image), width, max_len + 2), vocab.pad_id, dtype=np.int32)
    for i, caps in enumerate(per_image):
        for j, caption in enumerate(caps):
            ids = vocab.encode(caption, max_len)
            out[i, j, : len(ids)] = ids
    return out


def epoch_pairs(captions: np.ndarray, per_image: int, seed: int, epoch: int) -> np.ndarray:
    """This epoch's (image, caption) pairs in shuffled order; deterministic per (seed, epoch) so
    a resumed run sees exactly the batches an uninterrupted one would."""
    rng = np.random.default_rng([seed, epoch])
    valid = captions[:, :, 1] != 0  # a real caption has a word (or <end>) after <start>
    pairs = []
    for image, row in enumerate(valid):
        choices = np.flatnonzero(row)
        if per_image:
            choices = rng.choice(choices, size=min(per_image, len(choices)), replace=False)
        pairs += [(image, c) for c in choices]
    pairs = np.array(pairs, dtype=np.int64)
    return pairs[rng.permutation(len(pairs))]


def prepare_dataset(cfg: TrainConfig):
    if is_world(cfg.dataset):
        world = get_world(cfg.dataset)
        root = Path(cfg.data_dir) / f"{world.folder_prefix}-{cfg.image_size}px-{cfg.num_scenes}"
        sizes = (dict(num_validation=cfg.num_eval_scenes, num_test=cfg.num_eval_scenes)
                 if cfg.num_eval_scenes else {})
        if sizes:
            root = root.with_name(f"{root.name}-eval{cfg.num_eval_scenes}")
        source = generate_scenes(root, num_train=cfg.num_scenes, image_size=cfg.image_size,
                                 seed=cfg.seed, world=world.name, **sizes)
    else:
        source = cfg.dataset
    dataset = load_caption_dataset(source, seed=cfg.seed, image_column=cfg.image_column or None,
                                   caption_column=cfg.caption_column or None,
                                   split_column=cfg.split_column or None)
    if cfg.max_train_images:
        dataset["train"] = dataset["train"].select(
            range(min(cfg.max_train_images, len(dataset["train"]))))
    return dataset


def lr_lambda(warmup: int, total: int):
    """Linear warm-up, then cosine decay to zero: steadier attention late in training."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


clock = time.monotonic  # what --time-limit measures (a test runs training on a fake clock)


def epochs_that_fit(limit_s: float, elapsed_s: float, epochs_run: int, epoch: int,
                    most: int) -> int:
    """The last epoch a run with `limit_s` seconds can finish, judged by the mean time of the
    `epochs_run` epochs it took `elapsed_s` seconds to run, ending with `epoch`."""
    per_epoch = max(elapsed_s / max(1, epochs_run), 1e-9)
    return min(most, epoch + int(max(0.0, limit_s - elapsed_s) // per_epoch))


def selection_score(metrics: dict) -> float:
    """What "best epoch" means: BLEU-4, and on scenes also exact content and pointing."""
    if metrics.get("pointing") is not None:
        return (metrics["bleu4"] / 100 + metrics["objects_correct"] + metrics["pointing"]) / 3
    return metrics["bleu4"] / 100


# --- checkpoints: one safetensors file, written atomically, no pickle ---

def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    _, np_key, np_pos, *_ = np.random.get_state()
    meta = {"state": state, "param_groups": opt["param_groups"],
            "scheduler": scheduler.state_dict(), "numpy_rng": [np_key.tolist(), int(np_pos)],
            "python_rng": random.getstate()[1]}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, tmp, metadata={"json": json.dumps(meta)})
    replace_as_shared(tmp, path)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["json"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    np_key, np_pos = meta["numpy_rng"]
    np.random.set_state(("MT19937", np.array(np_key, dtype=np.uint32), np_pos, 0, 0.0))
    random.setstate((3, tuple(meta["python_rng"]), None))
    return meta["state"]


@torch.no_grad()
def validation_loss(objective: Objective, loader, device) -> float:
    """Teacher-forced cross-entropy on the validation split (main process, unwrapped model)."""
    objective.eval()
    total, count = 0.0, 0
    for inputs, captions in loader:
        total += objective(inputs.to(device), captions.to(device))[1].item() * len(captions)
        count += len(captions)
    objective.train()
    return total / max(count, 1)


def train(cfg: TrainConfig, command: str = "") -> Path:
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and not cfg.cpu else "no"
    acc = Accelerator(cpu=cfg.cpu, mixed_precision=precision,
                      gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    out = Path(cfg.output_dir)
    checkpoint = out / CHECKPOINT
    if cfg.resume and not checkpoint.is_file():
        raise SystemExit(f"--resume: no checkpoint at {checkpoint}")
    if not (cfg.resume or cfg.overwrite) and out.is_dir() and any(out.iterdir()):
        raise SystemExit(f"{out} already holds files: pass --resume to continue its run, "
                         "--overwrite to train over it, or another --output-dir")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)

    with acc.main_process_first():  # scenes are generated / datasets prepared once
        dataset = prepare_dataset(cfg)
    vocab = Vocabulary.build((c for caps in dataset["train"]["captions"] for c in caps),
                             min_freq=cfg.min_word_freq)
    model = Captioner(CaptionerConfig(
        vocab=vocab.words, encoder=cfg.encoder, encoder_stage=cfg.encoder_stage,
        grid_size=cfg.grid, coord_channels=cfg.coord_channels, embed_dim=cfg.embed_dim,
        attention_dim=cfg.attention_dim, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout,
        image_size=cfg.image_size, attention=cfg.attention, word_query=cfg.word_query,
        location_query=cfg.location_query, early_features=cfg.early_features,
        world=get_world(cfg.dataset).name if is_world(cfg.dataset) else ""))
    if cfg.init_from:
        model = start_from(cfg.init_from, model.config)
        vocab = Vocabulary(model.config.vocab)  # the saved word ids keep their meaning
        cfg.word_query = model.config.word_query  # kept from it: the card says what it is
        cfg.location_query = model.config.location_query
        cfg.early_features = model.config.early_features
    elif cfg.pretrained_encoder:
        try:
            model.encoder.load_imagenet_weights(cfg.encoder)
        except Exception as e:
            raise SystemExit(f"could not get ImageNet weights for {cfg.encoder} ({e}); with no "
                             "network use --no-pretrained-encoder") from e
    model.encoder.fine_tune((cfg.fine_tune_stages or None) if cfg.fine_tune_encoder else 0)
    model.to(acc.device)
    mcfg = model.config

    # Encode once: features (frozen encoder) or resized pixels (encoder trained), per split.
    if cfg.fine_tune_encoder:
        def encode(images):
            return np.stack([resized_pixels(im, mcfg.image_size).numpy() for im in images])
        kind = {"pixels": mcfg.image_size}
    else:
        @torch.inference_mode()
        def encode(images):
            batch = torch.stack([to_model_input(im, mcfg.image_size, mcfg.image_mean,
                                                mcfg.image_std) for im in images])
            model.encoder.eval()
            return model.encode(batch.to(acc.device)).half().cpu().numpy()
        kind = {"encoder": mcfg.encoder_settings(),
                "weights": state_fingerprint(model.encoder)}
    splits = {"train": dataset["train"],
              "validation": dataset["validation"].select(
                  range(min(cfg.max_eval_images, len(dataset["validation"]))))}
    truth = None  # scene ground truth for the losses that need it, checked before encoding
    if cfg.ground_attention or cfg.steer_words or cfg.cell_words or cfg.self_critical:
        try:
            truth = scene_truth(splits["train"], vocab, cfg.max_caption_len,
                                model.encoder.cell_centres(), mcfg.image_size)
        except ValueError as e:
            raise SystemExit(str(e)) from e
    inputs = {}
    for name, split in splits.items():
        key = cache_key(data=split._fingerprint, **kind)
        inputs[name] = cached_array(Path(cfg.cache_dir) / key / f"{name}.npy", split, encode,
                                    desc=f"encoding {name} once", rank=acc.process_index,
                                    world=acc.num_processes, barrier=acc.wait_for_everyone)
    captions = {n: encode_captions(s, vocab, cfg.max_caption_len) for n, s in splits.items()}

    objective = Objective(model, cfg.attention_penalty, pixels=cfg.fine_tune_encoder,
                          ground=cfg.ground_attention, steer=cfg.steer_words,
                          ground_each_object=cfg.ground_each_object,
                          steer_classifier_only=cfg.steer_classifier_only,
                          cell_words=cfg.cell_words, self_critical=cfg.self_critical,
                          scenes=scene_objects(splits["train"]) if cfg.self_critical else None,
                          samples=cfg.self_critical_samples, max_len=cfg.max_len)
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")],
               "lr": cfg.lr}]
    if cfg.fine_tune_encoder:
        groups.append({"params": [p for p in model.encoder.parameters() if p.requires_grad],
                       "lr": cfg.encoder_lr})
    optimizer = torch.optim.Adam(groups)
    n_pairs = len(epoch_pairs(captions["train"], cfg.captions_per_image, cfg.seed, 0))
    steps_per_epoch = math.ceil(n_pairs / (cfg.batch_size * acc.num_processes
                                           * cfg.gradient_accumulation_steps))
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.warmup_steps > total_steps:
        acc.print(f"warning: --warmup-steps {cfg.warmup_steps} exceeds this run's {total_steps} "
                  "optimiser steps: the learning rate never reaches --lr")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps,
                                                                       total_steps))
    objective, optimizer = acc.prepare(objective, optimizer)

    state = {"epoch": 0, "best": -1.0, "bad_epochs": 0, "history": [], "command": command}
    if cfg.resume:
        state = load_checkpoint(checkpoint, acc.unwrap_model(objective).model, optimizer,
                                scheduler)
        acc.print(f"resumed from {checkpoint} after epoch {state['epoch']}", flush=True)
        if command and command not in state.get("command", "").splitlines():  # card: both
            state["command"] = f"{state.get('command', '')}\n{command}".strip()
    val_loader = torch.utils.data.DataLoader(
        Pairs(inputs["validation"], captions["validation"],
              epoch_pairs(captions["validation"], 0, cfg.seed, 0)), batch_size=cfg.batch_size)

    batches_run = 0  # in this process and this run: a resumed run does not redo epochs
    last_epoch, began, epochs_run = cfg.epochs, clock(), 0
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            break
        if epoch > last_epoch:
            acc.print(f"--time-limit {cfg.time_limit:g}: stopping after epoch {epoch - 1}",
                      flush=True)
            break
        started = time.time()
        acc.print(f"epoch {epoch} started", flush=True)
        pairs = epoch_pairs(captions["train"], cfg.captions_per_image, cfg.seed, epoch)
        loader = acc.prepare(torch.utils.data.DataLoader(
            Pairs(inputs["train"], captions["train"], pairs, truth,
                  indices=bool(cfg.self_critical)), batch_size=cfg.batch_size))
        objective.train()
        running, seen, rewards = 0.0, 0, []
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=not acc.is_main_process)
        for batch_inputs, batch_captions, *batch_truth in bar:
            with acc.accumulate(objective):
                loss, ce = objective(batch_inputs, batch_captions, *batch_truth)
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(objective.parameters(), cfg.grad_clip)
                optimizer.step()
                if acc.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            running += ce.item() * len(batch_captions)
            seen += len(batch_captions)
            batches_run += 1
            reward = acc.unwrap_model(objective).last_reward
            if reward is None:
                bar.set_postfix(loss=f"{running / seen:.3f}")
            else:
                rewards.append(reward)
                bar.set_postfix(loss=f"{running / seen:.3f}", reward=f"{np.mean(rewards):.3f}")
        running, seen = acc.reduce(torch.tensor([running, seen], device=acc.device)).tolist()
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(objective)
            model = unwrapped.model
            row = {"epoch": epoch, "train_loss": round(running / max(seen, 1), 4),
                   "val_loss": round(validation_loss(unwrapped, val_loader, acc.device), 4),
                   "lr": scheduler.get_last_lr()[0]}
            if rewards:  # this process's: the drawn captions' mean reward (self-critical)
                row["train_reward"] = round(float(np.mean(rewards)), 4)
            metrics = evaluate_split(model, splits["validation"], beam_size=1,
                                     max_len=cfg.max_len, features=None
                                     if cfg.fine_tune_encoder else inputs["validation"],
                                     full=False)
            row.update({k: v for k, v in metrics.items() if k != "examples"})
            row["seconds"] = round(time.time() - started, 1)
            score = selection_score(row)
            if score > state["best"]:
                state["best"], state["bad_epochs"], row["selected"] = score, 0, True
                model.save(out)
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            state["history"].append(row)
            save_checkpoint(checkpoint, model, optimizer, scheduler, state)
            write_log(out, state["history"])
            tqdm.write(json.dumps(row))
            epochs_run += 1
            if cfg.time_limit and epoch < last_epoch:  # the epochs that fit, and a schedule
                # that ends with them; once it has ended, it stays ended
                state["last_epoch"] = epochs_that_fit(cfg.time_limit * 60,
                                                      clock() - began, epochs_run,
                                                      epoch, cfg.epochs)
        acc.wait_for_everyone()
        state = broadcast_state(acc, state)
        if cfg.time_limit and state.get("last_epoch", last_epoch) != last_epoch:
            last_epoch = state["last_epoch"]
            scheduler.lr_lambdas = [lr_lambda(cfg.warmup_steps, steps_per_epoch * last_epoch)
                                    for _ in scheduler.lr_lambdas]

    acc.print(f"trained {batches_run} batches in this run", flush=True)
    if acc.is_main_process:
        history = state["history"]
        selected = max(history, key=selection_score)["epoch"] if history else None
        finish(cfg, out, dataset, state.get("command", command), history, selected)
    acc.wait_for_everyone()
    acc.end_training()
    return out


# Settings an --init-from model can be switched to: a soft model can start a hard run (its
# attention then proposes the cells that hard attention samples from), and any model a run
# whose query also sees the word just said or the last look, or whose cells also carry stage
# 1's features (the new weights start at zero, so the switched model starts where it was).
SWITCHABLE_SETTINGS = ("attention", "hard_readout", "word_query", "location_query",
                       "early_features")


def start_from(folder: str, config: CaptionerConfig) -> Captioner:
    """The saved model in `folder`, with its own vocabulary (more data can order the words
    differently; the saved ids must keep their meaning) and, if asked, the other kind of
    attention. Refused in one line if the saved vocabulary lacks words of this run's captions,
    or the architecture differs."""
    try:
        model = load_model(folder)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--init-from {folder}: {e}") from e
    saved, wanted = asdict(model.config), asdict(config)
    for added in ("word_query", "location_query", "early_features"):  # dropping one would
        wanted[added] |= saved[added]  # change the model: kept
    known = set(saved["vocab"])
    missing = [w for w in wanted["vocab"] if w not in known]
    if missing:
        raise SystemExit(f"--init-from {folder}: its vocabulary lacks {len(missing)} word(s) of "
                         f"this run's captions: {', '.join(missing[:8])}"
                         f"{', ...' if len(missing) > 8 else ''}")
    differ = [k for k in wanted
              if k not in ("vocab", *SWITCHABLE_SETTINGS) and saved[k] != wanted[k]]
    if differ:
        raise SystemExit(f"--init-from {folder}: " + ", ".join(
            f"{k} is {saved[k]!r} there, {wanted[k]!r} here" for k in differ))
    if all(saved[k] == wanted[k] for k in SWITCHABLE_SETTINGS):
        return model
    switched = Captioner(replace(model.config, **{k: wanted[k] for k in SWITCHABLE_SETTINGS}))
    grow_into(switched, model.state_dict())  # all but a hard model's reward baseline (fresh: 0)
    return switched


def broadcast_state(acc: Accelerator, state: dict) -> dict:
    """Every process follows the main process's early-stopping decision."""
    if acc.num_processes == 1:
        return state
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([state])[0]


def interrupted(cfg: TrainConfig, args: list[str]) -> str:
    """What Ctrl-C leaves behind, and the exact command that carries on from it."""
    checkpoint = Path(cfg.output_dir) / CHECKPOINT
    if not checkpoint.is_file():
        again = args if "--overwrite" in args else [*args, "--overwrite"]
        return ("interrupted before the first epoch ended: nothing to resume. Start again "
                f"with: python train_space.py {shlex.join(again)}")
    from safetensors import safe_open

    with safe_open(checkpoint, "pt") as f:
        epoch = json.loads(f.metadata()["json"])["state"]["epoch"]
    again = [a for a in args if a not in ("--overwrite", "--resume")] + ["--resume"]
    return (f"interrupted: the last checkpoint (epoch {epoch}) is {checkpoint}; continue with: "
            f"python train_space.py {shlex.join(again)}")


def ignore_half_built_bars(unraisable) -> None:
    """Ctrl-C can land inside tqdm's constructor; the half-built bar's `__del__` then fails at
    exit and Python prints "Exception ignored ... Traceback" under our one-line message. Drop
    exactly that report and pass every other one on."""
    if not (getattr(unraisable.object, "__module__", None) or "").startswith("tqdm"):
        sys.__unraisablehook__(unraisable)


def main(argv=None) -> None:
    cfg = parse_args(argv)
    args = list(sys.argv[1:] if argv is None else argv)
    if cfg.push_to_hub:
        check_push_target(cfg.push_to_hub)  # before hours of training, not after
    try:
        train(cfg, "python train_space.py " + shlex.join(args))
    except (DatasetFormatError, DatasetLoadError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from e
    except KeyboardInterrupt:
        sys.unraisablehook = ignore_half_built_bars
        if int(os.environ.get("RANK", "0")) == 0:  # one line, not one per process
            print(interrupted(cfg, args), file=sys.stderr)
        raise SystemExit(130) from None
