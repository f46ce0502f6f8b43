"""Encode once, train many times: per-split arrays cached on disk, read back row by row.

With a frozen encoder the decoder trains on cached encoder features; when the encoder is trained
too, the cache holds the resized pixels instead (decoding JPEGs every step costs more than the
small encoders we fine-tune). Either way host memory stays flat as the dataset grows: rows are
read from disk when a batch needs them, never loaded whole.
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
                 barrier: Callable[[], None] = lambda: None) -> CachedRows:
    """`encode(images)` for every image of `split`, stored at `path` and read back row by row.

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
    return CachedRows(path)


class CachedRows:
    """Rows of a cached .npy, read on demand with os.pread.

    A memory map would do too, but every page an epoch touches then counts in the process's
    resident memory until the kernel evicts it, so RSS would grow with the dataset; rows read
    with pread go through the page cache and leave the process's memory flat."""

    def __init__(self, path: Path):
        header = np.load(path, mmap_mode="r")
        self.path, self.shape, self.dtype = Path(path), header.shape, header.dtype
        self.offset = header.offset
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        del header
        self.fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("only contiguous row ranges are supported")
        else:
            start = int(index) + (len(self) if int(index) < 0 else 0)
            if not 0 <= start < len(self):
                raise IndexError(index)
            stop = start + 1
        count = max(0, stop - start)
        data = os.pread(self.fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        rows = np.frombuffer(data, self.dtype).reshape(count, *self.shape[1:]).copy()
        return rows if isinstance(index, slice) else rows[0]

    def __del__(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
