"""Writing a scene world to disk as an imagefolder dataset (train/validation/test)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from captioner.scenes.worlds import V1, get_world

FORMAT_VERSION = 1
SPLIT_IDS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
HELD_OUT_OFFSET = 3  # held-out (compositional) scenes draw from their own generators


def scene_rng(seed: int, split: str, index: int, *, held_out: bool = False
              ) -> np.random.Generator:
    """The generator for one image: independent per (seed, split, index), so splits never
    share images and the first N images of a split don't depend on the split's length.
    Held-out (compositional) scenes have generators of their own."""
    split_id = SPLIT_IDS[split] + (HELD_OUT_OFFSET if held_out else 0)
    return np.random.default_rng([seed, split_id, index])


def _is_complete(out_dir: Path, params: dict) -> bool:
    try:
        if json.loads((out_dir / "scenes.json").read_text()) != params:
            return False
        for split in SPLIT_IDS:
            with open(out_dir / split / "metadata.jsonl", encoding="utf-8") as f:
                if sum(1 for _ in f) != params[f"num_{split}"]:
                    return False
    except (OSError, ValueError):
        return False
    return True


def _write_split(split_dir: Path, split: str, count: int, params: dict, progress: bool) -> None:
    split_dir.mkdir(parents=True)
    world = get_world(params.get("world", V1.name))
    held_out = params.get("held_out", False)
    width = max(5, len(str(count - 1)))
    indices = range(count)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"{world.name}/{split}", unit="img")
    with open(split_dir / "metadata.jsonl", "w", encoding="utf-8") as meta:
        for i in indices:
            rng = scene_rng(params["seed"], split, i, held_out=held_out)
            if held_out:
                scene = world.render_scene(rng, params["image_size"], held_out=True)
            else:
                scene = world.render_scene(rng, params["image_size"])
            name = f"{i:0{width}d}.png"
            scene.image.save(split_dir / name, format="PNG")
            record = {
                "file_name": name,
                "captions": scene.captions,
                "objects": [o.to_dict() for o in scene.objects],
            }
            meta.write(json.dumps(record) + "\n")


def generate_scenes(
    out_dir: str | Path,
    *,
    num_train: int = 10000,
    num_validation: int = 500,
    num_test: int = 1000,
    image_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    world: str = "scenes-v1",
    held_out: bool = False,
) -> Path:
    """Write a scenes dataset of `world` in imagefolder layout (``train/``, ``validation/``,
    ``test/``, each with PNGs and ``metadata.jsonl``) and return its path. `image_size`
    defaults to the world's own. `held_out`: every split holds compositional scenes (each
    shows a held-out colour-shape pair; an evaluation set, never for training).

    Same arguments give byte-identical files. An existing complete dataset with the same
    parameters (recorded in ``scenes.json``) is reused. The data is written to a temporary
    folder next to ``out_dir`` and renamed into place, so an interrupted run leaves no half
    dataset behind. An existing ``out_dir`` is only replaced if it is empty or was written here.
    """
    spec = get_world(world)
    if held_out and not spec.held_out_pairs:
        raise ValueError(f"{spec.name} has no held-out pairs")
    out_dir = Path(out_dir).expanduser().absolute()
    params = {
        "generator": "captioner.scenes",
        "format_version": FORMAT_VERSION,
        "image_size": image_size or spec.image_size,
        "seed": seed,
        "num_train": num_train,
        "num_validation": num_validation,
        "num_test": num_test,
    }
    if spec is not V1:  # scenes-v1 datasets keep the parameters they were written with
        params |= {"world": spec.name, "held_out": held_out}
    if _is_complete(out_dir, params):
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "scenes.json").exists():
        raise FileExistsError(
            f"{out_dir} exists and is not a scenes dataset; refusing to overwrite it"
        )
    for split in SPLIT_IDS:
        if params[f"num_{split}"] < 1:
            raise ValueError(f"num_{split} must be at least 1")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{time.time_ns()}"
    try:
        tmp.mkdir()
        for split in SPLIT_IDS:
            _write_split(tmp / split, split, params[f"num_{split}"], params, progress)
        (tmp / "scenes.json").write_text(json.dumps(params, indent=2) + "\n")
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.time_ns()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
