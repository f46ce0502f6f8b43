"""Encode once, train many times: per-split arrays cached on disk and memory-mapped.

With a frozen encoder the decoder trains on cached encoder features; when the encoder is trained
too, the cache holds the resized pixels instead (decoding JPEGs every step costs more than the
small encoders we fine-tune). Either way host memory stays flat as the dataset grows: arrays are
read from disk page by page, never loaded whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from captioner.preprocess import to_rgb


def cache_key(**parts) -> str:
    """A short stable hash of everything that determines the cached values."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def state_fingerprint(module: torch.nn.Module) -> str:
    """Hash of a module's weights, so a cache built with other encoder weights is not reused."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cached_array(path: Path, split, encode: Callable[[list], np.ndarray], *,
                 batch_size: int = 64, desc: str = "caching", rank: int = 0, world: int = 1,
                 barrier: Callable[[], None] = lambda: None) -> np.ndarray:
    """`encode(images)` for every image of `split`, stored at `path` and memory-mapped.

    A complete file is reused. A new one is written under a temporary name and renamed when
    full, so an interrupted run never leaves a half-written cache. With several processes
    (`rank` of `world`, `barrier` from the launcher) each encodes its own rows of one shared
    file and only rank 0 creates and renames it.
    """
    path = Path(path)
    if not path.is_file():
        tmp = path.with_name(path.stem + ".partial.npy")
        if rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            first = encode([to_rgb(split[0]["image"])])
            np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype,
                                      shape=(len(split), *first.shape[1:])).flush()
        barrier()
        out = np.load(tmp, mmap_mode="r+")
        starts = range(rank * batch_size, len(split), batch_size * world)
        for start in tqdm(starts, desc=desc, disable=rank != 0):
            stop = min(start + batch_size, len(split))
            out[start:stop] = encode([to_rgb(im) for im in split[start:stop]["image"]])
        out.flush()
        del out
        barrier()
        if rank == 0:
            os.replace(tmp, path)
        barrier()
    return np.load(path, mmap_mode="r")
