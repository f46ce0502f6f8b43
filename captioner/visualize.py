"""Attention pictures: one word's map over the image (dimmed where attention is low), and a
grid of all words.

`upsample_attention` is also what the pointing game scores, so what you see is what is measured.
Overlays are numpy and Pillow (a caption needs ~20 of them); matplotlib is only used for the grid
figure.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache

import numpy as np
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


# The original paper's style: the picture dimmed where a word's attention is low and bright
# where it peaks. Every pixel is only scaled (never tinted), so each object keeps its own hue
# at every word: a green circle stays green whatever the attention does.
OVERLAY_FLOOR = 0.3  # brightness kept where the attention is zero (the picture stays readable)


def overlay_weight(heat: np.ndarray) -> np.ndarray:
    """Heat in [0, 1] -> brightness in 0-255 levels: FLOOR + (1 - FLOOR) * sqrt(heat), rounded
    (sqrt: half the peak is already 70 % bright, so a spread-out map still shows its shape).
    The browser (web/explorer.js `blend`) computes the same levels."""
    weight = np.sqrt(heat.astype(np.float32))
    weight *= (1 - OVERLAY_FLOOR) * 255
    weight += OVERLAY_FLOOR * 255 + 0.5  # + 0.5: round to the nearest level
    return np.clip(weight, 0, 255).astype(np.uint8)


def attention_overlay(image: Image.Image, attention: np.ndarray, centres=None) -> Image.Image:
    """One word's attention over the image: the picture dimmed where the attention (scaled to
    its own peak) is low.

    The heat map is computed in float64 (as the pointing game scores it); the dimming is done by
    Pillow in C on 8-bit values (each channel times the brightness level / 255, rounded)."""
    rgb = image.convert("RGB")
    heat = upsample_attention(attention, rgb.width, rgb.height, centres)
    peak = heat.max()
    if peak > 0:
        heat /= peak
    mask = Image.fromarray(overlay_weight(heat))
    return Image.composite(rgb, Image.new("RGB", rgb.size), mask)


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
