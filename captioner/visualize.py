"""Attention pictures: one word's map as a heatmap over the image, and a grid of all words.

`upsample_attention` is also what the pointing game scores, so what you see is what is measured.
Overlays are numpy and Pillow (a caption needs ~20 of them); matplotlib is only used for the grid
figure.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure  # a bare Figure: no pyplot, no global backend switch
from PIL import Image


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
    right after decoding. The result matches the single product to within an ulp (1e-17)."""
    out = np.empty((left.shape[0], right.shape[1]), dtype=np.result_type(left, right))
    step = max(1, _SINGLE_THREAD_MNK // max(1, left.shape[1] * right.shape[1]))
    for start in range(0, left.shape[0], step):
        np.matmul(left[start:start + step], right, out=out[start:start + step])
    return out


HEATMAP_COLORMAP = "jet"
OVERLAY_ALPHA = 0.55  # weight of the heat colour where a word's attention peaks ...
OVERLAY_FLOOR = 0.15  # ... and where it is zero, so the image stays visible under the colour


@lru_cache(maxsize=4)
def _colormap(name: str) -> np.ndarray:
    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)


@lru_cache(maxsize=4)
def _palette(name: str) -> bytes:
    """The colormap as a PIL palette: 256 RGB triples."""
    return _colormap(name).round().astype(np.uint8).tobytes()


def colormap_table(name: str = HEATMAP_COLORMAP) -> list[list[int]]:
    """The colour map as 256 [r, g, b] rows: the browser paints heatmaps with exactly these."""
    return np.frombuffer(_palette(name), dtype=np.uint8).reshape(256, 3).tolist()


def attention_overlay(image: Image.Image, attention: np.ndarray, centres=None, *,
                      alpha: float = OVERLAY_ALPHA, cmap: str = HEATMAP_COLORMAP) -> Image.Image:
    """Blend one word's attention, as a heatmap scaled to its own peak, over the image.

    The heat map is computed in float64 (as the pointing game scores it); colouring and
    blending are done by Pillow in C on 8-bit values: 5x faster than blending 3 floats per
    pixel in numpy, and within 2 levels of that (half a level on average: Pillow rounds)."""
    rgb = image.convert("RGB")
    heat = upsample_attention(attention, rgb.width, rgb.height, centres)
    peak = heat.max()
    if peak > 0:
        heat /= peak
    colours = Image.fromarray((heat * 255).astype(np.uint8))
    colours.putpalette(_palette(cmap))
    # weight of the heat colour: keep the image visible where attention is low
    weight = np.sqrt(heat.astype(np.float32))
    weight *= alpha * 255
    weight += OVERLAY_FLOOR * 255 + 0.5  # + 0.5: round to the nearest level
    mask = Image.fromarray(np.clip(weight, 0, 255).astype(np.uint8))
    return Image.composite(colours.convert("RGB"), rgb, mask)


def attention_grid(image: Image.Image, tokens: list[str], attention: np.ndarray, centres=None,
                   *, columns: int = 5, title: str | None = None) -> Figure:
    """The image plus one overlay per word, titled with the word. A `title` (wrapped to the
    figure's width) gets its own band: constrained layout keeps it off the panel labels."""
    panels = [("(image)", image)] + [
        (word, attention_overlay(image, attention[i], centres)) for i, word in enumerate(tokens)
    ]
    rows = -(-len(panels) // columns)
    lines = textwrap.wrap(title, width=12 * columns) if title else []
    fig = Figure(figsize=(2.6 * columns, 2.8 * rows + 0.35 * len(lines)), layout="constrained")
    for i, (word, picture) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(picture)
        ax.set_title(word, fontsize=13)
        ax.axis("off")
    if lines:
        fig.suptitle("\n".join(lines), fontsize=14)
        fig.get_layout_engine().set(h_pad=0.1)  # inches: a clear gap under the title
    return fig


def save_attention_grid(path, image, tokens, attention, centres=None, title=None) -> None:
    fig = attention_grid(image, tokens, attention, centres, title=title)
    fig.savefig(path, dpi=80)
