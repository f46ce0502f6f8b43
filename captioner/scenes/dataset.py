"""Writing a scene world to disk as an imagefolder dataset (train/validation/test)."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from captioner.scenes.worlds import V1, get_world

FORMAT_VERSION = 1
SPLIT_IDS: dict[str, int] = {"train": 0, "validation": 1, "test": 2}
HELD_OUT_OFFSET = 3  # held-out (compositional) scenes draw from their own generators
CHUNK = 250  # images drawn per task when a process pool draws a split


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


def _render_chunk(split_dir: Path, split: str, start: int, stop: int, width: int,
                  params: dict) -> list[str]:
    """Render and save images start..stop-1 of a split; return their metadata lines in order.
    Every image has its own generator (`scene_rng`), so chunks can be drawn in any process."""
    world = get_world(params.get("world", V1.name))
    held_out = params.get("held_out", False)
    lines = []
    for i in range(start, stop):
        rng = scene_rng(params["seed"], split, i, held_out=held_out)
        if held_out:
            scene = world.render_scene(rng, params["image_size"], held_out=True)
        else:
            scene = world.render_scene(rng, params["image_size"])
        name = f"{i:0{width}d}.png"
        scene.image.save(split_dir / name, format="PNG")
        lines.append(json.dumps({
            "file_name": name,
            "captions": scene.captions,
            "objects": [o.to_dict() for o in scene.objects],
        }) + "\n")
    return lines


def _write_split(split_dir: Path, split: str, count: int, params: dict, progress: bool,
                 workers: int) -> None:
    split_dir.mkdir(parents=True)
    width = max(5, len(str(count - 1)))
    chunks = [(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        name = params.get("world", V1.name)
        bar = tqdm(total=count, desc=f"{name}/{split}", unit="img")
    with open(split_dir / "metadata.jsonl", "w", encoding="utf-8") as meta:
        if workers <= 1 or len(chunks) == 1 or not _spawn_works():
            results = (_render_chunk(split_dir, split, a, b, width, params) for a, b in chunks)
            for lines in results:
                meta.writelines(lines)
                if bar is not None:
                    bar.update(len(lines))
        else:  # spawn: safe beside the threads torch and CUDA may already have started
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context) as pool:
                futures = [pool.submit(_render_chunk, split_dir, split, a, b, width, params)
                           for a, b in chunks]
                for future in futures:  # in order: metadata.jsonl is the same either way
                    lines = future.result()
                    meta.writelines(lines)
                    if bar is not None:
                        bar.update(len(lines))
    if bar is not None:
        bar.close()


def _spawn_works() -> bool:
    """Spawned workers re-import the main script; a script read from stdin (`python -`) has
    no file to re-import, so such a caller draws in its own process."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.exists(path)


def default_workers(total: int) -> int:
    """Processes for drawing `total` images: one per core, but no pool for small datasets
    (starting one costs more than it saves below a few thousand images)."""
    return max(1, min(os.cpu_count() or 1, total // 2000))


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
    workers: int | None = None,
) -> Path:
    """Write a scenes dataset of `world` in imagefolder layout (``train/``, ``validation/``,
    ``test/``, each with PNGs and ``metadata.jsonl``) and return its path. `image_size`
    defaults to the world's own. `held_out`: every split holds compositional scenes (each
    shows a held-out colour-shape pair; an evaluation set, never for training).

    Same arguments give byte-identical files. An existing complete dataset with the same
    parameters (recorded in ``scenes.json``) is reused. The data is written to a temporary
    folder next to ``out_dir`` and renamed into place, so an interrupted run leaves no half
    dataset behind. An existing ``out_dir`` is only replaced if it is empty or was written here.
    `workers` processes draw the images (default: one per core for large datasets); the files
    are the same for any number.
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
        if workers is None:
            workers = default_workers(num_train + num_validation + num_test)
        for split in SPLIT_IDS:
            _write_split(tmp / split, split, params[f"num_{split}"], params, progress, workers)
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
