"""Attention pictures: one word's map as a heatmap over the image, and a grid of all words.

`upsample_attention` is also what the pointing game scores, so what you see is what is measured.
Overlays are pure numpy (a caption needs ~20 of them); matplotlib is only used for the grid figure.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402


@lru_cache(maxsize=64)
def _interpolation_matrix(size: int, centres: tuple[float, ...]) -> np.ndarray:
    """(size, n) weights that linearly interpolate n cell values, known at `centres` (fractions
    of the side), onto `size` pixel centres; constant beyond the outermost cells."""
    pixels = (np.arange(size) + 0.5) / size
    eye = np.eye(len(centres))
    return np.stack([np.interp(pixels, centres, eye[k]) for k in range(len(centres))], axis=1)


def upsample_attention(attention: np.ndarray, width: int, height: int,
                       centres: np.ndarray | None = None) -> np.ndarray:
    """(n, n) map -> (height, width) smooth map, each cell's value placed at its true centre."""
    n = attention.shape[0]
    if centres is None:
        centres = (np.arange(n) + 0.5) / n
    key = tuple(float(c) for c in centres)
    rows, cols = _interpolation_matrix(height, key), _interpolation_matrix(width, key)
    return _small_matmul(rows @ attention.astype(np.float64), cols.T)


_SINGLE_THREAD_MNK = 200_000  # OpenBLAS runs a GEMM on one thread below 4 * 65536 M*N*K


def _small_matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """left @ right, in blocks of rows small enough for BLAS to keep each on one thread.

    A 512 x 7 x 512 product takes 0.1 ms on one thread, but up to 8 ms when OpenBLAS wakes
    its threads while torch's (or another request's) threads still hold the cores, as they do
    right after decoding. Each output row is computed exactly as in one big product."""
    out = np.empty((left.shape[0], right.shape[1]), dtype=np.result_type(left, right))
    step = max(1, _SINGLE_THREAD_MNK // max(1, left.shape[1] * right.shape[1]))
    for start in range(0, left.shape[0], step):
        np.matmul(left[start:start + step], right, out=out[start:start + step])
    return out


@lru_cache(maxsize=4)
def _colormap(name: str) -> np.ndarray:
    return (plt.get_cmap(name)(np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def _overlay(rgb: np.ndarray, attention: np.ndarray, centres, alpha: float,
             cmap: str) -> Image.Image:
    """attention_overlay on an image already turned into a float32 (H, W, 3) array.

    The heat map and the colour index are computed in float64 exactly as before; the blend,
    over 3 values per pixel, runs in float32 with in-place operations (about 3x faster; it can
    differ from a float64 blend by one level in a few pixels in a million)."""
    height, width = rgb.shape[:2]
    heat = upsample_attention(attention, width, height, centres)
    peak = heat.max()
    if peak > 0:
        heat /= peak
    index = (heat * 255).astype(np.uint8)
    weight = np.sqrt(heat.astype(np.float32))
    weight *= alpha
    weight += 0.15  # keep the image visible where attention is low
    weight = weight[..., None]
    colours = np.take(_colormap(cmap), index, axis=0)
    colours *= weight
    blended = rgb * (1 - weight)
    blended += colours
    np.clip(blended, 0, 255, out=blended)
    return Image.fromarray(blended.astype(np.uint8))


def attention_overlay(image: Image.Image, attention: np.ndarray, centres=None, *,
                      alpha: float = 0.55, cmap: str = "jet") -> Image.Image:
    """Blend one word's attention, as a heatmap scaled to its own peak, over the image."""
    return _overlay(_rgb(image), attention, centres, alpha, cmap)


def attention_overlays(image: Image.Image, attention: np.ndarray, centres=None, *,
                       alpha: float = 0.55, cmap: str = "jet",
                       workers: int | None = None) -> list[Image.Image]:
    """`attention_overlay` for every map of `attention` (T, n, n), the same pictures: the image
    is converted once and the maps are drawn on `workers` threads (numpy releases the GIL;
    default: one per core, at most 4)."""
    rgb = _rgb(image)
    workers = workers or min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                             else os.cpu_count() or 1)
    if workers <= 1 or len(attention) <= 1:
        return [_overlay(rgb, a, centres, alpha, cmap) for a in attention]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda a: _overlay(rgb, a, centres, alpha, cmap), attention))


def attention_grid(image: Image.Image, tokens: list[str], attention: np.ndarray, centres=None,
                   *, columns: int = 5, title: str | None = None) -> Figure:
    """The image plus one overlay per word, titled with the word."""
    panels = [("(image)", image)] + [
        (word, attention_overlay(image, attention[i], centres)) for i, word in enumerate(tokens)
    ]
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(2.6 * columns, 2.8 * rows + (0.4 if title else 0)))
    for i, (word, picture) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(picture)
        ax.set_title(word, fontsize=13)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=14)
    fig.tight_layout()
    return fig


def save_attention_grid(path, image, tokens, attention, centres=None, title=None) -> None:
    fig = attention_grid(image, tokens, attention, centres, title=title)
    fig.savefig(path, dpi=80)
